"""Matching of C-FIND keys, after PS3.4 C.2.2.2, for Query/Retrieve and the Modality Worklist alike.

Two halves, one set of rules:

* **SQL conditions** (:class:`Key`, :func:`condition`): a key becomes an SQL condition over the index
  or the worklist table: universal (empty or ``*``), single value (exact; PN case-insensitive on the
  index), ``*``/``?`` wildcards through SQLite ``GLOB`` with every other GLOB metacharacter escaped,
  ranges on DA and TM (TM bounds padded to their precision), UID lists, and a backslash list on other
  keys matching any value. Query/Retrieve answers from them alone; the worklist uses them to narrow.
* **Item matching** (:func:`item_matches`): a worklist item's stored data set against the
  identifier, as DCMTK's ``wlmscpfs`` (3.6.7) matches (rules read from ``dcmwlm``'s ``wlfsim.cc``
  and ``dcmdata``'s ``dcmatch.cc``):

  * a key is universal when it is empty or (text VRs) every value is only ``*``;
  * otherwise the item must have a value: an absent or empty attribute never matches;
  * a multi-valued key matches if any of its values matches any value of the item
    (``CT\\MR`` matches CT; a key ``AA33`` matches a station ``AA32\\AA33``);
  * text values: ``*`` and ``?`` wildcards, case-sensitive for every VR, person names
    included; Patient ID, Scheduled Station AE Title and Modality take no wildcards
    (single value matching only);
  * dates and times are parsed: single values compare as points in time (``1100`` is
    11:00:00 exactly), ``a-b``, ``a-`` and ``-b`` are inclusive ranges;
  * Scheduled Procedure Step Start Date and Time (and Study Date and Time) are matched as
    one date-time when both are given with the same shape (``20260905-20260906`` with
    ``1000-1200`` runs from the 5th 10:00 to the 6th 12:00), else each on its own;
  * a sequence key with an item matches if one item of the item's sequence matches every
    key inside.

  Keys ``wlmscpfs`` does not match (Study Instance UID, Scheduled Procedure Step ID and
  Status, descriptions...) are matched with the same functions under PS3.4 C.2.2.2:
  wildcards on text, lists of UIDs, ranges on dates and times. ``[worklist]
  pn_ignore_case`` makes person names match without regard to case, as Orthanc and
  dcm4chee do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from appliance.index import norm_date, norm_time, pn_key

SPS_SEQUENCE = "ScheduledProcedureStepSequence"

#: wlmscpfs' matching keys: keyword -> wildcards allowed.
DCMTK_TOP_KEYS: dict[str, bool] = {
    "PatientName": True,
    "ResponsiblePerson": True,
    "ResponsiblePersonRole": True,
    "PatientID": False,
    "AccessionNumber": True,
    "RequestedProcedureID": True,
    "ReferringPhysicianName": True,
    "PatientSex": True,
    "RequestingPhysician": True,
    "AdmissionID": True,
    "RequestedProcedurePriority": True,
    "PatientBirthDate": True,
    "IssuerOfPatientID": True,
}
DCMTK_STEP_KEYS: dict[str, bool] = {
    "ScheduledStationAETitle": False,
    "Modality": False,
    "ScheduledPerformingPhysicianName": True,
}
#: Date and time keys matched together.
COMBINED = {"StudyDate": "StudyTime", "ScheduledProcedureStepStartDate": "ScheduledProcedureStepStartTime"}
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})


@dataclass(frozen=True)
class Rules:
    """Matching options: person names without regard to case (``[worklist] pn_ignore_case``)."""

    pn_ignore_case: bool = False


def values_of(value: Any) -> list[str]:
    """The values of a key or an item attribute as text (backslash-separated values split)."""
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value]
    text = str(value)
    return text.split("\\") if text != "" else []


def vr_of(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return dictionary_VR(tag) if tag is not None else "UN"


def is_universal(vr: str, key: list[str]) -> bool:
    """Whether a key's values match everything (empty; text made only of ``*``)."""
    values = [v.strip() for v in key]
    if not any(values):
        return True
    if vr in _TEXT_VRS:
        return all(v.strip("*") == "" for v in values)
    return False


# -- dates and times (DCMTK DcmDate/DcmTime parsing) ---------------------------------------------

_DA = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")
_TM = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")


def parse_date(text: str) -> date | None:
    m = _DA.match(text.strip())
    if not m:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def parse_time(text: str) -> time | None:
    m = _TM.match(text.strip())
    if not m:
        return None
    hh, mm, ss, frac = m.group(1), m.group(2) or "0", m.group(3) or "0", m.group(4) or ""
    try:
        return time(int(hh), int(mm), min(int(ss), 59), int((frac + "000000")[:6]))
    except ValueError:
        return None


def _range(query: str) -> tuple[str, str, bool]:
    """(first, second, is_range) of a range query, split at the first ``-``."""
    first, sep, second = query.partition("-")
    return first.strip(), second.strip(), bool(sep)


def _range_match(parse: Any, query: str, candidate: Any) -> bool:
    first, second, is_range = _range(query)
    low = parse(first) if first else None
    if first and low is None:
        return False
    if not is_range:
        return bool(first) and low == candidate
    high = parse(second) if second else None
    if second and high is None:
        return False
    return (not first or low <= candidate) and (not second or high >= candidate)


def _date_time_match(date_key: str, time_key: str, date_value: str, time_value: str) -> bool:
    """DCMTK ``rangeMatchingDateTime``: one date-time range made of a date key and a time key."""
    cand_date = parse_date(date_value)
    if cand_date is None:
        return False
    cand_time = parse_time(time_value) if time_value.strip() else time()
    if cand_time is None:
        return False
    candidate = datetime.combine(cand_date, cand_time)
    d1, d2, d_range = _range(date_key)
    t1, t2, t_range = _range(time_key)
    if d_range != t_range or (not d1 and t1) or (d_range and not d2 and t2):
        # Not the same shape: each on its own.
        return _range_match(parse_date, date_key, cand_date) and _range_match(parse_time, time_key, cand_time)

    def point(d: str, t: str) -> datetime | None:
        day = parse_date(d)
        moment = parse_time(t) if t else time()
        return datetime.combine(day, moment) if day is not None and moment is not None else None

    first = point(d1, t1) if d1 else None
    if d1 and first is None:
        return False
    if not d_range:
        return first == candidate
    second = point(d2, t2) if d2 else None
    if d2 and second is None:
        return False
    return (not d1 or (first is not None and first <= candidate)) and (
        not d2 or (second is not None and second >= candidate)
    )


# -- single values ---------------------------------------------------------------------------------


def _wildcard(pattern: str, text: str) -> bool:
    """DCMTK's wildcard matcher: ``*`` any run, ``?`` one character, everything else literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


def value_matches(vr: str, key: str, candidate: str, wildcards: bool, rules: Rules) -> bool:
    """One key value against one item value."""
    key, candidate = key.strip(), candidate.strip()
    if not key:
        return True
    if vr == "DA":
        day = parse_date(candidate)
        return day is not None and _range_match(parse_date, key, day)
    if vr == "TM":
        moment = parse_time(candidate)
        return moment is not None and _range_match(parse_time, key, moment)
    if vr == "PN" and rules.pn_ignore_case:
        key, candidate = key.upper(), candidate.upper()
    if wildcards and vr in _TEXT_VRS and ("*" in key or "?" in key):
        return _wildcard(key, candidate)
    return key == candidate


def attribute_matches(vr: str, key: list[str], stored: Any, wildcards: bool, rules: Rules) -> bool:
    """A non-universal key against an item attribute (absent or empty never matches)."""
    candidates = values_of(stored)
    return any(value_matches(vr, k, c, wildcards, rules) for k in key for c in candidates)


# -- data sets ---------------------------------------------------------------------------------------


def _query_keys(identifier: Dataset) -> list[tuple[str, Any]]:
    out = []
    for elem in identifier:
        if elem.tag.group in (0x0000, 0x0002) or elem.tag.element == 0x0000 or not elem.keyword:
            continue
        if elem.keyword == "SpecificCharacterSet":
            continue
        out.append((elem.keyword, elem.value))
    return out


@dataclass(frozen=True)
class _Test:
    """One condition of a compiled query: a key, a date-time pair, or a sequence key."""

    keyword: str
    vr: str = ""
    values: tuple[str, ...] = ()
    wildcards: bool = True
    #: Combined date-time: the time keyword and the time key's first value.
    time_keyword: str = ""
    time_value: str = ""
    #: Sequence key: the conditions of its item.
    sub: tuple[_Test, ...] | None = None


def _compile(identifier: Dataset, level: str) -> tuple[_Test, ...]:
    keys = _query_keys(identifier)
    given = dict(keys)
    dcmtk = DCMTK_TOP_KEYS if level == "top" else DCMTK_STEP_KEYS if level == "step" else {}
    tests: list[_Test] = []
    for keyword, value in keys:
        vr = vr_of(keyword)
        if vr == "SQ":
            items = list(value or [])
            if items:
                sub_level = "step" if keyword == SPS_SEQUENCE and level == "top" else "other"
                sub = _compile(items[0], sub_level)
                if sub:  # an item without condition: universal matching
                    tests.append(_Test(keyword, vr, sub=sub))
            continue
        if keyword in COMBINED.values() and any(COMBINED[d] == keyword for d in COMBINED if d in given):
            continue  # matched with its date
        key = values_of(value)
        if keyword in COMBINED:
            time_keyword = COMBINED[keyword]
            time_key = values_of(given.get(time_keyword))
            date_universal, time_universal = is_universal(vr, key), is_universal("TM", time_key)
            if not date_universal and not time_universal:
                tests.append(_Test(keyword, vr, tuple(key), True, time_keyword, time_key[0]))
            elif not date_universal:
                tests.append(_Test(keyword, vr, tuple(key)))
            elif not time_universal:
                tests.append(_Test(time_keyword, "TM", tuple(time_key)))
            continue
        if not is_universal(vr, key):
            tests.append(_Test(keyword, vr, tuple(key), dcmtk.get(keyword, True)))
    return tuple(tests)


def _passes(stored: Mapping[str, Any], tests: tuple[_Test, ...], rules: Rules) -> bool:
    for test in tests:
        if test.sub is not None:
            sub = test.sub
            if not any(_passes(item, sub, rules) for item in stored.get(test.keyword) or []):
                return False
        elif test.time_keyword:
            date_text = values_of(stored.get(test.keyword))
            time_text = values_of(stored.get(test.time_keyword))
            if not (
                date_text
                and time_text
                and _date_time_match(test.values[0], test.time_value, date_text[0], time_text[0])
            ):
                return False
        elif not attribute_matches(test.vr, list(test.values), stored.get(test.keyword), test.wildcards, rules):
            return False
    return True


class Query:
    """A C-FIND identifier compiled once for matching many items (universal keys dropped).

    Parameters
    ----------
    identifier : Dataset
        The query.
    rules : Rules
        Matching options.
    """

    def __init__(self, identifier: Dataset, rules: Rules) -> None:
        self.rules = rules
        self.tests = _compile(identifier, "top")

    def matches(self, stored: Mapping[str, Any]) -> bool:
        """Whether an item (as plain data) matches."""
        return _passes(stored, self.tests, self.rules)


def item_matches(stored: Mapping[str, Any], identifier: Dataset, rules: Rules) -> bool:
    """Whether an item (as plain data) matches a query data set (see :class:`Query` for many items)."""
    return Query(identifier, rules).matches(stored)


# -- SQL conditions --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """An attribute the index can match and return."""

    level: str
    column: str
    kind: str = "str"  # str | pn | uid | date | time | multi | int
    #: Column to match against when it differs from the returned one (PN keys).
    match_column: str = ""


def _glob_escape(text: str) -> str:
    """Escape GLOB metacharacters so they match literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _wildcard_to_glob(value: str) -> str:
    return "".join({"*": "*", "?": "?"}.get(c, _glob_escape(c)) for c in value)


def _time_bounds(value: str) -> tuple[str, str]:
    """Lowest and highest normalised times a TM value (of any precision) stands for."""
    value = value.replace(":", "").strip()
    low = norm_time(value)
    whole, _, frac = value.partition(".")
    # "0830" stands for 08:30:00-08:30:59.999999; padding with 9s gives an upper
    # bound that no later valid time can pass.
    high = (whole + "999999")[:6] + "." + (frac + "999999")[:6]
    return low, high


def condition(key: Key, value: str, params: list[Any]) -> str | None:
    """SQL condition for one matching key, or None for universal matching (it narrows the candidates)."""
    value = value.strip() if key.kind != "uid" else value.strip().strip("\x00")
    if value in ("", "*"):
        return None
    column = key.match_column or key.column
    if key.kind == "uid":
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        params.extend(uids)
        return f"{column} IN ({', '.join('?' * len(uids))})"
    if key.kind == "int":
        params.append(value)
        return f"CAST({column} AS TEXT) = ?"
    alternatives = value.split("\\")
    parts = []
    for alt in alternatives:
        part = _single(key, column, alt, params)
        if part is not None:
            parts.append(part)
    if len(parts) < len(alternatives):  # one alternative is universal
        return None
    return "(" + " OR ".join(parts) + ")"


def _single(key: Key, column: str, value: str, params: list[Any]) -> str | None:
    if value in ("", "*"):
        return None
    if key.kind in ("date", "time"):
        norm = norm_date if key.kind == "date" else norm_time
        if "-" in value:
            low, _, high = value.partition("-")
            conds = []
            if low.strip():
                params.append(norm(low) if key.kind == "date" else _time_bounds(low)[0])
                conds.append(f"{column} >= ?")
            if high.strip():
                params.append(norm(high) if key.kind == "date" else _time_bounds(high)[1])
                conds.append(f"{column} <= ?")
            # A range never matches a missing value.
            conds.append(f"{column} != ''")
            return "(" + " AND ".join(conds) + ")"
        if key.kind == "time":
            low, high = _time_bounds(value)
            params.extend([low, high])
            return f"({column} >= ? AND {column} <= ?)"
        params.append(norm(value))
        return f"{column} = ?"
    if key.kind == "pn":
        pattern = pn_key(value)
        if "*" in pattern or "?" in pattern:
            glob = _wildcard_to_glob(pattern)
            params.extend([glob, glob + "=*"])
            return f"({column} GLOB ? OR {column} GLOB ?)"
        # A name without '=' matches the alphabetic group of a multi-group name.
        params.extend([pattern, _glob_escape(pattern) + "=*"])
        return f"({column} = ? OR {column} GLOB ?)"
    if key.kind == "multi":
        params.append("*\\" + _wildcard_to_glob(value) + "\\*")
        return f"('\\' || REPLACE({column}, ',', '\\') || '\\') GLOB ?"
    if "*" in value or "?" in value:
        params.append(_wildcard_to_glob(value))
        return f"{column} GLOB ?"
    params.append(value)
    return f"{column} = ?"
