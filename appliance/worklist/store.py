"""The Modality Worklist: scheduled procedure steps made by orders, kept in SQLite.

An item is one Scheduled Procedure Step, keyed by (Study Instance UID, Scheduled
Procedure Step ID) as dcm4chee and IHE do; its whole MWL data set is kept as JSON
(DICOM keyword -> value) next to the columns that C-FIND matches on. Front ends
hand in :class:`Order` and :class:`PatientUpdate` values (the HL7 listener), DICOM
worklist files (``appliance worklist import``) or MPPS events; everything that
changes the worklist is one transaction, so a bad order changes nothing.

Values in an order follow the HL7 null convention: an attribute absent from a
mapping leaves the stored value unchanged, ``""`` clears it.

Rules kept here (see docs/hl7-worklist.md):

* an order's item is stored only if DCMTK's worklist clients would accept it
  (:func:`check_complete`, the station aside), else the whole order is rejected;
  an item of a worklist file is stored as the file has it (:meth:`Worklist.put_as_is`),
  as ``wlmscpfs`` serves it;
* a scheduling order (new/changed) lists every step of its study: steps it no
  longer lists are deleted or cancelled (``[worklist] dropped_steps``);
* a scheduling order does not move a step that a modality already started or
  completed back to SCHEDULED; cancel/discontinue orders do not undo a COMPLETED
  step unless ``[worklist] cancel_completed = "apply"``;
* an order may leave the Scheduled Station AE Title unknown: the step keeps an
  empty station, which only queries without a station key find;
* patient updates and merges change every open item of the patient.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from appliance.config import WorklistConfig
from appliance.db import MERGED_PATIENTS, WORKLIST, Database
from appliance.errors import IncompleteItem, NotFound, PatientMismatch, StepCompleted, UnknownPatient
from appliance.index import norm_time, pn_key
from appliance.worklist.items import SPS_SEQUENCE as SPS_SEQUENCE
from appliance.worklist.items import TYPE2_SEQ, TYPE2_STEP, TYPE2_TOP, as_text, check_complete, check_values, step_of
from appliance.worklist.items import Attrs as Attrs
from appliance.worklist.items import from_dataset as from_dataset
from appliance.worklist.items import to_dataset as to_dataset

LOGGER = logging.getLogger(__name__)


class SpsStatus(StrEnum):
    """Scheduled Procedure Step Status (0040,0020): PS3.3 C.4-10 terms plus dcm4chee's final ones."""

    SCHEDULED = "SCHEDULED"
    ARRIVED = "ARRIVED"
    READY = "READY"
    STARTED = "STARTED"
    DEPARTED = "DEPARTED"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"
    CANCELED = "CANCELED"


#: Steps a patient update or merge still changes.
OPEN_STATUSES = frozenset({SpsStatus.SCHEDULED, SpsStatus.ARRIVED, SpsStatus.READY, SpsStatus.STARTED})
#: Steps ``appliance worklist purge`` deletes.
FINAL_STATUSES = frozenset({SpsStatus.COMPLETED, SpsStatus.DISCONTINUED, SpsStatus.CANCELED})
#: Statuses a scheduling order leaves alone: the modality's word (MPPS) wins over a RIS update.
_PERFORMED = frozenset({SpsStatus.STARTED, SpsStatus.COMPLETED})
#: What cancel and discontinue orders make of a step.
_WITHDRAWN = frozenset({SpsStatus.CANCELED, SpsStatus.DISCONTINUED})


@dataclass(frozen=True)
class PatientRef:
    """Who an item belongs to: Patient ID and, optionally, its issuer."""

    patient_id: str
    issuer: str = ""


@dataclass(frozen=True)
class StepOrder:
    """One scheduled procedure step of an order.

    Attributes
    ----------
    sps_id : str
        Scheduled Procedure Step ID (0040,0009).
    status : SpsStatus
        What the order makes of the step.
    attrs : Mapping
        Attributes of the SPS sequence item (Modality, ScheduledStationAETitle...).
    """

    sps_id: str
    status: SpsStatus
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Order:
    """An order for one requested procedure (one Study Instance UID).

    Attributes
    ----------
    study_uid : str
        Study Instance UID; ``""`` when the sender gave none (the item of the same
        accession number is reused, else a new UID is made).
    patient : PatientRef
        The patient.
    patient_attrs, attrs : Mapping
        Patient-level and request-level attributes of the item.
    steps : tuple of StepOrder
        The steps; several with the same study share ``patient_attrs`` and ``attrs``.
    replace_steps : bool
        True for a new or changed order, which lists every step of the study.
    charset : str
        DICOM Specific Character Set of the values (e.g. ``ISO_IR 100``); ``""`` for ASCII.
    source : str
        Where the order came from (``hl7``, ``file``), for the staff UI.
    """

    study_uid: str
    patient: PatientRef
    patient_attrs: Mapping[str, Any] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)
    steps: tuple[StepOrder, ...] = ()
    replace_steps: bool = True
    charset: str = ""
    source: str = "hl7"


@dataclass(frozen=True)
class PatientUpdate:
    """New demographics for a patient (ADT^A08/A31), optionally merging another ID into it (ADT^A40)."""

    patient: PatientRef
    patient_attrs: Mapping[str, Any] = field(default_factory=dict)
    merged: PatientRef | None = None
    charset: str = ""


@dataclass(frozen=True)
class PatientResult:
    """What a patient update or merge changed.

    Attributes
    ----------
    changed : int
        Items rewritten.
    known : bool
        Whether the patient (for a merge: the prior patient ID) has any worklist item.
    """

    changed: int
    known: bool


@dataclass(frozen=True)
class ItemKey:
    """The key of a worklist item."""

    study_uid: str
    sps_id: str

    def __str__(self) -> str:
        return f"{self.study_uid} / {self.sps_id}"


@dataclass
class OrderResult:
    """What an order changed."""

    created: list[ItemKey] = field(default_factory=list)
    updated: list[ItemKey] = field(default_factory=list)
    removed: list[ItemKey] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the log."""
        return f"{len(self.created)} created, {len(self.updated)} updated, {len(self.removed)} removed"


@dataclass(frozen=True)
class ItemRow:
    """A worklist item as listed by the CLI and the staff UI."""

    id: int
    study_uid: str
    sps_id: str
    patient_id: str
    patient_name: str
    accession: str
    modality: str
    station_aet: str
    start_date: str
    start_time: str
    status: str
    description: str
    source: str
    updated: str


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def new_uid() -> str:
    """A new UID under the 2.25 root (UUID based, PS3.5 B.2)."""
    return f"2.25.{uuid.uuid4().int}"


def _columns(item: Mapping[str, Any], status: str) -> dict[str, Any]:
    """The matching-key columns of an item."""
    step = step_of(item)
    name = as_text(item.get("PatientName"))
    return {
        "study_uid": as_text(item.get("StudyInstanceUID")),
        "sps_id": as_text(step.get("ScheduledProcedureStepID")),
        "patient_id": as_text(item.get("PatientID")),
        "issuer": as_text(item.get("IssuerOfPatientID")),
        "patient_name": name,
        "patient_name_key": pn_key(name),
        "birth_date": as_text(item.get("PatientBirthDate")),
        "accession": as_text(item.get("AccessionNumber")),
        "rp_id": as_text(item.get("RequestedProcedureID")),
        "modality": as_text(step.get("Modality")),
        "station_aet": as_text(step.get("ScheduledStationAETitle")),
        "start_date": as_text(step.get("ScheduledProcedureStepStartDate")),
        "start_time": norm_time(as_text(step.get("ScheduledProcedureStepStartTime"))),
        "performing_key": pn_key(as_text(step.get("ScheduledPerformingPhysicianName"))),
        "status": status,
    }


def _apply(target: Attrs, changes: Mapping[str, Any]) -> None:
    """Apply HL7-style changes: ``""`` clears (present, empty), absent keeps."""
    for keyword, value in changes.items():
        if keyword in ("RequestedProcedureDescription", "ScheduledProcedureStepDescription") and value == "":
            target.pop(keyword, None)  # DCMTK refuses a present-but-empty description
        elif keyword.endswith("CodeSequence") and not value and keyword not in TYPE2_SEQ:
            target.pop(keyword, None)  # ...and an empty code sequence
        else:
            target[keyword] = value


def _same_patient(row_id: str, row_issuer: str, ref: PatientRef) -> bool:
    return row_id == ref.patient_id and (not row_issuer or not ref.issuer or row_issuer == ref.issuer)


class Worklist:
    """The worklist items, their orders and their management.

    Parameters
    ----------
    db : Database
        The appliance database (holds the ``worklist_items`` table).
    config : WorklistConfig
        Worklist behaviour.
    reject_merged_ids : bool
        Refuse orders and updates for patient IDs that were merged into another one.
    """

    def __init__(self, db: Database, config: WorklistConfig | None = None, reject_merged_ids: bool = True) -> None:
        self.db = db
        self.config = config or WorklistConfig()
        self.reject_merged_ids = reject_merged_ids

    # -- orders -----------------------------------------------------------------------------------

    def apply_orders(self, orders: Sequence[Order]) -> OrderResult:
        """Apply orders (one message may order several studies) in one transaction.

        Parameters
        ----------
        orders : sequence of Order
            What the message asks for.

        Returns
        -------
        OrderResult
            The items created, updated and removed.

        Raises
        ------
        WorklistError
            :class:`IncompleteItem`, :class:`InvalidItem`, :class:`UnknownPatient` or
            :class:`PatientMismatch`; nothing was changed.
        """
        result = OrderResult()
        with self.db.transaction() as conn:
            for order in orders:
                self._apply_order(conn, order, result)
        return result

    def _apply_order(self, conn: sqlite3.Connection, order: Order, result: OrderResult) -> None:
        if not order.patient.patient_id:
            raise IncompleteItem("the order has no patient ID", "PatientID")
        if not order.steps:
            raise IncompleteItem("the order has no procedure step", SPS_SEQUENCE)
        self._check_not_merged(conn, order.patient)
        study_uid = order.study_uid or self._reuse_or_new_uid(conn, order)
        rows = {
            r["sps_id"]: r
            for r in conn.execute(
                f"SELECT id, sps_id, patient_id, issuer, status, attrs FROM {WORKLIST} WHERE study_uid = ?",
                (study_uid,),
            )
        }
        for row in rows.values():
            if not _same_patient(row["patient_id"], row["issuer"], order.patient):
                raise PatientMismatch(
                    f"study {study_uid} belongs to patient {row['patient_id']}, not {order.patient.patient_id}",
                    "StudyInstanceUID",
                )
        now = _now()
        listed: set[str] = set()
        for step in self._merge_steps(order.steps):
            listed.add(step.sps_id)
            row = rows.get(step.sps_id)
            if row is None:
                item = self._new_item(order, study_uid, step)
                status = step.status
            else:
                item = json.loads(row["attrs"])
                status = SpsStatus(row["status"])
                if (
                    step.status in _WITHDRAWN
                    and status == SpsStatus.COMPLETED
                    and self.config.cancel_completed != "apply"
                ):
                    raise StepCompleted(
                        f"step {step.sps_id} of study {study_uid} is already COMPLETED: "
                        f"{step.status.value} not applied",
                        "ScheduledProcedureStepStatus",
                    )
                if not (step.status == SpsStatus.SCHEDULED and status in _PERFORMED):
                    status = step.status
            _apply(item, order.patient_attrs)
            _apply(item, order.attrs)
            item["PatientID"] = order.patient.patient_id
            if order.patient.issuer:
                item["IssuerOfPatientID"] = order.patient.issuer
            sps = step_of(item)
            _apply(sps, step.attrs)
            sps["ScheduledProcedureStepID"] = step.sps_id
            item[SPS_SEQUENCE] = [sps]
            item = self._validated(item)
            key = ItemKey(study_uid, step.sps_id)
            self._write(
                conn, row["id"] if row is not None else None, item, status.value, order.charset, order.source, now
            )
            (result.created if row is None else result.updated).append(key)
        if order.replace_steps:
            for sps_id, row in rows.items():
                if sps_id in listed:
                    continue
                key = ItemKey(study_uid, sps_id)
                if self.config.dropped_steps == "cancel":
                    conn.execute(
                        f"UPDATE {WORKLIST} SET status = ?, updated = ? WHERE id = ?",
                        (SpsStatus.CANCELED.value, now, row["id"]),
                    )
                else:
                    conn.execute(f"DELETE FROM {WORKLIST} WHERE id = ?", (row["id"],))
                result.removed.append(key)

    @staticmethod
    def _merge_steps(steps: Iterable[StepOrder]) -> list[StepOrder]:
        """Steps with the same ID (repeated OBR/IPC) become one with all their protocol codes."""
        merged: dict[str, StepOrder] = {}
        for step in steps:
            first = merged.get(step.sps_id)
            if first is None:
                merged[step.sps_id] = step
                continue
            attrs = dict(first.attrs)
            codes = list(attrs.get("ScheduledProtocolCodeSequence") or [])
            codes += [c for c in step.attrs.get("ScheduledProtocolCodeSequence") or [] if c not in codes]
            if codes:
                attrs["ScheduledProtocolCodeSequence"] = codes
            merged[step.sps_id] = StepOrder(step.sps_id, first.status, attrs)
        return list(merged.values())

    def _reuse_or_new_uid(self, conn: sqlite3.Connection, order: Order) -> str:
        accession = as_text(order.attrs.get("AccessionNumber"))
        if accession:
            row = conn.execute(
                f"SELECT study_uid FROM {WORKLIST} WHERE accession = ? AND patient_id = ? LIMIT 1",
                (accession, order.patient.patient_id),
            ).fetchone()
            if row is not None:
                return str(row[0])
        uid = new_uid()
        LOGGER.info("order for accession %r has no Study Instance UID: made %s", accession, uid)
        return uid

    def _new_item(self, order: Order, study_uid: str, step: StepOrder) -> Attrs:
        item: Attrs = {k: "" for k in TYPE2_TOP}
        item.update({k: [] for k in TYPE2_SEQ})
        item["StudyInstanceUID"] = study_uid
        sps: Attrs = {k: "" for k in TYPE2_STEP}
        sps["ScheduledStationAETitle"] = ""  # unknown station: present and empty, until an order names one
        if not step.attrs.get("ScheduledProcedureStepStartDate") and not step.attrs.get(
            "ScheduledProcedureStepStartTime"
        ):
            # IHE lets the DSS default a missing start to "now"; worklist clients need one.
            now = datetime.now()
            sps["ScheduledProcedureStepStartDate"] = now.strftime("%Y%m%d")
            sps["ScheduledProcedureStepStartTime"] = now.strftime("%H%M%S")
            LOGGER.warning("step %s of study %s has no start date/time: scheduled now", step.sps_id, study_uid)
        item[SPS_SEQUENCE] = [sps]
        return item

    def put_as_is(
        self, conn: sqlite3.Connection, item: Attrs, status: str, charset: str, source: str, fallback: str
    ) -> ItemKey:
        """Store an item of a worklist file as the file has it, unchecked (``wlmscpfs`` serves it so).

        An item without Study Instance UID or step ID is keyed by ``fallback`` (the file and step),
        so that such items do not replace each other; the answers still hold the attribute as
        the file has it.
        """
        study = as_text(item.get("StudyInstanceUID")) or f"\\{fallback}"
        sps_id = as_text(step_of(item).get("ScheduledProcedureStepID")) or f"\\{fallback}"
        key = ItemKey(study, sps_id)
        row = conn.execute(f"SELECT id FROM {WORKLIST} WHERE study_uid = ? AND sps_id = ?", (study, sps_id)).fetchone()
        self._write(
            conn, row[0] if row else None, item, status, charset, source, _now(), {"study_uid": study, "sps_id": sps_id}
        )
        return key

    def _validated(self, item: Attrs) -> Attrs:
        item = check_values(item, self.config.long_values)
        check_complete(item, station_required=False)
        return item

    def _write(
        self,
        conn: sqlite3.Connection,
        row_id: int | None,
        item: Attrs,
        status: str,
        charset: str,
        source: str,
        now: str,
        keys: Mapping[str, str] | None = None,
    ) -> None:
        cols = _columns(item, status)
        cols.update(keys or {})
        cols.update(charset=charset, attrs=json.dumps(item, ensure_ascii=False), updated=now)
        if source:
            cols.update(source=source)
        if row_id is None:
            cols.update(created=now)
            names = ", ".join(cols)
            conn.execute(
                f"INSERT INTO {WORKLIST} ({names}) VALUES ({', '.join('?' * len(cols))})", tuple(cols.values())
            )
        else:
            sets = ", ".join(f"{k} = ?" for k in cols)
            conn.execute(f"UPDATE {WORKLIST} SET {sets} WHERE id = ?", (*cols.values(), row_id))

    def _check_not_merged(self, conn: sqlite3.Connection, ref: PatientRef) -> None:
        if not self.reject_merged_ids:
            return
        row = conn.execute(
            f"SELECT merged_into FROM {MERGED_PATIENTS} WHERE patient_id = ? AND (issuer = ? OR issuer = '' OR ? = '')",
            (ref.patient_id, ref.issuer, ref.issuer),
        ).fetchone()
        if row is not None:
            raise UnknownPatient(f"patient ID {ref.patient_id} was merged into {row[0]}", "PatientID")

    # -- patients ---------------------------------------------------------------------------------

    def update_patient(self, update: PatientUpdate, unknown_is_error: bool = False) -> PatientResult:
        """Apply new demographics (and a merge) to every open item of the patient.

        Parameters
        ----------
        update : PatientUpdate
            The new demographics, and the prior patient of a merge.
        unknown_is_error : bool
            Raise :class:`UnknownPatient` when the patient (for a merge: the prior ID) has
            no worklist item; else report it in :attr:`PatientResult.known`.

        Returns
        -------
        PatientResult
            How many items changed, and whether the patient was known.

        Raises
        ------
        WorklistError
            :class:`UnknownPatient` for a merged-away ID, :class:`InvalidItem` for a bad
            value; nothing was changed.
        """
        if not update.patient.patient_id:
            raise IncompleteItem("the message has no patient ID", "PatientID")
        changed = 0
        now = _now()
        with self.db.transaction() as conn:
            self._check_not_merged(conn, update.patient)
            if update.merged is not None:
                old = update.merged
                if not old.patient_id:
                    raise IncompleteItem("the merge names no prior patient ID", "OtherPatientIDs")
                prior_rows = self._patient_rows(conn, old, open_only=False)
                known = bool(prior_rows)
                if not known and unknown_is_error:
                    raise UnknownPatient(f"prior patient ID {old.patient_id} has no worklist item", "OtherPatientIDs")
                for row in prior_rows:
                    item = json.loads(row["attrs"])
                    item["PatientID"] = update.patient.patient_id
                    if update.patient.issuer or "IssuerOfPatientID" in item:
                        item["IssuerOfPatientID"] = update.patient.issuer
                    if SpsStatus(row["status"]) in OPEN_STATUSES:
                        _apply(item, update.patient_attrs)
                    self._write(
                        conn, row["id"], self._validated(item), row["status"], update.charset or row["charset"], "", now
                    )
                    changed += 1
                conn.execute(
                    f"INSERT OR REPLACE INTO {MERGED_PATIENTS} (patient_id, issuer, merged_into, merged_into_issuer,"
                    f" merged) VALUES (?, ?, ?, ?, ?)",
                    (old.patient_id, old.issuer, update.patient.patient_id, update.patient.issuer, now),
                )
                LOGGER.info(
                    "patient %s merged into %s: %d item(s) moved", old.patient_id, update.patient.patient_id, changed
                )
            else:
                known = (
                    conn.execute(
                        f"SELECT 1 FROM {WORKLIST} WHERE patient_id = ? AND (issuer = '' OR ? = '' OR issuer = ?)"
                        " LIMIT 1",
                        (update.patient.patient_id, update.patient.issuer, update.patient.issuer),
                    ).fetchone()
                    is not None
                )
                if not known and unknown_is_error:
                    raise UnknownPatient(f"patient ID {update.patient.patient_id} has no worklist item", "PatientID")
            for row in self._patient_rows(conn, update.patient, open_only=True):
                item = json.loads(row["attrs"])
                before = dict(item)
                _apply(item, update.patient_attrs)
                if item != before:
                    self._write(
                        conn, row["id"], self._validated(item), row["status"], update.charset or row["charset"], "", now
                    )
                    changed += 1
        return PatientResult(changed, known)

    @staticmethod
    def _patient_rows(conn: sqlite3.Connection, ref: PatientRef, open_only: bool) -> list[sqlite3.Row]:
        sql = (
            f"SELECT id, status, charset, attrs FROM {WORKLIST} WHERE patient_id = ?"
            " AND (issuer = '' OR ? = '' OR issuer = ?)"
        )
        if open_only:
            sql += f" AND status IN ({', '.join(repr(s.value) for s in OPEN_STATUSES)})"
        return list(conn.execute(sql, (ref.patient_id, ref.issuer, ref.issuer)))

    # -- status changes (MPPS, staff) -------------------------------------------------------------

    def set_step_status(self, conn: sqlite3.Connection, key: ItemKey, status: SpsStatus) -> bool:
        """Set one step's status inside the caller's transaction; False when no such step."""
        cur = conn.execute(
            f"UPDATE {WORKLIST} SET status = ?, updated = ? WHERE study_uid = ? AND sps_id = ?",
            (status.value, _now(), key.study_uid, key.sps_id),
        )
        return cur.rowcount > 0

    def reset(self, ids: Iterable[int]) -> int:
        """Set steps back to SCHEDULED.

        Raises
        ------
        NotFound
            When an ID does not exist; nothing was changed.
        """
        return self._each_step(
            ids, f"UPDATE {WORKLIST} SET status = ?, updated = ? WHERE id = ?", SpsStatus.SCHEDULED.value, _now()
        )

    # -- management -------------------------------------------------------------------------------

    def _each_step(self, ids: Iterable[int], sql: str, *values: Any) -> int:
        """Run ``sql`` (``values``, then the row ID, as parameters) on each step, all or none of them.

        Raises
        ------
        NotFound
            When an ID does not exist; nothing was changed.
        """
        ids = list(ids)
        with self.db.transaction() as conn:
            for i in ids:
                if conn.execute(f"SELECT 1 FROM {WORKLIST} WHERE id = ?", (i,)).fetchone() is None:
                    raise NotFound(f"worklist step {i} does not exist")
            for i in ids:
                conn.execute(sql, (*values, i))
        return len(ids)

    def items(
        self,
        status: str | None = None,
        patient: str | None = None,
        date: str | None = None,
        station: str | None = None,
        limit: int = 0,
    ) -> list[ItemRow]:
        """List steps, earliest start first.

        Parameters
        ----------
        status : str, optional
            Only this status (SCHEDULED, STARTED, COMPLETED...).
        patient : str, optional
            Patient ID, or a name pattern (``*`` and ``?``, case-insensitive).
        date : str, optional
            Start date ``YYYYMMDD`` or range ``YYYYMMDD-YYYYMMDD``.
        station : str, optional
            Scheduled Station AE Title.
        limit : int
            At most this many (0: all).
        """
        conds: list[str] = []
        params: list[Any] = []
        if status:
            conds.append("status = ?")
            params.append(status.upper())
        if patient:
            glob = pn_key(patient) if any(c in patient for c in "*?") else pn_key(patient) + "*"
            conds.append("(patient_id = ? OR patient_name_key GLOB ?)")
            params += [patient, glob]
        if date:
            low, sep, high = date.partition("-")
            if sep:
                if low:
                    conds.append("start_date >= ?")
                    params.append(low)
                if high:
                    conds.append("start_date <= ?")
                    params.append(high)
            else:
                conds.append("start_date = ?")
                params.append(date)
        if station:
            conds.append("station_aet = ?")
            params.append(station)
        sql = f"SELECT * FROM {WORKLIST}"
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        sql += " ORDER BY start_date, start_time, id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        out = []
        for row in self.db.conn.execute(sql, params):
            step = step_of(json.loads(row["attrs"]))
            out.append(
                ItemRow(
                    row["id"],
                    row["study_uid"],
                    row["sps_id"],
                    row["patient_id"],
                    row["patient_name"],
                    row["accession"],
                    row["modality"],
                    row["station_aet"],
                    row["start_date"],
                    as_text(step.get("ScheduledProcedureStepStartTime")),
                    row["status"],
                    as_text(step.get("ScheduledProcedureStepDescription")),
                    row["source"],
                    row["updated"],
                )
            )
        return out

    def item(self, key: ItemKey) -> tuple[Attrs, str, str] | None:
        """One item's data set (plain data), status and character set, or None."""
        row = self.db.conn.execute(
            f"SELECT attrs, status, charset FROM {WORKLIST} WHERE study_uid = ? AND sps_id = ?",
            (key.study_uid, key.sps_id),
        ).fetchone()
        if row is None:
            return None
        return json.loads(row["attrs"]), row["status"], row["charset"]

    def delete_steps(self, ids: Iterable[int]) -> int:
        """Delete steps by row ID.

        Raises
        ------
        NotFound
            When an ID does not exist; nothing was deleted.
        """
        return self._each_step(ids, f"DELETE FROM {WORKLIST} WHERE id = ?")

    def delete_study(self, study_uid: str) -> int:
        """Delete every step of a requested procedure (a whole item).

        Raises
        ------
        NotFound
            When the study has no worklist step.
        """
        with self.db.transaction() as conn:
            n = conn.execute(f"DELETE FROM {WORKLIST} WHERE study_uid = ?", (study_uid,)).rowcount
        if not n:
            raise NotFound(f"no worklist item has Study Instance UID {study_uid}")
        return n

    def purge(self, statuses: Iterable[SpsStatus] = FINAL_STATUSES) -> int:
        """Delete every step in the given statuses (default: COMPLETED, DISCONTINUED, CANCELED)."""
        values = [s.value for s in statuses]
        with self.db.transaction() as conn:
            return conn.execute(
                f"DELETE FROM {WORKLIST} WHERE status IN ({', '.join('?' * len(values))})", values
            ).rowcount

    def count(self) -> int:
        """Number of steps stored."""
        return int(self.db.conn.execute(f"SELECT COUNT(*) FROM {WORKLIST}").fetchone()[0])
