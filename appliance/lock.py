"""The data folder's lock: one ``appliance serve`` per data folder.

A second instance on the same folder would reconcile and empty ``store/tmp`` under the running one (files it is
writing). The lock is taken before anything in the folder is touched; the lock file names the holder's PID and
start time, so the second instance can say who holds it. The kernel releases the lock when the holder's process
ends, however it ends (no stale lock after a crash or SIGKILL).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from pathlib import Path
from typing import IO

from appliance.errors import DataFolderInUse

LOCK_NAME = "appliance.lock"


class DataFolderLock:
    """An exclusive lock on a data folder, held until :meth:`release` or the process ends.

    Parameters
    ----------
    data_dir : Path
        The ``[appliance] data_dir``.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self, what: str = "appliance serve") -> None:
        """Take the lock or raise :class:`~appliance.errors.DataFolderInUse` naming the holder.

        Raises
        ------
        DataFolderInUse
            When another process holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115  # held for the process's life
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DataFolderInUse(
                f"the data folder {self.path.parent} is in use by {holder}; stop it first "
                f"(or give this {what} another [appliance] data_dir)"
            ) from None
        started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        handle.seek(0)
        handle.truncate()
        handle.write(f"{what} (PID {os.getpid()}, started {started})\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Give the lock back (the file stays; its content is only informative)."""
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
