"""Modality Worklist C-FIND over the worklist table, answered as DCMTK's ``wlmscpfs`` answers.

The keys modalities filter on (Scheduled Station AE Title, start date and time, Modality, Patient ID
and Name, Accession Number...) narrow the rows in SQL on indexed columns; every row found is then
matched on its stored data set by :mod:`appliance.matching` (``wlmscpfs``' rules), which
decides. Answers are built as ``wlmscpfs`` builds them: the requested keys with the item's values
(zero length when it has none), an empty sequence key expanded to ``wlmscpfs``' list of sub-keys,
one answer item per stored sequence item, empty description/code pairs dropped; Specific Character
Set is the item's own when the answer holds text.

Steps whose status is in ``[worklist] hidden_statuses`` are returned only to a query that asks for
that status by value (``wlmscpfs`` returns every file; set ``hidden_statuses = []`` for that).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from appliance.db import WORKLIST

# The C-FIND matching rules are the Q/R index's: one implementation of PS3.4 C.2.2.2.
from appliance.matching import Key, Query, Rules, condition
from appliance.query import answer_charset
from appliance.worklist.store import SPS_SEQUENCE, Attrs, step_of, to_dataset

#: Top-level keys matched in SQL.
TOP_KEYS: dict[str, Key] = {
    "PatientID": Key("PATIENT", "patient_id"),
    "PatientName": Key("PATIENT", "patient_name", "pn", "patient_name_key"),
    "PatientBirthDate": Key("PATIENT", "birth_date", "date"),
    "AccessionNumber": Key("PATIENT", "accession"),
    "RequestedProcedureID": Key("PATIENT", "rp_id"),
    "StudyInstanceUID": Key("PATIENT", "study_uid", "uid"),
}
#: Keys of the Scheduled Procedure Step item matched in SQL.
STEP_KEYS: dict[str, Key] = {
    "ScheduledStationAETitle": Key("PATIENT", "station_aet", "multi"),
    "Modality": Key("PATIENT", "modality"),
    "ScheduledProcedureStepStartDate": Key("PATIENT", "start_date", "date"),
    "ScheduledProcedureStepStartTime": Key("PATIENT", "start_time", "time"),
    "ScheduledProcedureStepID": Key("PATIENT", "sps_id"),
    "ScheduledPerformingPhysicianName": Key("PATIENT", "performing_key", "pn", "performing_key"),
    "ScheduledProcedureStepStatus": Key("PATIENT", "status"),
}


def _value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def _requested(identifier: Dataset) -> list[tuple[int, str, Any]]:
    """(tag, keyword, element value or item) of each key asked for, meta and group lengths left out."""
    out = []
    for elem in identifier:
        if elem.tag.group in (0x0000, 0x0002) or elem.tag.element == 0x0000:
            continue
        keyword = elem.keyword or keyword_for_tag(elem.tag)
        if keyword == "SpecificCharacterSet":
            continue
        if elem.VR == "SQ":
            out.append((int(elem.tag), keyword, elem.value[0] if elem.value else None))
        else:
            out.append((int(elem.tag), keyword, elem.value))
    return out


# -- answers (as wlmscpfs builds them) ---------------------------------------------------------------

#: What an empty sequence key (no item, or one empty item) stands for: wlmscpfs' own expansion.
_CODE_KEYS = ("CodeValue", "CodingSchemeVersion", "CodingSchemeDesignator", "CodeMeaning")
EXPANSION: dict[str, tuple[str, ...]] = {
    SPS_SEQUENCE: (
        "ScheduledStationAETitle",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
        "Modality",
        "ScheduledPerformingPhysicianName",
        "ScheduledProcedureStepDescription",
        "ScheduledStationName",
        "ScheduledProcedureStepLocation",
        "PreMedication",
        "ScheduledProcedureStepID",
        "RequestedContrastAgent",
        "CommentsOnTheScheduledProcedureStep",
        "ScheduledProcedureStepStatus",
        "ScheduledProcedureStepEndDate",
        "ScheduledProcedureStepEndTime",
        "ScheduledProtocolCodeSequence",
    ),
    "ScheduledProtocolCodeSequence": _CODE_KEYS,
    "RequestedProcedureCodeSequence": _CODE_KEYS,
    "ReferencedStudySequence": ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID"),
    "ReferencedPatientSequence": ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID"),
}
_CHAR_STRING_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})


def _expanded(keyword: str, item: Dataset | None) -> Dataset | None:
    """The item a sequence key stands for: wlmscpfs' expansion when it is empty, else itself."""
    if item is not None and len(item) > 0:
        return item
    keys = EXPANSION.get(keyword)
    if keys is None:
        return item
    out = Dataset()
    for sub in keys:
        tag = tag_for_keyword(sub)
        assert tag is not None
        vr = dictionary_VR(tag)
        if vr == "SQ":
            out.add_new(tag, vr, DicomSequence([_expanded(sub, None) or Dataset()]))
        else:
            out.add_new(tag, vr, None)
    return out


@dataclass(frozen=True)
class _Slot:
    """One key of the answer template: where its value comes from."""

    tag: int
    keyword: str
    vr: str
    #: Sequence keys: the (expanded) query item, and its template; None: the whole stored sequence.
    item: Dataset | None = None
    sub: tuple[_Slot, ...] | None = None


def _template(query: Dataset) -> tuple[_Slot, ...]:
    """The answer's shape, computed once per query (see :func:`_project`)."""
    slots = []
    for elem in query:
        if elem.tag.group in (0x0000, 0x0002) or elem.tag.element == 0x0000:
            continue
        keyword = elem.keyword or keyword_for_tag(elem.tag)
        if keyword == "SpecificCharacterSet":
            continue
        if elem.VR == "SQ":
            sub = _expanded(keyword, elem.value[0] if len(elem.value) else None) if len(elem.value) <= 1 else None
            slots.append(_Slot(int(elem.tag), keyword, "SQ", sub, _template(sub) if sub is not None else None))
        else:
            slots.append(_Slot(int(elem.tag), keyword, dictionary_VR(elem.tag) if keyword else elem.VR))
    return tuple(slots)


_INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})


def _project(stored: Mapping[str, Any], template: tuple[_Slot, ...]) -> Dataset:
    """The answer: the query's keys with the item's values (zero length when it has none).

    As wlmscpfs: a sequence key gets one item per item of the stored sequence, each holding the
    keys of the query's item; when the item has no such sequence, the query's item is answered as
    sent; PregnancyStatus the item lacks is 4 (unknown).
    """
    answer = Dataset()
    for slot in template:
        value = stored.get(slot.keyword) if slot.keyword else None
        if slot.vr == "SQ":
            items = value or []
            if slot.sub is None or slot.item is None:  # no item to expand, or several: the whole sequence
                seq = DicomSequence([to_dataset(i) for i in items])
            elif items:
                seq = DicomSequence([_project(i, slot.sub) for i in items])
            else:
                seq = DicomSequence([_copy(slot.item)])
            answer.add(DataElement(slot.tag, "SQ", seq))
        elif value not in ("", None, []):
            if slot.vr in _INT_VRS and not isinstance(value, list):
                value = int(value)
            answer.add(DataElement(slot.tag, slot.vr, value))
        elif slot.keyword == "PregnancyStatus" and slot.keyword not in stored:
            answer.add(DataElement(slot.tag, "US", 4))
        else:
            answer.add(DataElement(slot.tag, slot.vr, None))
    return answer


def _copy(item: Dataset) -> Dataset:
    out = Dataset()
    for elem in item:
        out.add(elem)
    return out


def _cleanup(answer: Dataset) -> None:
    """wlmscpfs' last touches: empty description/code pairs and empty reference items go."""
    step = None
    if SPS_SEQUENCE in answer and len(answer[SPS_SEQUENCE].value) > 0:
        step = answer[SPS_SEQUENCE].value[0]
        _desc_and_codes(step, "ScheduledProcedureStepDescription", "ScheduledProtocolCodeSequence")
    _desc_and_codes(answer, "RequestedProcedureDescription", "RequestedProcedureCodeSequence")
    for keyword in ("ReferencedStudySequence", "ReferencedPatientSequence"):
        if keyword in answer and len(answer[keyword].value) == 1:
            item = answer[keyword].value[0]
            if (
                "ReferencedSOPClassUID" in item
                and not item.ReferencedSOPClassUID
                and "ReferencedSOPInstanceUID" in item
                and not item.ReferencedSOPInstanceUID
            ):
                answer[keyword].value = DicomSequence([])


def _desc_and_codes(ds: Dataset, desc: str, codes: str) -> None:
    removed = False
    if codes in ds:
        seq = ds[codes].value
        if len(seq) == 0 or (
            len(seq) == 1
            and "CodeValue" in seq[0]
            and not seq[0].CodeValue
            and "CodingSchemeDesignator" in seq[0]
            and not seq[0].CodingSchemeDesignator
        ):
            del ds[codes]
            removed = True
    if not removed and desc in ds and not ds[desc].value:
        del ds[desc]


def _has_char_string(ds: Dataset) -> bool:
    for elem in ds:
        if elem.VR == "SQ":
            if any(_has_char_string(item) for item in elem.value):
                return True
        elif elem.VR in _CHAR_STRING_VRS:
            return True
    return False


def find_items(
    conn: sqlite3.Connection,
    identifier: Dataset,
    hidden: tuple[str, ...] = (),
    limit: int = 0,
    pn_ignore_case: bool = False,
) -> Iterator[Dataset]:
    """Yield one answer per matching worklist step.

    Parameters
    ----------
    conn : sqlite3.Connection
        Connection to the database.
    identifier : Dataset
        The C-FIND identifier (decoded with its Specific Character Set).
    hidden : tuple of str
        Statuses returned only when the query asks for them by value.
    limit : int
        Stop after this many answers (0: no limit).
    pn_ignore_case : bool
        Match person names without regard to case (``[worklist] pn_ignore_case``).
    """
    matcher = Query(identifier, Rules(pn_ignore_case))
    template = _template(identifier)
    keys = _requested(identifier)
    step_keys: list[tuple[int, str, Any]] = []
    for _tag, keyword, value in keys:
        if keyword == SPS_SEQUENCE and value is not None:
            step_keys = _requested(value)
    # SQL only narrows the rows (a superset of the answers); matching.Query decides.
    conds: list[str] = []
    params: list[Any] = []
    for table, wanted in ((TOP_KEYS, keys), (STEP_KEYS, step_keys)):
        dated = any(kw == "ScheduledProcedureStepStartDate" and _value_text(v).strip() for _, kw, v in wanted)
        for _, keyword, value in wanted:
            key = table.get(keyword)
            if key is None or isinstance(value, Dataset):
                continue
            if keyword == "ScheduledProcedureStepStartTime" and dated:
                continue  # matched with the date as one date-time
            cond = condition(key, _value_text(value), params)
            if cond:
                conds.append(cond)
    status_asked = any(
        kw == "ScheduledProcedureStepStatus" and _value_text(v).strip() not in ("", "*") for _, kw, v in step_keys
    )
    if hidden and not status_asked:
        conds.append(f"status NOT IN ({', '.join('?' * len(hidden))})")
        params.extend(hidden)
    sql = f"SELECT attrs, status, charset FROM {WORKLIST}"
    if conds:
        sql += " WHERE " + " AND ".join(conds)
    sql += " ORDER BY start_date, start_time, id"
    count = 0
    for row in conn.execute(sql, params):
        item: Attrs = json.loads(row[0])
        step = step_of(item)
        # A file's step without a status is answered without one until something changes it.
        if not (step.pop("_no_status", False) and row[1] == "SCHEDULED"):
            step["ScheduledProcedureStepStatus"] = row[1]
        if not matcher.matches(item):
            continue
        answer = _project(item, template)
        _cleanup(answer)
        if row[2] and _has_char_string(answer):
            charset = answer_charset(row[2], answer)
            if charset:
                answer.SpecificCharacterSet = charset
        elif not row[2]:
            charset = answer_charset("", answer)  # non-ASCII text of an item without character set: UTF-8
            if charset:
                answer.SpecificCharacterSet = charset
        yield answer
        count += 1
        if limit and count >= limit:
            return
