"""The AMQP message log: every message published and every message taken from the input queue.

Like the HL7 message log (:mod:`appliance.worklist.hl7log`): kept for
``[amqp] log_retention_days`` days, older entries deleted as new ones arrive (at most
once a minute); shown on the staff settings page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from appliance.db import AMQP_MESSAGES, Database

LOGGER = logging.getLogger(__name__)

_PURGE_INTERVAL = 60.0
#: Bodies longer than this are cut in the log (an oversized input message is not kept whole).
MAX_LOGGED_BYTES = 64 * 1024

INSERT_SQL = (f"INSERT INTO {AMQP_MESSAGES} (time, direction, address, message_id, outcome, error, body)"
              " VALUES (?, ?, ?, ?, ?, ?, ?)")


@dataclass(frozen=True)
class LoggedAmqpMessage:
    """One entry of the log."""

    id: int
    time: str
    direction: str
    address: str
    message_id: str
    outcome: str
    error: str
    body: bytes


def now_text() -> str:
    """Local time as the log keeps it."""
    return datetime.now().isoformat(timespec="milliseconds")


class AmqpLog:
    """The message log with a retention limit.

    Parameters
    ----------
    db : Database
        The appliance database.
    retention_days : int
        Days an entry is kept; 0 keeps nothing.
    """

    def __init__(self, db: Database, retention_days: int = 30) -> None:
        self.db = db
        self.retention_days = retention_days
        self._last_purge = 0.0
        self._lock = threading.Lock()

    def rows(self, direction: str, address: str, message_id: str, outcome: str, error: str,
             body: bytes) -> list[tuple[str, tuple[object, ...]]]:
        """The statement that logs one message, for a caller's transaction ([] when retention is 0)."""
        if self.retention_days <= 0:
            return []
        return [(INSERT_SQL, (now_text(), direction, address, message_id, outcome, error,
                              body[:MAX_LOGGED_BYTES]))]

    def record(self, direction: str, address: str, message_id: str, outcome: str, error: str, body: bytes) -> None:
        """Keep one message in a transaction of its own."""
        self.write(self.rows(direction, address, message_id, outcome, error, body))

    def write(self, statements: Iterable[tuple[str, tuple[object, ...]]]) -> None:
        """Run logging statements in one transaction, then purge old entries when due."""
        statements = list(statements)
        if statements:
            with self.db.transaction() as conn:
                for sql, params in statements:
                    conn.execute(sql, params)
        self.purge_if_due()

    def purge_if_due(self) -> None:
        """Purge at most once a minute."""
        if self.retention_days <= 0:
            return
        with self._lock:
            due = time.monotonic() - self._last_purge > _PURGE_INTERVAL
            if due:
                self._last_purge = time.monotonic()
        if due:
            self.purge()

    def purge(self, now: datetime | None = None) -> int:
        """Delete entries older than the retention limit; return how many."""
        limit = (now or datetime.now()) - timedelta(days=self.retention_days)
        with self.db.transaction() as conn:
            n = conn.execute(f"DELETE FROM {AMQP_MESSAGES} WHERE time < ?",
                             (limit.isoformat(timespec="milliseconds"),)).rowcount
        if n:
            LOGGER.info("AMQP message log: %d message(s) older than %d days deleted", n, self.retention_days)
        return n

    def recent(self, limit: int = 100, direction: str | None = None) -> list[LoggedAmqpMessage]:
        """The newest entries first, optionally only ``in`` or ``out``."""
        sql = f"SELECT * FROM {AMQP_MESSAGES}"
        params: list[object] = []
        if direction:
            sql += " WHERE direction = ?"
            params.append(direction)
        sql += f" ORDER BY id DESC LIMIT {int(limit)}"
        return [LoggedAmqpMessage(r["id"], r["time"], r["direction"], r["address"], r["message_id"], r["outcome"],
                                  r["error"], bytes(r["body"])) for r in self.db.conn.execute(sql, params)]
