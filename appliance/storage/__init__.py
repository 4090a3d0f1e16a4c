"""Storages: several folders for received files, their free-space limits, and moving one (see storages.py)."""

from appliance.storage.storages import MARKER, Storage, Storages, check_temp_dir, join, split

__all__ = ["MARKER", "Storage", "Storages", "check_temp_dir", "join", "split"]
