"""HL7 v2 orders and ADT messages -> worklist values of the core (pure functions).

The mapping follows IHE RAD TF-2 Table B-1 as dcm4chee implements it, with the
fallbacks of shared/specs/hl7-mwl.md section (a) where sources disagree:

* ORM^O01 (v2.3.1): one step per ORC/OBR pair (OBR-20 SPS ID), Study Instance UID
  from ZDS-1 (else made from the order numbers, :func:`order_uid`), start from
  ORC-7.4 -> OBR-27.4 -> OBR-36, station from ``[hl7] station_aets`` by modality,
  else ``default_station_aet``, else none (the step keeps an empty station);
* OMI^O23 (v2.5.1): one step per IPC (IPC-4 SPS ID), Study UID IPC-3, accession
  IPC-1, start TQ1-7, station IPC-9 (else by modality);
* ADT^A08/A31: PID (and PV1) demographics; ADT^A40: PID-3 plus MRG-1 (merged ID).

Values are unescaped by the ER7 reader; ``None`` means "not sent, keep" and
``""`` (the HL7 null) "clear". Names are reordered from XPN/XCN/CNN to DICOM PN
(prefix and suffix swap places). Every rejection names the HL7 field at fault.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.config import HL7Config
from appliance.worklist.store import Order, PatientRef, PatientUpdate, SpsStatus, StepOrder
from hl7.er7 import Message, Segment

#: ORC-1 (order control) and ORC-5 (order status) -> status of the step; dcm4chee's
#: default table, plus the same controls with ORC-5 empty (many RIS leave it so).
ORDER_STATUS: dict[tuple[str, str], SpsStatus] = {
    ("NW", "SC"): SpsStatus.SCHEDULED,
    ("NW", "IP"): SpsStatus.SCHEDULED,
    ("NW", ""): SpsStatus.SCHEDULED,
    ("XO", "SC"): SpsStatus.SCHEDULED,
    ("XO", ""): SpsStatus.SCHEDULED,
    ("SC", "SC"): SpsStatus.SCHEDULED,
    ("SC", "IP"): SpsStatus.STARTED,
    ("CA", "CA"): SpsStatus.CANCELED,
    ("CA", ""): SpsStatus.CANCELED,
    ("OC", "CA"): SpsStatus.CANCELED,
    ("OC", ""): SpsStatus.CANCELED,
    ("SC", "CA"): SpsStatus.CANCELED,
    ("DC", "CA"): SpsStatus.DISCONTINUED,
    ("DC", ""): SpsStatus.DISCONTINUED,
    ("OD", "CA"): SpsStatus.DISCONTINUED,
    ("OD", ""): SpsStatus.DISCONTINUED,
    ("SC", "DC"): SpsStatus.DISCONTINUED,
    ("XO", "CM"): SpsStatus.COMPLETED,
    ("SC", "CM"): SpsStatus.COMPLETED,
    ("SC", "A"): SpsStatus.COMPLETED,
}
#: Order controls that (re)schedule and list every step of the study.
SCHEDULING = frozenset({"NW", "XO", "SC"})
#: HL7 table 0119 (order control codes, v2.5.1): a code outside it is ERR 103, a code in it
#: that the worklist does not take (with that ORC-5) ERR 101.
_TABLE_0119 = (
    "AF CA CH CN CR DC DE DF DR FU HD HR LI MC NA NW OC OD OE OF OH OK OP OR PA PR PY RA RE RF RL RO RP RQ "
    "RR RU SC SN SR SS UA UC UD UF UH UM UN UR UX XO XR XX"
)
ORDER_CONTROL_CODES = frozenset(_TABLE_0119.split())

#: HL7 table 0074 diagnostic service sections that differ from DICOM modalities.
HL7_MODALITIES = {"MRI": "MR", "NMS": "NM", "RUS": "US", "VUS": "US", "XRC": "XA", "CAT": "CT"}
#: DICOM modality defined terms (PS3.3 C.7.3.1.1.1) accepted on the worklist.
_MODALITY_TERMS = (
    "AR ASMT AU BDUS BI BMD CR CT DG DMS DOC DX ECG EPS ES FID GM HC HD IO IOL IVOCT IVUS KER KO LEN LS MG MR "
    "M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN POS PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT "
    "RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XAPS XC"
)
DICOM_MODALITIES = frozenset(_MODALITY_TERMS.split())

#: Priority (TQ.6 / TQ1-9) -> Requested Procedure Priority (0040,1003), as dcm4chee maps it.
PRIORITIES = {"S": "STAT", "A": "HIGH", "P": "HIGH", "C": "HIGH", "R": "ROUTINE", "T": "MEDIUM"}

#: DICOM attribute -> HL7 field it comes from, to name the field of a rejected order.
ORM_FIELDS = {
    "PatientID": "PID^1^3^1^1",
    "PatientName": "PID^1^5^1^1",
    "PatientBirthDate": "PID^1^7^1^1",
    "StudyInstanceUID": "ZDS^1^1^1^1",
    "AccessionNumber": "OBR^1^18^1^1",
    "RequestedProcedureID": "OBR^1^19^1^1",
    "ScheduledProcedureStepID": "OBR^1^20^1^1",
    "Modality": "OBR^1^24^1^1",
    "ScheduledStationAETitle": "OBR^1^24^1^1",
    "ScheduledProcedureStepStartDate": "ORC^1^7^1^4",
    "ScheduledProcedureStepStartTime": "ORC^1^7^1^4",
    "ScheduledProcedureStepDescription": "OBR^1^4^1^5",
    "RequestedProcedureDescription": "OBR^1^4^1^2",
    "ReferringPhysicianName": "PV1^1^8^1^2",
    "RequestingPhysician": "OBR^1^16^1^2",
    "MedicalAlerts": "OBR^1^13",
    "ScheduledPerformingPhysicianName": "OBR^1^34^1^1",
    "PlacerOrderNumberImagingServiceRequest": "ORC^1^2^1^1",
    "FillerOrderNumberImagingServiceRequest": "ORC^1^3^1^1",
    "AdmissionID": "PV1^1^19^1^1",
    "ScheduledProcedureStepSequence": "OBR^1^20",
    "OtherPatientIDs": "MRG^1^1^1^1",
}
OMI_FIELDS = {
    **ORM_FIELDS,
    "StudyInstanceUID": "IPC^1^3^1^1",
    "AccessionNumber": "IPC^1^1^1^1",
    "RequestedProcedureID": "IPC^1^2^1^1",
    "ScheduledProcedureStepID": "IPC^1^4^1^1",
    "Modality": "IPC^1^5^1^1",
    "ScheduledStationAETitle": "IPC^1^9^1^1",
    "ScheduledProcedureStepStartDate": "TQ1^1^7^1^1",
    "ScheduledProcedureStepStartTime": "TQ1^1^7^1^1",
    "ScheduledProcedureStepDescription": "IPC^1^6^1^2",
    "ScheduledProcedureStepSequence": "IPC^1^4",
}

_DTM = re.compile(r"^(\d{8})(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,4})?)?)?)?([+-]\d{4})?$")


class MappingError(ValueError):
    """The message content is wrong; the ACK is AE with an ERR segment.

    Parameters
    ----------
    code : int
        HL7 table 0357 error code (101 required field missing, 102 data type error,
        103 table value not found...).
    location : str
        ERR location ``SEG^seq^field^rep^comp``.
    text : str
        Explanation for the sender.
    """

    def __init__(self, code: int, location: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.location = location


# -- field conversions ------------------------------------------------------------------------------


def _dtm(value: str | None, location: str) -> tuple[str, str] | None:
    """HL7 DTM -> (DA, TM); time zone dropped, time padded to HHMMSS."""
    if value is None:
        return None
    if value == "":
        return "", ""
    m = _DTM.match(value.strip())
    if not m:
        raise MappingError(102, location, f"Data type error: {value!r} is not an HL7 date/time (YYYYMMDDHHMMSS)")
    date, time = m.group(1), m.group(2) or ""
    whole, _, frac = time.partition(".")
    time = (whole + "0000")[:6] + ("." + frac if frac else "") if whole else "000000"
    return date, time


def _date(value: str | None, location: str) -> str | None:
    if not value:
        return value
    if not re.match(r"^\d{8}", value):
        raise MappingError(102, location, f"Data type error: {value!r} is not an HL7 date (YYYYMMDD)")
    return value[:8]


def _pn(
    family: str | None,
    given: str | None,
    middle: str | None,
    prefix: str | None,
    suffix: str | None,
    degree: str | None,
) -> str:
    suffix = " ".join(p for p in (suffix, degree) if p)
    return "^".join([family or "", given or "", middle or "", prefix or "", suffix]).rstrip("^")


def _is_null(seg: Segment | None, fld: int, repetition: int = 0) -> bool:
    return seg is not None and len(seg.repetitions(fld)) > repetition and seg.repetitions(fld)[repetition] == '""'


def xpn(seg: Segment | None, fld: int, repetition: int = 0) -> str | None:
    """XPN (family^given^middle^suffix^prefix^degree) -> PN (family^given^middle^prefix^suffix)."""
    if seg is None:
        return None
    if _is_null(seg, fld, repetition):
        return ""
    parts = [seg.value(fld, c, 1, repetition) for c in range(1, 7)]
    if not any(parts):
        return None
    family, given, middle, suffix, prefix, degree = parts
    return _pn(family, given, middle, prefix, suffix, degree)


def xcn(seg: Segment | None, fld: int, repetition: int = 0) -> str | None:
    """XCN (id^family^given^middle^suffix^prefix^degree) -> PN; the ID is dropped."""
    if seg is None:
        return None
    if _is_null(seg, fld, repetition):
        return ""
    parts = [seg.value(fld, c, 1, repetition) for c in range(2, 8)]
    if not any(parts):
        return None
    family, given, middle, suffix, prefix, degree = parts
    return _pn(family, given, middle, prefix, suffix, degree)


def cnn(seg: Segment | None, fld: int) -> str | None:
    """NDL/CNN (component 1 = id&family&given&middle&suffix&prefix) -> PN."""
    if seg is None:
        return None
    if _is_null(seg, fld):
        return ""
    parts = [seg.value(fld, 1, s) for s in range(2, 7)]
    if not any(parts):
        return None
    family, given, middle, suffix, prefix = parts
    return _pn(family, given, middle, prefix, suffix, None)


def _code(seg: Segment | None, fld: int, first: int) -> tuple[str | None, list[dict[str, str]] | None]:
    """A CE/CWE triplet starting at component ``first`` -> (text, code sequence)."""
    if seg is None:
        return None, None
    value, text, scheme = (seg.value(fld, first + i) for i in range(3))
    codes = (
        [{"CodeValue": value, "CodingSchemeDesignator": scheme, "CodeMeaning": text or value}]
        if value and scheme
        else None
    )
    return text, codes


def _first(*values: str | None) -> str | None:
    for v in values:
        if v:
            return v
    for v in values:
        if v == "":
            return ""
    return None


def _put(attrs: dict[str, Any], keyword: str, value: Any) -> None:
    if value is not None:
        attrs[keyword] = value


# -- patient ----------------------------------------------------------------------------------------


def patient_ref(msg: Message) -> PatientRef:
    """PID-3, first repetition: Patient ID and Issuer of Patient ID.

    Raises
    ------
    MappingError
        101 at PID^1^3 when there is no patient ID.
    """
    pid = msg.first("PID")
    if pid is None:
        raise MappingError(101, "PID^1", "Required segment missing: PID")
    patient_id = pid.text(3, 1)
    if not patient_id:
        raise MappingError(101, "PID^1^3^1^1", "Required field missing: patient ID (PID-3)")
    return PatientRef(patient_id, pid.text(3, 4))


def _weight_height(msg: Message, attrs: dict[str, Any]) -> None:
    for obx in msg.all("OBX"):
        name = (obx.text(3, 2) or obx.text(3, 1)).upper()
        code = obx.text(3, 1)
        unit = obx.text(6, 1).lower()
        value = obx.text(5)
        try:
            number = float(value)
        except ValueError:
            continue
        if name == "BODY WEIGHT" or code == "29463-7":
            factor = {"kg": 1.0, "g": 0.001, "lb": 0.45359237, "[lb_av]": 0.45359237}.get(unit)
            if factor:
                attrs["PatientWeight"] = f"{number * factor:.6g}"
        elif name == "BODY HEIGHT" or code == "8302-2":
            factor = {"m": 1.0, "cm": 0.01}.get(unit)
            if factor:
                attrs["PatientSize"] = f"{number * factor:.6g}"


def patient_attrs(msg: Message) -> dict[str, Any]:
    """Patient-level attributes from PID, PV1, AL1 and OBX.

    Raises
    ------
    MappingError
        102 for a birth date that is not a date.
    """
    pid = msg.first("PID")
    pv1 = msg.first("PV1")
    attrs: dict[str, Any] = {}
    if pid is None:
        return attrs
    _put(attrs, "PatientName", xpn(pid, 5))
    _put(attrs, "PatientBirthDate", _date(pid.value(7, 1), "PID^1^7^1^1"))
    sex = pid.value(8)
    if sex is not None:
        sex = sex.upper()
        attrs["PatientSex"] = sex if sex in ("M", "F", "O") else "O" if sex in ("A", "N") else ""
    others = []
    for rep in range(1, len(pid.repetitions(3))):
        other = pid.text(3, 1, 1, rep)
        if other:
            others.append({"PatientID": other, "IssuerOfPatientID": pid.text(3, 4, 1, rep), "TypeOfPatientID": "TEXT"})
    if others:
        attrs["OtherPatientIDsSequence"] = others
    _put(attrs, "AdmissionID", _first(pv1.value(19) if pv1 else None, pid.value(18)))
    if pv1 is not None:
        location = [pv1.value(3, c) for c in (1, 2, 3)]
        if any(location):
            attrs["CurrentPatientLocation"] = " ".join(p for p in location if p)
        elif _is_null(pv1, 3):
            attrs["CurrentPatientLocation"] = ""
        ambulatory = pv1.value(15)
        if ambulatory is not None:
            attrs["PregnancyStatus"] = 3 if ambulatory.upper() == "B6" else ""
    allergies = [a.text(3, 2) or a.text(3, 1) for a in msg.all("AL1")]
    if any(allergies):
        attrs["Allergies"] = [a for a in allergies if a]
    _weight_height(msg, attrs)
    return attrs


# -- orders -------------------------------------------------------------------------------------------


@dataclass
class _Group:
    """One ORC with what follows it (OBR, TQ1, ZDS, IPC, NTE) up to the next ORC."""

    orc: Segment
    index: int
    obr: Segment | None = None
    tq1: Segment | None = None
    zds: Segment | None = None
    ipcs: list[Segment] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _groups(msg: Message) -> list[_Group]:
    groups: list[_Group] = []
    for seg in msg.segments[1:]:
        if seg.name == "ORC":
            groups.append(_Group(seg, len(groups) + 1))
        elif not groups:
            continue
        elif seg.name == "OBR":
            if groups[-1].obr is not None:  # another OBR under the same ORC
                groups.append(_Group(groups[-1].orc, len(groups) + 1))
            groups[-1].obr = seg
        elif seg.name == "TQ1" and groups[-1].tq1 is None:
            groups[-1].tq1 = seg
        elif seg.name == "ZDS":
            groups[-1].zds = seg
        elif seg.name == "IPC":
            groups[-1].ipcs.append(seg)
        elif seg.name == "NTE" and groups[-1].obr is not None:
            groups[-1].notes.append(seg.text(3))
    if not groups:
        raise MappingError(101, "ORC^1", "Required segment missing: ORC")
    for g in groups:
        if g.obr is None:
            raise MappingError(101, f"OBR^{g.index}", "Required segment missing: OBR")
    return groups


def _status(group: _Group) -> SpsStatus:
    control = group.orc.text(1).upper()
    order_status = group.orc.text(5).upper()
    status = ORDER_STATUS.get((control, order_status))
    if status is None and control not in ORDER_CONTROL_CODES:
        raise MappingError(
            103,
            f"ORC^{group.index}^1^1^1",
            f"Table value not found: order control {control!r} is not in HL7 table 0119",
        )
    if status is None:
        raise MappingError(
            101, f"ORC^{group.index}^1^1^1", "Invalid order control in field 1 and/or invalid order status in field 5"
        )
    return status


def _modality(value: str | None, cfg: HL7Config, location: str) -> str | None:
    if not value:
        return value
    code = value.upper()
    code = cfg.modalities.get(code, HL7_MODALITIES.get(code, code))
    if code not in DICOM_MODALITIES:
        raise MappingError(103, location, f"Table value not found: modality {value!r} (map it in [hl7] modalities)")
    return code


def _station(modality: str | None, cfg: HL7Config) -> str | None:
    if not modality:
        return None
    return cfg.station_aets.get(modality) or cfg.default_station_aet or None


def _request_attrs(msg: Message, g: _Group, omi: bool, cfg: HL7Config) -> dict[str, Any]:
    orc, obr = g.orc, g.obr
    assert obr is not None  # checked by _groups
    attrs: dict[str, Any] = {}
    ipc = g.ipcs[0] if g.ipcs else None
    _put(attrs, "AccessionNumber", _first(ipc.value(1) if ipc else None, obr.value(18)))
    _put(attrs, "RequestedProcedureID", _first(ipc.value(2) if ipc else None, obr.value(19)))
    text44, codes44 = _code(obr, 44, 1)
    text4, codes4 = _code(obr, 4, 1)
    alt_text4, alt_codes4 = _code(obr, 4, 4)
    _put(attrs, "RequestedProcedureDescription", _first(text44, text4, alt_text4))
    _put(attrs, "RequestedProcedureCodeSequence", codes44 or codes4 or alt_codes4)
    priority = (g.tq1.value(9) if g.tq1 else None) if omi else _first(orc.value(7, 6), obr.value(27, 6))
    if priority is not None:
        attrs["RequestedProcedurePriority"] = PRIORITIES.get(priority.upper(), "")
    pv1 = msg.first("PV1")
    _put(attrs, "ReferringPhysicianName", _first(xcn(pv1, 8), xcn(orc, 12)))
    _put(attrs, "RequestingPhysician", _first(xcn(obr, 16), xcn(orc, 12)))
    _put(attrs, "PlacerOrderNumberImagingServiceRequest", _first(orc.value(2), obr.value(2)))
    _put(attrs, "FillerOrderNumberImagingServiceRequest", _first(orc.value(3), obr.value(3)))
    _put(attrs, "PatientState", obr.value(12))
    alerts = obr.value(13)
    _put(attrs, "MedicalAlerts", alerts.replace("\r\n", " ") if alerts else alerts)
    _put(attrs, "PatientTransportArrangements", obr.value(30))
    reason_text, _ = _code(obr, 31, 1)
    _put(attrs, "ReasonForTheRequestedProcedure", _first(reason_text, obr.value(31)))
    _put(attrs, "InstitutionName", orc.value(17, 2))
    if g.notes:
        attrs["RequestedProcedureComments"] = "\r\n".join(n for n in g.notes if n)
    return attrs


def _start(g: _Group, omi: bool) -> tuple[tuple[str, str] | None, str]:
    if omi:
        location = f"TQ1^{g.index}^7^1^1"
        return _dtm(g.tq1.value(7) if g.tq1 else None, location), location
    assert g.obr is not None
    for fld, loc in ((g.orc, f"ORC^{g.index}^7^1^4"), (g.obr, f"OBR^{g.index}^27^1^4")):
        value = fld.value(7 if fld is g.orc else 27, 4)
        if value is not None:
            return _dtm(value, loc), loc
    location = f"OBR^{g.index}^36^1^1"
    return _dtm(g.obr.value(36), location), location


def _steps(g: _Group, status: SpsStatus, omi: bool, cfg: HL7Config, rp_id: str) -> list[StepOrder]:
    obr = g.obr
    assert obr is not None
    start, _ = _start(g, omi)
    common: dict[str, Any] = {}
    if start is not None:
        common["ScheduledProcedureStepStartDate"], common["ScheduledProcedureStepStartTime"] = start
    _put(common, "ScheduledPerformingPhysicianName", cnn(obr, 34))
    steps = []
    if omi and g.ipcs:
        for n, ipc in enumerate(g.ipcs, start=1):
            attrs = dict(common)
            modality = _modality(ipc.value(5), cfg, f"IPC^{n}^5^1^1")
            _put(attrs, "Modality", modality)
            aets = [a for a in (ipc.text(9, 1, 1, r) for r in range(len(ipc.repetitions(9)))) if a]
            _put(
                attrs,
                "ScheduledStationAETitle",
                (aets if len(aets) > 1 else aets[0]) if aets else _station(modality, cfg),
            )
            _put(attrs, "ScheduledStationName", ipc.value(7))
            _put(attrs, "ScheduledProcedureStepLocation", ipc.value(8))
            text, codes = _code(ipc, 6, 1)
            _put(attrs, "ScheduledProcedureStepDescription", text)
            _put(attrs, "ScheduledProtocolCodeSequence", codes)
            sps_id = ipc.text(4) or f"{rp_id}-{n}"
            steps.append(StepOrder(sps_id, status, attrs))
        return steps
    attrs = dict(common)
    modality = _modality(obr.value(24), cfg, f"OBR^{g.index}^24^1^1")
    _put(attrs, "Modality", modality)
    _put(attrs, "ScheduledStationAETitle", _station(modality, cfg))
    alt_text, alt_codes = _code(obr, 4, 4)
    text, codes = _code(obr, 4, 1)
    _put(attrs, "ScheduledProcedureStepDescription", _first(alt_text, text))
    _put(attrs, "ScheduledProtocolCodeSequence", alt_codes or codes)
    sps_id = obr.text(20) or f"{rp_id}-{g.index}"
    return [StepOrder(sps_id, status, attrs)]


def order_uid(placer: str, filler: str, accession: str, rp_id: str = "") -> str:
    """The Study Instance UID made for an order that names none (``missing_study_uid = "generate"``).

    A ``2.25.`` UID (PS3.5 B.2) from a name-based UUID of the placer order number (else
    the filler's) and the accession number, so every message of the same order (new,
    change, cancel) gets the same UID; the requested procedure ID stands in when the
    order has neither number.
    """
    order = placer or filler
    key = f"order:{order}|accession:{accession}" if order or accession else f"rp:{rp_id}"
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, key).int}"


def _study_uid(g: _Group, omi: bool, attrs: Mapping[str, Any], cfg: HL7Config) -> str:
    ipc = g.ipcs[0] if g.ipcs else None
    uid = (ipc.text(3) if ipc else "") or (g.zds.text(1) if g.zds else "")
    if uid:
        return uid
    accession = attrs.get("AccessionNumber") or ""
    location = "IPC^1^3^1^1" if omi else "ZDS^1^1^1^1"
    if cfg.missing_study_uid == "accession":
        if not accession:
            raise MappingError(101, location, "Required field missing: Study Instance UID (and no accession number)")
        return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, 'accession:' + accession).int}"
    if cfg.missing_study_uid == "generate":
        # Placer and filler numbers: the entity identifier with its namespace (EI.1^EI.2).
        placer = "^".join(p for p in (g.orc.text(2, 1), g.orc.text(2, 2)) if p) or (g.obr.text(2, 1) if g.obr else "")
        filler = "^".join(p for p in (g.orc.text(3, 1), g.orc.text(3, 2)) if p) or (g.obr.text(3, 1) if g.obr else "")
        return order_uid(placer, filler, accession, attrs.get("RequestedProcedureID") or "")
    raise MappingError(101, location, "Required field missing: Study Instance UID")


def map_order(msg: Message, cfg: HL7Config) -> list[Order]:
    """Map an ORM^O01 or OMI^O23 message to orders, one per Study Instance UID.

    Parameters
    ----------
    msg : Message
        The parsed message.
    cfg : HL7Config
        Station rules, modality map, missing-UID policy.

    Returns
    -------
    list of Order
        In message order.

    Raises
    ------
    MappingError
        With the HL7 error code and the field at fault.
    """
    omi = msg.message_type[0] == "OMI"
    patient = patient_ref(msg)
    pattrs = patient_attrs(msg)
    orders: dict[str, Order] = {}
    for g in _groups(msg):
        status = _status(g)
        attrs = _request_attrs(msg, g, omi, cfg)
        accession = attrs.get("AccessionNumber") or ""
        rp_id = (
            attrs.get("RequestedProcedureID") or accession or attrs.get("PlacerOrderNumberImagingServiceRequest") or ""
        )
        if not rp_id:
            raise MappingError(
                101,
                f"{'IPC' if omi else 'OBR'}^{g.index}^{2 if omi else 19}^1^1",
                "Required field missing: requested procedure ID",
            )
        attrs["RequestedProcedureID"] = rp_id
        study_uid = _study_uid(g, omi, attrs, cfg)
        steps = tuple(_steps(g, status, omi, cfg, rp_id))
        key = study_uid or f"accession:{accession}"
        control = g.orc.text(1).upper()
        previous = orders.get(key)
        if previous is None:
            orders[key] = Order(
                study_uid,
                patient,
                pattrs,
                attrs,
                steps,
                replace_steps=control in SCHEDULING and status == SpsStatus.SCHEDULED,
                charset=msg.charset.dicom,
            )
        else:
            orders[key] = Order(
                study_uid,
                patient,
                pattrs,
                {**previous.attrs, **attrs},
                previous.steps + steps,
                previous.replace_steps,
                previous.charset,
            )
    return list(orders.values())


def map_patient_update(msg: Message) -> PatientUpdate:
    """Map ADT^A08/A31 (demographics) or ADT^A40 (merge MRG-1 into PID-3).

    Raises
    ------
    MappingError
        101 for a missing PID-3 or MRG-1, 102 for a bad birth date.
    """
    patient = patient_ref(msg)
    merged = None
    if msg.message_type[1] == "A40":
        mrg = msg.first("MRG")
        old = mrg.text(1, 1) if mrg else ""
        if not old:
            raise MappingError(101, "MRG^1^1^1^1", "Required field missing: prior patient ID (MRG-1)")
        merged = PatientRef(old, mrg.text(1, 4) if mrg else "")
    attrs = patient_attrs(msg)
    return PatientUpdate(patient, attrs, merged, msg.charset.dicom)


def field_of(attribute: str, omi: bool) -> str:
    """The HL7 field a DICOM attribute of the worklist comes from (for ERR-2)."""
    table: Mapping[str, str] = OMI_FIELDS if omi else ORM_FIELDS
    return table.get(attribute, "")
