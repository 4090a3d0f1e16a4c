"""Worklist items as plain data: conversion from and to data sets, and the checks an item must pass.

An item's MWL data set is kept as plain data (:data:`Attrs`); :func:`check_complete` says whether DCMTK's
worklist clients would accept it and :func:`check_values` whether its values fit their VRs (``[worklist]
long_values``). :mod:`appliance.worklist.store` stores items; this module holds no state.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from appliance.errors import IncompleteItem, InvalidItem
from appliance.log import clip

LOGGER = logging.getLogger("appliance.worklist")

#: An MWL data set as plain data: DICOM keyword -> str, list of str (multi-valued),
#: int, or list of nested mappings (sequences).
Attrs = dict[str, Any]

SPS_SEQUENCE = "ScheduledProcedureStepSequence"


# -- data set <-> plain data ----------------------------------------------------------------------


def from_dataset(ds: Dataset) -> Attrs:
    """Turn a data set into plain data (private, unknown and binary elements are left out)."""
    out: Attrs = {}
    for elem in ds:
        if elem.tag.group in (0x0000, 0x0002) or elem.tag.is_private or elem.tag.element == 0:
            continue
        keyword = elem.keyword or keyword_for_tag(elem.tag)
        if not keyword or keyword == "SpecificCharacterSet":
            continue
        if elem.VR == "SQ":
            out[keyword] = [from_dataset(item) for item in elem.value]
        elif elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            continue
        elif elem.value is None:
            out[keyword] = ""
        elif isinstance(elem.value, MultiValue | list | tuple):
            out[keyword] = [str(v) if not isinstance(v, int | float) else v for v in elem.value]
        elif isinstance(elem.value, int | float):
            out[keyword] = elem.value
        else:
            out[keyword] = str(elem.value)
    return out


def to_dataset(attrs: Mapping[str, Any]) -> Dataset:
    """Turn plain data back into a data set (the inverse of :func:`from_dataset`)."""
    ds = Dataset()
    for keyword, value in attrs.items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        vr = dictionary_VR(tag)
        if vr == "SQ":
            ds.add_new(tag, vr, DicomSequence([to_dataset(item) for item in value or []]))
        elif value == "" or value is None:
            ds.add_new(tag, vr, None)
        elif vr in ("US", "SS", "UL", "SL", "UV", "SV") and not isinstance(value, list):
            ds.add_new(tag, vr, int(value))
        else:
            ds.add_new(tag, vr, value)
    return ds


def as_text(value: Any) -> str:
    if isinstance(value, list):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def step_of(item: Mapping[str, Any]) -> Attrs:
    """The (single) Scheduled Procedure Step item of an MWL item."""
    steps = item.get(SPS_SEQUENCE) or [{}]
    step: Attrs = steps[0]
    return step


# -- validation ------------------------------------------------------------------------------------

#: Type 1 return keys of the MWL C-FIND (PS3.4 K.6-1) as DCMTK's worklist code checks them.
_REQUIRED_TOP = ("PatientName", "PatientID", "StudyInstanceUID", "RequestedProcedureID")
_REQUIRED_STEP = (
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "Modality",
    "ScheduledProcedureStepID",
)
#: Type 2 return keys: present in every stored item, empty when unknown.
TYPE2_TOP = (
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientBirthDate",
    "PatientSex",
    "PatientWeight",
    "MedicalAlerts",
    "Allergies",
    "PregnancyStatus",
    "AdmissionID",
    "CurrentPatientLocation",
    "PatientState",
    "RequestingPhysician",
    "RequestedProcedurePriority",
    "PatientTransportArrangements",
)
TYPE2_SEQ = ("ReferencedStudySequence", "ReferencedPatientSequence")
TYPE2_STEP = (
    "ScheduledPerformingPhysicianName",
    "ScheduledStationName",
    "ScheduledProcedureStepLocation",
    "PreMedication",
    "RequestedContrastAgent",
)

#: Maximum value length per VR (PS3.5 6.2); PN is checked per component group.
_MAX_LEN = {
    "AE": 16,
    "AS": 4,
    "CS": 16,
    "DA": 8,
    "DS": 16,
    "IS": 12,
    "LO": 64,
    "PN": 64,
    "SH": 16,
    "ST": 1024,
    "TM": 14,
    "UI": 64,
    "LT": 10240,
    "DT": 26,
}
#: VRs that cannot hold a backslash (it separates values there).
_NO_BACKSLASH = {"AE", "AS", "CS", "DA", "DS", "IS", "LO", "PN", "SH", "TM", "UI", "DT"}
_DA_RE = re.compile(r"^\d{8}$")
_TM_RE = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_UI_RE = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")


def _desc_and_codes_complete(container: Mapping[str, Any], desc: str, codes: str) -> bool:
    # DCMTK: at least one of description / code sequence valued, neither present-but-empty,
    # and every code item has a value and a scheme.
    seq = container.get(codes)
    if seq is not None:
        if not seq:
            return False
        for code in seq:
            if not code.get("CodeValue") or not code.get("CodingSchemeDesignator"):
                return False
    if desc in container:
        return bool(container[desc])
    return seq is not None


def check_complete(item: Mapping[str, Any], station_required: bool = True) -> None:
    """Check that worklist clients will accept an item (DCMTK ``DatasetIsComplete``).

    Parameters
    ----------
    item : Mapping
        The item.
    station_required : bool
        False lets the Scheduled Station AE Title be empty (an order that names no
        station, ``[hl7] default_station_aet`` unset).

    Raises
    ------
    IncompleteItem
        Naming the first missing attribute.
    """
    steps = item.get(SPS_SEQUENCE)
    if not steps or len(steps) != 1:
        raise IncompleteItem("the item must have exactly one scheduled procedure step", SPS_SEQUENCE)
    step = steps[0]
    for keyword in _REQUIRED_STEP:
        if keyword == "ScheduledStationAETitle" and not station_required:
            continue
        if not step.get(keyword):
            raise IncompleteItem(f"{keyword} is missing", keyword)
    for keyword in _REQUIRED_TOP:
        if not item.get(keyword):
            raise IncompleteItem(f"{keyword} is missing", keyword)
    if not _desc_and_codes_complete(step, "ScheduledProcedureStepDescription", "ScheduledProtocolCodeSequence"):
        raise IncompleteItem(
            "the step needs a description or a complete protocol code", "ScheduledProcedureStepDescription"
        )
    if not _desc_and_codes_complete(item, "RequestedProcedureDescription", "RequestedProcedureCodeSequence"):
        raise IncompleteItem(
            "the requested procedure needs a description or a complete code", "RequestedProcedureDescription"
        )
    for keyword in TYPE2_SEQ:
        if keyword not in item:
            raise IncompleteItem(f"{keyword} is missing", keyword)
        for ref in item[keyword]:
            if not ref.get("ReferencedSOPClassUID") or not ref.get("ReferencedSOPInstanceUID"):
                raise IncompleteItem(f"{keyword} has an incomplete item", keyword)


def _check_value(keyword: str, value: Any, policy: str, where: str) -> Any:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return value
    vr = dictionary_VR(tag)
    if vr == "SQ":
        return [check_values(v, policy, f"{where}{keyword} > ") for v in value or []]
    values = value if isinstance(value, list) else [value]
    out: list[Any] = []
    for v in values:
        if isinstance(v, int | float) or v is None:
            out.append(v)
            continue
        text = str(v)
        if vr in _NO_BACKSLASH and "\\" in text:
            # "\" separates values; a name like O\Brien cannot be stored as one value.
            LOGGER.warning("%s%s: backslash replaced by a space in %s", where, keyword, clip(repr(text), 80))
            text = text.replace("\\", " ")
        if vr not in ("LT", "ST", "UT"):
            text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
        if text and vr == "DA" and not _DA_RE.match(text):
            raise InvalidItem(f"{where}{keyword} {clip(repr(text), 80)} is not a date (YYYYMMDD)", keyword)
        if text and vr == "TM" and not _TM_RE.match(text):
            raise InvalidItem(f"{where}{keyword} {clip(repr(text), 80)} is not a time (HHMMSS)", keyword)
        if text and vr == "UI" and (not _UI_RE.match(text) or len(text) > 64):
            raise InvalidItem(f"{where}{keyword} {clip(repr(text), 80)} is not a valid UID", keyword)
        limit = _MAX_LEN.get(vr)
        too_long = limit is not None and (
            max(len(g) for g in text.split("=")) > limit if vr == "PN" else len(text) > limit
        )
        if too_long and limit is not None:
            if policy != "truncate":
                raise InvalidItem(
                    f"{where}{keyword} {clip(repr(text), 80)} is longer than {vr} allows ({limit})", keyword
                )
            LOGGER.warning("%s%s %s truncated to %d characters", where, keyword, clip(repr(text), 80), limit)
            text = text[:limit]
        out.append(text)
    return out if isinstance(value, list) else out[0]


def check_values(item: Mapping[str, Any], policy: str = "reject", where: str = "") -> Attrs:
    """Check every value against its VR; return the item with line breaks and backslashes cleaned.

    Parameters
    ----------
    item : Mapping
        The item (or a nested sequence item).
    policy : str
        ``reject`` or ``truncate`` values longer than their VR allows.
    where : str
        Prefix for messages (nested items).

    Raises
    ------
    InvalidItem
        For a malformed date, time or UID, or an over-long value under ``reject``.
    """
    return {k: _check_value(k, v, policy, where) for k, v in item.items()}


# -- the worklist ----------------------------------------------------------------------------------
