"""Forwarding to a regional PACS: the persisted queue, the worker and its Storage Commitment bookkeeping."""
