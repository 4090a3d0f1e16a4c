"""The worklist and the HL7 messages behind it, for the front desk.

The room of the worklist and HL7 pages: items grouped by requested procedure, their steps, clean-up.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from appliance.core import Appliance

if TYPE_CHECKING:  # pragma: no cover
    from appliance.worklist.store import Order, OrderResult


class Worklist:
    """Worklist items and HL7 messages.

    Parameters
    ----------
    appliance : Appliance
        The core (its worklist and HL7 log).
    """

    def __init__(self, appliance: Appliance) -> None:
        self.app = appliance

    def items(self, status: str = "", patient: str = "", date: str = "", modality: str = "") -> list[dict[str, Any]]:
        """Worklist items (one per requested procedure) with their steps, earliest first.

        Parameters
        ----------
        status : str
            Only steps of this status.
        patient : str
            Patient ID or name (from the start; ``*`` and ``?`` as wildcards).
        date : str
            ``YYYYMMDD`` or ``YYYYMMDD-YYYYMMDD``.
        modality : str
            Only steps of this modality.
        """
        items: dict[str, dict[str, Any]] = {}
        for row in self.app.worklist.items(status=status or None, patient=patient or None, date=date or None):
            if modality and row.modality.upper() != modality.upper():
                continue
            item = items.setdefault(
                row.study_uid,
                {
                    "study_uid": row.study_uid,
                    "patient_name": row.patient_name,
                    "patient_id": row.patient_id,
                    "accession": row.accession,
                    "source": row.source,
                    "steps": [],
                },
            )
            item["steps"].append(dataclasses.asdict(row))
        return list(items.values())

    def apply_order(self, order: Order) -> OrderResult:
        """Add or update one order's item and steps, as an HL7 order would (all steps or none).

        Raises
        ------
        WorklistError
            The order is incomplete, invalid or names a different patient; nothing was changed.
        """
        return self.app.worklist.apply_orders([order])

    def delete_item(self, study_uid: str) -> int:
        """Delete every step of a worklist item; the number deleted.

        Raises
        ------
        NotFound
        """
        return self.app.worklist.delete_study(study_uid)

    def delete_step(self, step_id: int) -> int:
        """Delete one step.

        Raises
        ------
        NotFound
        """
        return self.app.worklist.delete_steps([step_id])

    def purge(self) -> int:
        """Delete every COMPLETED, DISCONTINUED and CANCELED step."""
        return self.app.worklist.purge()

    def reset(self, step_id: int) -> int:
        """Set a step back to SCHEDULED.

        Raises
        ------
        NotFound
        """
        return self.app.worklist.reset([step_id])

    def hl7_messages(self, limit: int = 100, ack_code: str = "") -> list[dict[str, Any]]:
        """The newest HL7 messages and their ACKs, newest first (text with one segment a line)."""
        out = []
        for m in self.app.hl7_log.recent(limit, ack_code or None):
            out.append(
                {
                    "id": m.id,
                    "received": m.received,
                    "peer": m.peer,
                    "type": m.message_type,
                    "control_id": m.control_id,
                    "ack_code": m.ack_code,
                    "error": m.error,
                    "text": m.message.decode("latin-1").replace("\r\n", "\n").replace("\r", "\n").strip(),
                    "ack": m.ack.replace("\r", "\n").strip(),
                }
            )
        return out
