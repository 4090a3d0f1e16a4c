"""Upkeep of the stored images: weekly windows, persisted resumable tasks, archiving (compression), deletion."""
