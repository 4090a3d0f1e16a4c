"""C-FIND matching over the index, after PS3.4 C.2.2.2.

A query identifier becomes one SQL statement over the level's table joined with
the levels above it, so each patient, study, series or instance is answered once.
Each key's condition comes from :mod:`appliance.matching` (shared with the worklist).
Matching rules:

* universal: an empty value (or ``*``) places no condition and returns the value;
* single value: exact, case-sensitive, except PN which is case-insensitive (as
  Orthanc does: front-desk users type names in any case);
* wildcard: ``*`` and ``?`` through SQLite ``GLOB`` with every other GLOB
  metacharacter escaped, so stored ``[``, ``%`` or ``_`` match literally;
* range: ``a-b``, ``a-``, ``-b`` for DA and TM (TM bounds padded to their precision);
* list of UIDs: ``uid1\\uid2``; a backslash list on other keys matches any value;
* ModalitiesInStudy matches a study holding any of the listed modalities.

Keys the index does not hold are returned with zero length.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from appliance.matching import Key, condition

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")

_FROM = {
    "PATIENT": "patients p",
    "STUDY": "studies st JOIN patients p ON p.id = st.patient_fk",
    "SERIES": "series s JOIN studies st ON st.id = s.study_fk JOIN patients p ON p.id = st.patient_fk",
    "IMAGE": "instances i JOIN series s ON s.id = i.series_fk JOIN studies st ON st.id = s.study_fk "
    "JOIN patients p ON p.id = st.patient_fk",
}
_ORDER = {
    "PATIENT": "p.patient_id",
    "STUDY": "st.study_date, st.study_time, st.id",
    "SERIES": "CAST(s.series_number AS INTEGER), s.id",
    "IMAGE": "CAST(i.instance_number AS INTEGER), i.id",
}


KEYS: dict[str, Key] = {
    "PatientID": Key("PATIENT", "p.patient_id"),
    "IssuerOfPatientID": Key("PATIENT", "p.issuer"),
    "PatientName": Key("PATIENT", "p.patient_name", "pn", "p.patient_name_key"),
    "PatientBirthDate": Key("PATIENT", "p.birth_date", "date"),
    "PatientSex": Key("PATIENT", "p.sex"),
    "NumberOfPatientRelatedStudies": Key(
        "PATIENT", "(SELECT COUNT(*) FROM studies x WHERE x.patient_fk = p.id)", "int"
    ),
    "NumberOfPatientRelatedSeries": Key(
        "PATIENT", "(SELECT TOTAL(x.num_series) FROM studies x WHERE x.patient_fk = p.id)", "int"
    ),
    "NumberOfPatientRelatedInstances": Key(
        "PATIENT", "(SELECT TOTAL(x.num_instances) FROM studies x WHERE x.patient_fk = p.id)", "int"
    ),
    "StudyInstanceUID": Key("STUDY", "st.study_uid", "uid"),
    "StudyDate": Key("STUDY", "st.study_date", "date"),
    "StudyTime": Key("STUDY", "st.study_time", "time"),
    "AccessionNumber": Key("STUDY", "st.accession"),
    "StudyID": Key("STUDY", "st.study_id"),
    "StudyDescription": Key("STUDY", "st.description"),
    "ReferringPhysicianName": Key("STUDY", "st.referring", "pn", "st.referring_key"),
    "ModalitiesInStudy": Key("STUDY", "st.modalities", "multi"),
    "NumberOfStudyRelatedSeries": Key("STUDY", "st.num_series", "int"),
    "NumberOfStudyRelatedInstances": Key("STUDY", "st.num_instances", "int"),
    "SOPClassesInStudy": Key(
        "STUDY",
        "(SELECT GROUP_CONCAT(DISTINCT y.sop_class_uid) FROM instances y JOIN series z ON z.id = y.series_fk "
        "WHERE z.study_fk = st.id)",
        "multi",
    ),
    "SeriesInstanceUID": Key("SERIES", "s.series_uid", "uid"),
    "Modality": Key("SERIES", "s.modality"),
    "SeriesNumber": Key("SERIES", "s.series_number"),
    "SeriesDescription": Key("SERIES", "s.description"),
    "BodyPartExamined": Key("SERIES", "s.body_part"),
    "SeriesDate": Key("SERIES", "s.series_date", "date"),
    "SeriesTime": Key("SERIES", "s.series_time", "time"),
    "NumberOfSeriesRelatedInstances": Key("SERIES", "s.num_instances", "int"),
    "SOPInstanceUID": Key("IMAGE", "i.sop_uid", "uid"),
    "SOPClassUID": Key("IMAGE", "i.sop_class_uid", "uid"),
    "InstanceNumber": Key("IMAGE", "i.instance_number"),
    "NumberOfFrames": Key("IMAGE", "i.frames", "int"),
}

#: Keys that identify the entities of each level, in the order the levels nest.
UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


class QueryError(ValueError):
    """The identifier cannot be answered (bad level, bad value)."""


def _output(key: Key, value: Any) -> Any:
    if value is None:
        return "" if key.kind != "int" else 0
    if key.kind == "int":
        return int(value)
    if key.kind == "time" and value:
        whole, _, frac = str(value).partition(".")
        frac = frac.rstrip("0")
        return whole + ("." + frac if frac else "")
    if key.kind == "multi" and key.column.startswith("(SELECT GROUP_CONCAT"):
        return str(value).split(",")
    if key.kind == "multi":
        return str(value).split("\\") if value else ""
    return value


def _build(
    identifier: Dataset, level: str
) -> tuple[list[tuple[str, Key]], list[str], list[Any], list[tuple[int, str]]]:
    """Split an identifier into selected keys, SQL conditions, parameters and requested tags."""
    if level not in LEVELS:
        raise QueryError(f"unsupported QueryRetrieveLevel {level!r}")
    depth = LEVELS.index(level)
    selects: list[tuple[str, Key]] = []
    conds: list[str] = []
    params: list[Any] = []
    requested: list[tuple[int, str]] = []  # (tag, keyword)
    for elem in identifier:
        if elem.tag.group in (0x0000, 0x0002) or elem.tag.element == 0x0000:
            continue  # group lengths and meta never come back (PS3.4 C.4.1.1.3)
        keyword = elem.keyword or keyword_for_tag(elem.tag)
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        requested.append((elem.tag, keyword))
        key = KEYS.get(keyword)
        if key is None or LEVELS.index(key.level) > depth:
            continue
        selects.append((keyword, key))
        if elem.VR != "SQ" and elem.value is not None:
            raw = elem.value
            text = (
                "\\".join(str(v) for v in raw)
                if isinstance(raw, (list, tuple)) or (type(raw).__name__ == "MultiValue")
                else str(raw)
            )
            cond = condition(key, text, params)
            if cond:
                conds.append(cond)
    return selects, conds, params, requested


#: (0008,0052) Query/Retrieve Level, returned in every answer.
_LEVEL_TAG = 0x00080052


@dataclass(frozen=True, slots=True)
class Field:
    """One attribute of an answer: its tag and VR (from the dictionary, ``UN`` for unknown and private tags)."""

    tag: int
    vr: str


class Answer:
    """One matching entity as plain values, before it becomes a data set or bytes.

    Parameters
    ----------
    fields : tuple of Field
        The attributes of the answer, in ascending tag order (Query/Retrieve Level included,
        Specific Character Set not: it depends on the values, see :meth:`charset`).
    values : list
        One value per field: ``str``, ``int``, a list of ``str`` (multiple values), ``None``
        (zero length) or ``[]`` (an empty sequence).
    requested_charset : str
        The query's Specific Character Set, backslash-separated ('' for the default repertoire).
    """

    __slots__ = ("fields", "requested_charset", "values")

    def __init__(self, fields: tuple[Field, ...], values: list[Any], requested_charset: str) -> None:
        self.fields = fields
        self.values = values
        self.requested_charset = requested_charset

    def charset(self) -> str | list[str]:
        """The answer's Specific Character Set (see :func:`charset_for`); '' when none is needed."""
        texts = [_text_of(v) for f, v in zip(self.fields, self.values, strict=True) if f.vr in _TEXT_VRS and v]
        return charset_for(self.requested_charset, texts)

    def dataset(self, charset: bool = True) -> Dataset:
        """The answer as a pydicom data set, with its Specific Character Set when needed (and ``charset``)."""
        answer = Dataset()
        for field, value in zip(self.fields, self.values, strict=True):
            answer.add_new(field.tag, field.vr, value)
        specific = self.charset() if charset else ""
        if specific:
            answer.SpecificCharacterSet = specific
        return answer


class Matches:
    """The answers to one identifier: the fields every answer has, then one value list per match.

    Iterating runs the SQL statement (lazily, as a generator would) and yields value lists aligned
    with :attr:`fields`.
    """

    def __init__(self, fields: tuple[Field, ...], rows: Iterator[list[Any]]) -> None:
        self.fields = fields
        self._rows = rows

    def __iter__(self) -> Iterator[list[Any]]:
        return self._rows


def find_rows(
    conn: sqlite3.Connection, identifier: Dataset, level: str, retrieve_ae: str = "", limit: int = 0
) -> Matches:
    """The entities matching a C-FIND identifier, as plain values (no data set per answer).

    Parameters
    ----------
    conn : sqlite3.Connection
        Connection to the index.
    identifier : Dataset
        The C-FIND request identifier (decoded with its Specific Character Set).
    level : str
        PATIENT, STUDY, SERIES or IMAGE.
    retrieve_ae : str
        Our AE title, returned as RetrieveAETitle when asked for.
    limit : int
        Stop after this many answers (0: no limit).

    Returns
    -------
    Matches
        The fields of the answers and their values; the statement runs when it is iterated.

    Raises
    ------
    QueryError
        For an unknown level.
    """
    selects, conds, params, requested = _build(identifier, level)
    column = {kw: i for i, (kw, _) in enumerate(selects)}
    # Per field (in tag order): its tag and VR, then the index of its column and its Key, or -1 and a constant.
    plan: list[tuple[int, str, int, Key | None, Any]] = []
    for tag, keyword in requested:
        vr = dictionary_VR(tag) if keyword else "UN"
        if keyword == "RetrieveAETitle":
            plan.append((tag, vr, -1, None, retrieve_ae))
        elif keyword == "InstanceAvailability":
            plan.append((tag, vr, -1, None, "ONLINE"))
        elif keyword in column:
            plan.append((tag, vr, column[keyword], selects[column[keyword]][1], None))
        else:
            plan.append((tag, vr, -1, None, [] if vr == "SQ" else None))
    plan.append((_LEVEL_TAG, "CS", -1, None, level))
    plan.sort(key=lambda p: p[0])
    fields = tuple(Field(tag, vr) for tag, vr, *_ in plan)
    getters = [(i, key, const) for _, _, i, key, const in plan]
    return Matches(fields, _rows(conn, level, selects, conds, params, getters, limit))


def _rows(
    conn: sqlite3.Connection,
    level: str,
    selects: list[tuple[str, Key]],
    conds: list[str],
    params: list[Any],
    getters: list[tuple[int, Key | None, Any]],
    limit: int,
) -> Iterator[list[Any]]:
    columns = ", ".join(k.column for _, k in selects) or "1"
    sql = f"SELECT {columns} FROM {_FROM[level]}"
    if conds:
        sql += " WHERE " + " AND ".join(conds)
    sql += f" ORDER BY {_ORDER[level]}"
    if limit:
        sql += f" LIMIT {int(limit)}"
    for row in conn.execute(sql, params):
        yield [_output(key, row[i]) if key is not None else const for i, key, const in getters]


def find(
    conn: sqlite3.Connection, identifier: Dataset, level: str, retrieve_ae: str = "", limit: int = 0
) -> Iterator[Dataset]:
    """Yield one answer data set per matching entity (:func:`find_rows`, as data sets).

    The answers carry no Specific Character Set: the caller chooses it (see :meth:`Answer.charset`).

    Parameters
    ----------
    conn : sqlite3.Connection
        Connection to the index.
    identifier : Dataset
        The C-FIND request identifier (decoded with its Specific Character Set).
    level : str
        PATIENT, STUDY, SERIES or IMAGE.
    retrieve_ae : str
        Our AE title, returned as RetrieveAETitle when asked for.
    limit : int
        Stop after this many answers (0: no limit).

    Raises
    ------
    QueryError
        For an unknown level.
    """
    matches = find_rows(conn, identifier, level, retrieve_ae, limit)
    return (Answer(matches.fields, values, "").dataset(charset=False) for values in matches)


def match_instances(conn: sqlite3.Connection, identifier: Dataset, level: str) -> list[tuple[Any, ...]]:
    """Every instance below the entities a C-MOVE/C-GET identifier names, in one query.

    Each row holds the fields of :class:`appliance.index.StoredInstance`, in its order.

    Raises
    ------
    QueryError
        For an unknown level.
    """
    _, conds, params, _ = _build(identifier, level)
    sql = (
        "SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.path, i.size, s.series_uid, st.study_uid "
        f"FROM {_FROM['IMAGE']}"
    )
    if conds:
        sql += " WHERE " + " AND ".join(conds)
    sql += " ORDER BY st.id, s.id, CAST(i.instance_number AS INTEGER), i.id"
    return [tuple(r) for r in conn.execute(sql, params)]


#: Text VRs whose values decide which character set an answer needs.
_TEXT_VRS = ("PN", "LO", "SH", "ST", "LT", "UT", "UC")


def _text_of(value: Any) -> str:
    return "\\".join(str(v) for v in value) if isinstance(value, MultiValue | list | tuple) else str(value)


def answer_charset(charset: str, answer: Dataset) -> str | list[str]:
    """The Specific Character Set for an answer data set (see :func:`charset_for`).

    Parameters
    ----------
    charset : str
        The character set asked for, backslash-separated for code extensions ('' for the default repertoire).
    answer : Dataset
        The answer, sequences included.

    Returns
    -------
    str or list of str
        The value to put in (0008,0005); '' when the default repertoire will do.
    """
    texts = []
    stack = [answer]
    while stack:
        ds = stack.pop()
        for elem in ds:
            if elem.VR == "SQ":
                stack.extend(elem.value)
            elif elem.VR in _TEXT_VRS and elem.value:
                texts.append(_text_of(elem.value))
    return charset_for(charset, texts)


def charset_for(charset: str, texts: list[str]) -> str | list[str]:
    """The Specific Character Set for an answer's text: the caller's (or item's) when it fits, else UTF-8.

    Parameters
    ----------
    charset : str
        The character set asked for, backslash-separated for code extensions ('' for the default repertoire).
    texts : list of str
        The non-empty values of the answer's text attributes (PN, LO, SH, ST, LT, UT, UC).

    Returns
    -------
    str or list of str
        The value to put in (0008,0005); '' when the default repertoire will do.
    """
    if all(t.isascii() for t in texts):
        return charset.split("\\") if "\\" in charset else charset
    if charset:
        try:
            encoding = convert_encodings(charset.split("\\"))[-1]
            if all(_encodable(t, encoding) for t in texts):
                return charset.split("\\") if "\\" in charset else charset
        except Exception:
            pass
    return "ISO_IR 192"


def _encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True
