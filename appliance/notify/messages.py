"""Message bodies: outgoing events in the manual's XML shapes (or JSON), incoming worklist orders.

Out (UTF-8)::

    <study><uid>1.2.3</uid></study>
    <series><uid>1.2.3.4</uid></series>
    <mwl><accession_number>A123</accession_number><status>IN_PROGRESS</status></mwl>

``format = "json"`` sends one object per event instead, with the patient ID, accession
number, modality and the counts the index holds when the message is sent.

In: ``<mwl>`` with one or more ``<procedure>`` (a new or changed order, every step
listed), ``<mwl-missed>`` and ``<mwl-canceled>`` naming steps by ``<accession_number>``.
They become :class:`~appliance.worklist.store.Order` values for the same core call as
HL7 orders (:meth:`Worklist.apply_orders`), so the same checks and policies apply
(docs/amqp.md lists the elements).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from appliance.config import HL7Config
from appliance.db import WORKLIST
from appliance.errors import ApplianceError
from appliance.notify.outbox import MWL, SERIES, STUDY, Event
from appliance.worklist.store import Order, PatientRef, SpsStatus, StepOrder, Worklist

#: Our step statuses in the words of the manual's messages (the rest keep their DICOM names).
MANUAL_STATUS = {"STARTED": "IN_PROGRESS"}
#: ``<study_uid>`` value that asks us to make the Study Instance UID.
GENERATE_UID = ":SERVER"


class MessageError(ApplianceError):
    """An input message that cannot become a worklist change (malformed, incomplete, unknown accession)."""


def _xml(root: str, **values: str) -> bytes:
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in values.items())
    return f"<{root}>{inner}</{root}>".encode()


def render(event: Event, fmt: str, counts: Mapping[str, object] | None = None) -> tuple[bytes, str]:
    """The body of an event's message and its content type.

    Parameters
    ----------
    event : Event
        The outbox row.
    fmt : str
        ``xml`` or ``json``.
    counts : mapping, optional
        For JSON: what the index holds now (``series_count``, ``instance_count``, ``modalities``).
    """
    status = MANUAL_STATUS.get(event.status, event.status)
    if fmt == "xml":
        if event.kind == MWL:
            return _xml("mwl", accession_number=event.accession, status=status), "application/xml"
        return _xml(event.kind, uid=event.uid), "application/xml"
    data: dict[str, Any] = {
        "event": {STUDY: "new_study", SERIES: "new_series", MWL: "mwl_status"}[event.kind],
        "study_uid": event.study_uid,
        "patient_id": event.patient_id,
        "accession_number": event.accession,
    }
    if event.kind == SERIES:
        data.update(series_uid=event.uid, modality=event.modality)
    elif event.kind == MWL:
        data.update(status=status, sps_id=event.sps_id, modality=event.modality)
    data.update(counts or {})
    data["time"] = event.created
    return json.dumps(data, ensure_ascii=False).encode(), "application/json"


# -- input --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """What an input message did: a line for the logs."""

    kind: str
    summary: str


def _text(el: ET.Element | None, path: str) -> str | None:
    """Text of a child element: None when absent, '' when empty."""
    if el is None:
        return None
    child = el.find(path)
    if child is None:
        return None
    return (child.text or "").strip()


def _put(attrs: dict[str, Any], keyword: str, value: Any) -> None:
    if value is not None:
        attrs[keyword] = value


def _codes(el: ET.Element, tag: str) -> list[dict[str, str]] | None:
    """``<tag><code/><scheme/><meaning/></tag>`` elements as a DICOM code sequence."""
    found = el.findall(tag)
    if not found:
        return None
    codes = []
    for c in found:
        value, scheme, meaning = _text(c, "code"), _text(c, "scheme"), _text(c, "meaning")
        if not value or not scheme:
            raise MessageError(f"<{tag}> needs <code> and <scheme>")
        codes.append({"CodeValue": value, "CodingSchemeDesignator": scheme, "CodeMeaning": meaning or value})
    return codes


def parse(body: bytes) -> ET.Element:
    """Parse an input message.

    Raises
    ------
    MessageError
        Not UTF-8 XML, or a document type declaration (entities are never expanded).
    """
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise MessageError("document type declarations are not accepted")
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise MessageError(f"not well-formed XML: {exc}") from None
    except ValueError as exc:  # e.g. an encoding declaration Python does not know
        raise MessageError(f"XML cannot be read: {exc}") from None


def _procedure(proc: ET.Element, index: int, hl7: HL7Config) -> Order:
    where = f"procedure {index}"
    patient = proc.find("patient")
    pid = _text(patient, "id")
    if not pid:
        raise MessageError(f"{where}: <patient><id> is missing")
    pattrs: dict[str, Any] = {}
    _put(pattrs, "PatientName", _text(patient, "name"))
    _put(pattrs, "PatientBirthDate", _text(patient, "birth_date"))
    sex = _text(patient, "sex")
    if sex is not None:
        pattrs["PatientSex"] = sex.upper() if sex.upper() in ("M", "F", "O") else ""
    attrs: dict[str, Any] = {}
    accession = _text(proc, "accession_number")
    _put(attrs, "AccessionNumber", accession)
    _put(attrs, "AdmissionID", _text(proc, "admission_id"))
    rp_id = _text(proc, "requested_procedure_id") or accession
    if not rp_id:
        raise MessageError(f"{where}: <requested_procedure_id> or <accession_number> is needed")
    attrs["RequestedProcedureID"] = rp_id
    _put(attrs, "RequestedProcedureDescription", _text(proc, "requested_procedure_description"))
    _put(attrs, "RequestedProcedureCodeSequence", _codes(proc, "requested_procedure_code"))
    _put(attrs, "ReferringPhysicianName", _text(proc, "referring_physician"))
    steps = []
    for n, step in enumerate(proc.findall("step"), start=1):
        sattrs: dict[str, Any] = {}
        modality = (_text(step, "modality") or "").upper() or None
        if modality is not None:
            modality = hl7.modalities.get(modality, modality)
        _put(sattrs, "Modality", modality)
        # The same station rules as HL7 orders: [hl7] station_aets by modality, then default_station_aet.
        station = _text(step, "station_aet") or (
            (hl7.station_aets.get(modality) or hl7.default_station_aet or None) if modality else None
        )
        _put(sattrs, "ScheduledStationAETitle", station)
        _put(sattrs, "ScheduledProcedureStepStartDate", _text(step, "start_date"))
        _put(sattrs, "ScheduledProcedureStepStartTime", _text(step, "start_time"))
        _put(sattrs, "ScheduledProcedureStepDescription", _text(step, "description"))
        _put(sattrs, "ScheduledPerformingPhysicianName", _text(step, "physician"))
        _put(sattrs, "ScheduledProtocolCodeSequence", _codes(step, "protocol_code"))
        steps.append(StepOrder(_text(step, "id") or f"{rp_id}-{n}", SpsStatus.SCHEDULED, sattrs))
    if not steps:
        raise MessageError(f"{where}: at least one <step> is needed")
    study_uid = _text(proc, "study_uid") or ""
    if study_uid == GENERATE_UID:
        study_uid = ""
    elif not study_uid:
        # The same rule as HL7 orders without one ([hl7] missing_study_uid).
        if hl7.missing_study_uid == "reject":
            raise MessageError(f"{where}: <study_uid> is missing (send {GENERATE_UID} to have one made)")
        if hl7.missing_study_uid == "accession":
            if not accession:
                raise MessageError(f"{where}: <study_uid> and <accession_number> are missing")
            study_uid = f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, 'accession:' + accession).int}"
    charset = "" if ET.tostring(proc, encoding="unicode").isascii() else "ISO_IR 192"
    return Order(
        study_uid,
        PatientRef(pid, _text(patient, "issuer") or ""),
        pattrs,
        attrs,
        tuple(steps),
        replace_steps=True,
        charset=charset,
        source="amqp",
    )


def _by_accession(conn: sqlite3.Connection, root: ET.Element, status: SpsStatus) -> list[Order]:
    accessions = [(a.text or "").strip() for a in root.iter("accession_number")]
    accessions = [a for a in accessions if a]
    if not accessions:
        raise MessageError(f"<{root.tag}> names no <accession_number>")
    orders: dict[str, tuple[PatientRef, list[StepOrder]]] = {}
    for accession in accessions:
        rows = conn.execute(
            f"SELECT study_uid, sps_id, patient_id, issuer FROM {WORKLIST} WHERE accession = ? ORDER BY id",
            (accession,),
        ).fetchall()
        if not rows:
            raise MessageError(f"no worklist step has accession number {accession!r}")
        for study_uid, sps_id, patient_id, issuer in rows:
            orders.setdefault(study_uid, (PatientRef(patient_id, issuer), []))[1].append(StepOrder(sps_id, status))
    return [
        Order(uid, ref, steps=tuple(steps), replace_steps=False, source="amqp") for uid, (ref, steps) in orders.items()
    ]


#: Root element -> the status its steps get.
_STATUS_ROOTS = {
    "mwl-canceled": SpsStatus.CANCELED,
    "mwl-cancelled": SpsStatus.CANCELED,
    # The worklist has no MISSED status: a missed step will not be done, as a discontinued one.
    "mwl-missed": SpsStatus.DISCONTINUED,
}


def to_orders(root: ET.Element, worklist: Worklist, hl7: HL7Config) -> list[Order]:
    """The orders an input message asks for.

    Raises
    ------
    MessageError
        Unknown root element, missing values, unknown accession number.
    """
    if root.tag == "mwl":
        procedures = root.findall("procedure")
        if not procedures:
            raise MessageError("<mwl> holds no <procedure>")
        return [_procedure(p, i, hl7) for i, p in enumerate(procedures, start=1)]
    status = _STATUS_ROOTS.get(root.tag)
    if status is None:
        raise MessageError(f"unknown message <{root.tag}> (expected <mwl>, <mwl-missed> or <mwl-canceled>)")
    return _by_accession(worklist.db.conn, root, status)


def apply_message(body: bytes, worklist: Worklist, hl7: HL7Config) -> Applied:
    """Apply one input message through the worklist core (one transaction).

    Raises
    ------
    MessageError
        The message cannot be read or names nothing.
    WorklistError
        The core refused the order (incomplete item, bad value, merged patient...); nothing changed.
    sqlite3.Error
        The database could not be written (worth a retry).
    """
    root = parse(body)
    orders = to_orders(root, worklist, hl7)
    result = worklist.apply_orders(orders)
    return Applied(root.tag, result.summary())
