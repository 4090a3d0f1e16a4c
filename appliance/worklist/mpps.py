"""Modality Performed Procedure Step: the state machine of PS3.4 F.7 and its tie-back to the worklist.

An MPPS instance is created IN PROGRESS (N-CREATE) and then set once to COMPLETED
or DISCONTINUED (N-SET); after that it may no longer change. Each item of its
Scheduled Step Attributes Sequence that names a Study Instance UID and a
Scheduled Procedure Step ID links it to that worklist step, whose status follows:
IN PROGRESS -> STARTED, COMPLETED -> COMPLETED, DISCONTINUED -> DISCONTINUED.
Items without a step ID (an unscheduled exam) link to nothing. Instances are kept
in the database, so a restart between N-CREATE and N-SET loses nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance.db import MPPS, Database
from appliance.errors import WorklistError
from appliance.worklist.store import ItemKey, SpsStatus, Worklist

LOGGER = logging.getLogger(__name__)

IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
PPS_STATUSES = (IN_PROGRESS, COMPLETED, DISCONTINUED)
_STEP_STATUS = {IN_PROGRESS: SpsStatus.STARTED, COMPLETED: SpsStatus.COMPLETED, DISCONTINUED: SpsStatus.DISCONTINUED}


class MppsError(WorklistError):
    """An MPPS request that is refused; nothing was changed."""


class MppsDuplicate(MppsError):
    """N-CREATE for an SOP Instance UID that exists already."""


class MppsUnknown(MppsError):
    """N-SET for an SOP Instance UID that does not exist."""


class MppsInvalidValue(MppsError):
    """An attribute has a value the state machine does not allow (e.g. N-CREATE not IN PROGRESS)."""


class MppsMissing(MppsError):
    """A required attribute is missing (Performed Procedure Step Status at N-CREATE)."""


class MppsFinal(MppsError):
    """N-SET on an instance that is COMPLETED or DISCONTINUED already."""


@dataclass(frozen=True)
class MppsResult:
    """What an MPPS request did."""

    sop_uid: str
    status: str
    steps: tuple[ItemKey, ...]
    #: Linked steps that are on the worklist (the others were not scheduled here).
    found: tuple[ItemKey, ...]


def _status_of(attrs: Mapping[str, Any]) -> str:
    return str(attrs.get("PerformedProcedureStepStatus") or "").strip().upper()


def _linked_steps(attrs: Mapping[str, Any]) -> tuple[ItemKey, ...]:
    keys = []
    for ssa in attrs.get("ScheduledStepAttributesSequence") or []:
        study = str(ssa.get("StudyInstanceUID") or "").strip()
        sps = str(ssa.get("ScheduledProcedureStepID") or "").strip()
        if study and sps:
            keys.append(ItemKey(study, sps))
    return tuple(keys)


class MppsService:
    """MPPS instances and the worklist steps they report on.

    Parameters
    ----------
    db : Database
        The appliance database (holds the ``mpps`` table).
    worklist : Worklist
        Whose steps follow the MPPS status.
    """

    def __init__(self, db: Database, worklist: Worklist) -> None:
        self.db = db
        self.worklist = worklist

    def create(self, sop_uid: str, attrs: Mapping[str, Any], calling_ae: str = "") -> MppsResult:
        """N-CREATE: record a new instance IN PROGRESS and start its linked steps.

        Parameters
        ----------
        sop_uid : str
            Affected SOP Instance UID.
        attrs : Mapping
            The attribute list as plain data (:func:`appliance.worklist.store.from_dataset`).
        calling_ae : str
            The modality, for the log.

        Raises
        ------
        MppsError
            :class:`MppsDuplicate`, :class:`MppsMissing` or :class:`MppsInvalidValue`.
        """
        status = _status_of(attrs)
        if not sop_uid:
            raise MppsMissing("N-CREATE without an Affected SOP Instance UID", "AffectedSOPInstanceUID")
        if not status:
            raise MppsMissing("Performed Procedure Step Status is missing", "PerformedProcedureStepStatus")
        if status != IN_PROGRESS:
            raise MppsInvalidValue(f"an MPPS is created IN PROGRESS, not {status}", "PerformedProcedureStepStatus")
        steps = _linked_steps(attrs)
        now = datetime.now().isoformat(timespec="seconds")
        with self.db.transaction() as conn:
            if conn.execute(f"SELECT 1 FROM {MPPS} WHERE sop_uid = ?", (sop_uid,)).fetchone():
                raise MppsDuplicate(f"MPPS {sop_uid} exists already", "AffectedSOPInstanceUID")
            conn.execute(
                f"INSERT INTO {MPPS} (sop_uid, status, calling_ae, steps, attrs, created, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    sop_uid,
                    status,
                    calling_ae,
                    json.dumps([[k.study_uid, k.sps_id] for k in steps]),
                    json.dumps(dict(attrs), ensure_ascii=False),
                    now,
                    now,
                ),
            )
            found = tuple(k for k in steps if self.worklist.set_step_status(conn, k, SpsStatus.STARTED))
        LOGGER.info(
            "MPPS %s from %s IN PROGRESS: %d linked step(s) started%s",
            sop_uid,
            calling_ae or "?",
            len(found),
            f", {len(steps) - len(found)} not on the worklist" if len(found) < len(steps) else "",
        )
        return MppsResult(sop_uid, status, steps, found)

    def set(self, sop_uid: str, changes: Mapping[str, Any]) -> MppsResult:
        """N-SET: change an instance still IN PROGRESS; a final status moves its linked steps.

        Raises
        ------
        MppsError
            :class:`MppsUnknown`, :class:`MppsFinal` or :class:`MppsInvalidValue`.
        """
        now = datetime.now().isoformat(timespec="seconds")
        with self.db.transaction() as conn:
            row = conn.execute(f"SELECT status, steps, attrs FROM {MPPS} WHERE sop_uid = ?", (sop_uid,)).fetchone()
            if row is None:
                raise MppsUnknown(f"MPPS {sop_uid} does not exist", "RequestedSOPInstanceUID")
            if row["status"] != IN_PROGRESS:
                raise MppsFinal(
                    f"MPPS {sop_uid} is {row['status']} and may no longer be updated", "PerformedProcedureStepStatus"
                )
            status = _status_of(changes) or IN_PROGRESS
            if status not in PPS_STATUSES:
                raise MppsInvalidValue(f"{status!r} is not an MPPS status", "PerformedProcedureStepStatus")
            attrs = json.loads(row["attrs"])
            attrs.update(changes)
            attrs["PerformedProcedureStepStatus"] = status
            conn.execute(
                f"UPDATE {MPPS} SET status = ?, attrs = ?, updated = ? WHERE sop_uid = ?",
                (status, json.dumps(attrs, ensure_ascii=False), now, sop_uid),
            )
            steps = tuple(ItemKey(s, p) for s, p in json.loads(row["steps"]))
            found: tuple[ItemKey, ...] = ()
            if status != IN_PROGRESS:
                found = tuple(k for k in steps if self.worklist.set_step_status(conn, k, _STEP_STATUS[status]))
        LOGGER.info("MPPS %s set %s: %d linked step(s) updated", sop_uid, status, len(found))
        return MppsResult(sop_uid, status, steps, found)

    def get(self, sop_uid: str) -> tuple[str, dict[str, Any]] | None:
        """An instance's status and attributes, or None."""
        row = self.db.conn.execute(f"SELECT status, attrs FROM {MPPS} WHERE sop_uid = ?", (sop_uid,)).fetchone()
        return None if row is None else (row["status"], json.loads(row["attrs"]))
