"""Fixtures shared by the appliance tests."""

from forwarding_support import appliance  # noqa: F401 - the forwarding tests' node
