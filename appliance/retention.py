"""Log tables with a retention limit (the HL7 and the AMQP message logs): old rows go as new ones arrive."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from datetime import datetime, timedelta

from appliance.db import Database

LOGGER = logging.getLogger(__name__)

#: Old rows are looked for at most this often (seconds).
PURGE_INTERVAL = 60.0


class RetainedLog:
    """A table of log rows kept for ``retention_days`` days (0 keeps nothing).

    Subclasses name the table, its time column (ISO local time, as :func:`now_text` writes it) and the
    log's name for the purge line.

    Parameters
    ----------
    db : Database
        The appliance database.
    retention_days : int
        Days an entry is kept.
    """

    table = ""
    time_column = "time"
    label = "message log"

    def __init__(self, db: Database, retention_days: int = 30) -> None:
        self.db = db
        self.retention_days = retention_days
        self._last_purge = 0.0
        self._lock = threading.Lock()

    def purge_if_due(self) -> None:
        """Purge at most once every :data:`PURGE_INTERVAL` seconds."""
        if self.retention_days <= 0:
            return
        with self._lock:
            due = time.monotonic() - self._last_purge > PURGE_INTERVAL
            if due:
                self._last_purge = time.monotonic()
        if due:
            self.purge()

    def purge(self, now: datetime | None = None) -> int:
        """Delete entries older than the retention limit; return how many."""
        limit = (now or datetime.now()) - timedelta(days=self.retention_days)
        with self.db.transaction() as conn:
            n = conn.execute(
                f"DELETE FROM {self.table} WHERE {self.time_column} < ?", (limit.isoformat(timespec="milliseconds"),)
            ).rowcount
        if n:
            LOGGER.info("%s: %d message(s) older than %d days deleted", self.label, n, self.retention_days)
        return n

    def newest(self, limit: int, column: str = "", value: str | None = None) -> list[sqlite3.Row]:
        """The newest rows first, optionally only those whose ``column`` equals ``value``."""
        sql = f"SELECT * FROM {self.table}"
        params: list[object] = []
        if value:
            sql += f" WHERE {column} = ?"
            params.append(value)
        sql += f" ORDER BY id DESC LIMIT {int(limit)}"
        return list(self.db.conn.execute(sql, params))


def now_text() -> str:
    """Local time as the logs keep it."""
    return datetime.now().isoformat(timespec="milliseconds")
