"""The HL7 message log: every message received and the ACK sent, for the staff UI's log view.

Messages are kept as received (bytes, in their own character set) with the ACK
text, the ACK code and the error, for ``[hl7] log_retention_days`` days; older
entries are deleted as new ones arrive (at most once a minute).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from appliance.db import HL7_MESSAGES, Database

LOGGER = logging.getLogger(__name__)

_PURGE_INTERVAL = 60.0


@dataclass(frozen=True)
class LoggedMessage:
    """One message of the log."""

    id: int
    received: str
    peer: str
    message_type: str
    control_id: str
    ack_code: str
    error: str
    message: bytes
    ack: str


class MessageLog:
    """The HL7 message log with a retention limit.

    Parameters
    ----------
    db : Database
        The appliance database (holds ``hl7_messages``).
    retention_days : int
        Days an entry is kept; 0 keeps nothing.
    """

    def __init__(self, db: Database, retention_days: int = 30) -> None:
        self.db = db
        self.retention_days = retention_days
        self._last_purge = 0.0
        self._lock = threading.Lock()

    def record(self, peer: str, message_type: str, control_id: str, ack_code: str, error: str, message: bytes,
               ack: str) -> None:
        """Keep one message and its ACK (nothing when retention is 0)."""
        if self.retention_days <= 0:
            return
        with self.db.transaction() as conn:
            conn.execute(f"INSERT INTO {HL7_MESSAGES} (received, peer, message_type, control_id, ack_code, error,"
                         " message, ack) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (datetime.now().isoformat(timespec="milliseconds"), peer, message_type, control_id,
                          ack_code, error, message, ack))
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
            n = conn.execute(f"DELETE FROM {HL7_MESSAGES} WHERE received < ?",
                             (limit.isoformat(timespec="milliseconds"),)).rowcount
        if n:
            LOGGER.info("HL7 message log: %d message(s) older than %d days deleted", n, self.retention_days)
        return n

    def recent(self, limit: int = 100, ack_code: str | None = None) -> list[LoggedMessage]:
        """The newest entries first, optionally only those answered with ``ack_code`` (AA, AE, AR)."""
        sql = f"SELECT * FROM {HL7_MESSAGES}"
        params: list[object] = []
        if ack_code:
            sql += " WHERE ack_code = ?"
            params.append(ack_code)
        sql += f" ORDER BY id DESC LIMIT {int(limit)}"
        return [LoggedMessage(r["id"], r["received"], r["peer"], r["message_type"], r["control_id"], r["ack_code"],
                              r["error"], bytes(r["message"]), r["ack"]) for r in self.db.conn.execute(sql, params)]
