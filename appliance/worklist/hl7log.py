"""The HL7 message log: every message received and the ACK sent, for the staff UI's log view.

Messages are kept as received (bytes, in their own character set) with the ACK
text, the ACK code and the error, for ``[hl7] log_retention_days`` days; older
entries are deleted as new ones arrive (at most once a minute).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from appliance.db import HL7_MESSAGES
from appliance.retention import RetainedLog, now_text

LOGGER = logging.getLogger(__name__)


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


class MessageLog(RetainedLog):
    """The HL7 message log with a retention limit.

    Parameters
    ----------
    db : Database
        The appliance database (holds ``hl7_messages``).
    retention_days : int
        Days an entry is kept; 0 keeps nothing.
    """

    table = HL7_MESSAGES
    time_column = "received"
    label = "HL7 message log"

    def record(
        self, peer: str, message_type: str, control_id: str, ack_code: str, error: str, message: bytes, ack: str
    ) -> None:
        """Keep one message and its ACK (nothing when retention is 0)."""
        if self.retention_days <= 0:
            return
        with self.db.transaction() as conn:
            conn.execute(
                f"INSERT INTO {HL7_MESSAGES} (received, peer, message_type, control_id, ack_code, error,"
                " message, ack) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (now_text(), peer, message_type, control_id, ack_code, error, message, ack),
            )
        self.purge_if_due()

    def recent(self, limit: int = 100, ack_code: str | None = None) -> list[LoggedMessage]:
        """The newest entries first, optionally only those answered with ``ack_code`` (AA, AE, AR)."""
        rows = self.newest(limit, "ack_code", ack_code)
        return [
            LoggedMessage(
                r["id"],
                r["received"],
                r["peer"],
                r["message_type"],
                r["control_id"],
                r["ack_code"],
                r["error"],
                bytes(r["message"]),
                r["ack"],
            )
            for r in rows
        ]
