"""Modality Worklist C-FIND matching (PS3.4 K.2.2, C.2.2.2) over the worklist table.

The keys modalities filter on (Scheduled Station AE Title, start date and time,
Modality, Patient ID and Name, Accession Number...) become SQL conditions on
indexed columns, with the rules of :mod:`appliance.query` (wildcards, ranges,
case-insensitive PN, lists). Any other key with a value is matched afterwards on
the stored data set with the same rules, sequences included (an item matches if
any of its sequence items matches every key inside). Answers hold exactly the
requested keys, zero length when the item has no value; the Scheduled Procedure
Step Sequence always has exactly one item.

Steps whose status is in ``[worklist] hidden_statuses`` are returned only to a
query that asks for that status by value.
"""

from __future__ import annotations

import fnmatch
import json
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag

from appliance.db import WORKLIST
from appliance.index import norm_time

# The C-FIND matching rules are the Q/R index's: one implementation of PS3.4 C.2.2.2.
from appliance.query import Key, _condition, _time_bounds, answer_charset
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


# -- matching on stored values (keys without a column) -------------------------------------------

def _match_one(vr: str, pattern: str, stored: Any) -> bool:
    values = stored if isinstance(stored, list) else [stored]
    texts = [_value_text(v).strip() for v in values]
    pattern = pattern.strip()
    if pattern in ("", "*"):
        return True
    alternatives = pattern.split("\\") if vr != "UI" else [pattern]
    for alt in alternatives:
        if alt in ("", "*"):
            return True
        for text in texts:
            if not text:
                continue  # an empty value never matches a non-universal key
            if vr == "UI":
                if text in [u.strip() for u in alt.split("\\")]:
                    return True
            elif vr in ("DA", "TM", "DT") and "-" in alt:
                low, _, high = (v.strip() for v in alt.partition("-"))
                if vr == "TM":
                    value, low, high = norm_time(text), _time_bounds(low)[0] if low else "", \
                        _time_bounds(high)[1] if high else ""
                else:
                    value = text
                if (not low or value >= low) and (not high or value <= high):
                    return True
            elif vr == "TM":
                low, high = _time_bounds(alt)
                if low <= norm_time(text) <= high:
                    return True
            else:
                a, t = (alt.upper(), text.upper()) if vr == "PN" else (alt, text)
                if "*" in a or "?" in a:
                    if fnmatch.fnmatchcase(t, a.replace("[", "[[]")):
                        return True
                elif a == t:
                    return True
    return False


def _has_condition(keys: list[tuple[int, str, Any]]) -> bool:
    for _tag, _, value in keys:
        if isinstance(value, Dataset):
            if _has_condition(_requested(value)):
                return True
        elif value is not None and _value_text(value).strip() not in ("", "*"):
            return True
    return False


def _matches(stored: Mapping[str, Any], keys: list[tuple[int, str, Any]], skip: set[str]) -> bool:
    for tag, keyword, value in keys:
        if keyword in skip or value is None:
            continue
        vr = dictionary_VR(tag) if keyword else "UN"
        if vr == "SQ":
            sub = _requested(value)
            if not _has_condition(sub):
                continue  # an empty item: universal matching
            items = stored.get(keyword) or []
            if not any(_matches(item, sub, set()) for item in items):
                return False
        elif not _match_one(vr, _value_text(value), stored.get(keyword, "")):
            return False
    return True


# -- answers ----------------------------------------------------------------------------------------

def _project(stored: Mapping[str, Any], keys: list[tuple[int, str, Any]]) -> Dataset:
    """A data set holding exactly the requested keys, values from ``stored`` (zero length when absent)."""
    answer = Dataset()
    for tag, keyword, value in keys:
        vr = dictionary_VR(tag) if keyword else "UN"
        if vr == "SQ":
            items = stored.get(keyword) or []
            if value is None or len(value) == 0:
                answer.add_new(tag, vr, DicomSequence([to_dataset(i) for i in items]))
            else:
                answer.add_new(tag, vr, DicomSequence([_project(i, _requested(value)) for i in items]))
        elif keyword in stored:
            single = to_dataset({keyword: stored[keyword]})
            answer.add(single[Tag(tag)])
        else:
            answer.add_new(tag, vr, None)
    return answer


def find_items(conn: sqlite3.Connection, identifier: Dataset, hidden: tuple[str, ...] = (),
               limit: int = 0) -> Iterator[Dataset]:
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
    """
    keys = _requested(identifier)
    step_keys: list[tuple[int, str, Any]] = []
    for _tag, keyword, value in keys:
        if keyword == SPS_SEQUENCE and value is not None:
            step_keys = _requested(value)
    conds: list[str] = []
    params: list[Any] = []
    in_sql: set[str] = set()
    for table, wanted in ((TOP_KEYS, keys), (STEP_KEYS, step_keys)):
        for _, keyword, value in wanted:
            key = table.get(keyword)
            if key is None or isinstance(value, Dataset):
                continue
            in_sql.add(keyword)
            cond = _condition(key, _value_text(value), params)
            if cond:
                conds.append(cond)
    status_asked = any(kw == "ScheduledProcedureStepStatus" and _value_text(v).strip() not in ("", "*")
                       for _, kw, v in step_keys)
    if hidden and not status_asked:
        conds.append(f"status NOT IN ({', '.join('?' * len(hidden))})")
        params.extend(hidden)
    sql = f"SELECT attrs, status, charset FROM {WORKLIST}"
    if conds:
        sql += " WHERE " + " AND ".join(conds)
    sql += " ORDER BY start_date, start_time, id"
    top_rest = [k for k in keys if k[1] not in in_sql and k[1] != SPS_SEQUENCE]
    step_rest = [k for k in step_keys if k[1] not in in_sql]
    count = 0
    for row in conn.execute(sql, params):
        item: Attrs = json.loads(row[0])
        step = step_of(item)
        step["ScheduledProcedureStepStatus"] = row[1]
        if not _matches(item, top_rest, set()) or not _matches(step, step_rest, set()):
            continue
        answer = _project(item, keys)
        charset = answer_charset(row[2], answer)
        if charset:
            answer.SpecificCharacterSet = charset
        yield answer
        count += 1
        if limit and count >= limit:
            return
