"""The AMQP message log: every message published and every message taken from the input queue.

Like the HL7 message log (:mod:`appliance.worklist.hl7log`): kept for
``[amqp] log_retention_days`` days, older entries deleted as new ones arrive (at most
once a minute); shown on the staff settings page.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from appliance.db import AMQP_MESSAGES
from appliance.retention import RetainedLog, now_text

LOGGER = logging.getLogger(__name__)

#: Bodies longer than this are cut in the log (an oversized input message is not kept whole).
MAX_LOGGED_BYTES = 64 * 1024

INSERT_SQL = (
    f"INSERT INTO {AMQP_MESSAGES} (time, direction, address, message_id, outcome, error, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


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


class AmqpLog(RetainedLog):
    """The message log with a retention limit.

    Parameters
    ----------
    db : Database
        The appliance database.
    retention_days : int
        Days an entry is kept; 0 keeps nothing.
    """

    table = AMQP_MESSAGES
    time_column = "time"
    label = "AMQP message log"

    def rows(
        self, direction: str, address: str, message_id: str, outcome: str, error: str, body: bytes
    ) -> list[tuple[str, tuple[object, ...]]]:
        """The statement that logs one message, for a caller's transaction ([] when retention is 0)."""
        if self.retention_days <= 0:
            return []
        return [(INSERT_SQL, (now_text(), direction, address, message_id, outcome, error, body[:MAX_LOGGED_BYTES]))]

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

    def recent(self, limit: int = 100, direction: str | None = None) -> list[LoggedAmqpMessage]:
        """The newest entries first, optionally only ``in`` or ``out``."""
        return [
            LoggedAmqpMessage(
                r["id"],
                r["time"],
                r["direction"],
                r["address"],
                r["message_id"],
                r["outcome"],
                r["error"],
                bytes(r["body"]),
            )
            for r in self.newest(limit, "direction", direction)
        ]
