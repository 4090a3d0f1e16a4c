"""Finding, listing and deleting stored studies for people (the staff UI), as opposed to C-FIND for machines.

Search rules, chosen for a front desk: text fields (name, patient ID, accession) match from the start and
without regard to case; a leading ``*`` matches anywhere (``*MITH``); ``?`` and ``*`` inside are wildcards.
Names are typed as people read them: ``doe, john``, ``John Doe``, ``DOE^JOHN`` and ``jürgen`` (or ``jurgen``)
all find ``MÜLLER^JÜRGEN``-style names: the parts, split at commas, spaces and ``^``, each match the start of a
part of the name, in any order, without regard to case or accents (as the worklist matches person names).
Dates are ranges of ``YYYYMMDD`` strings, so the index on ``study_date`` serves them.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from appliance.db import Database
from appliance.errors import InvalidValue

#: Sort keys of the study list and their SQL.
SORTS = {
    "date": "st.study_date {0}, st.study_time {0}, st.id {0}",
    "name": "p.patient_name_key {0}, st.study_date DESC",
    "patient_id": "p.patient_id {0}, st.study_date DESC",
    "accession": "st.accession {0}, st.study_date DESC",
    "modality": "st.modalities {0}, st.study_date DESC",
    "description": "st.description {0}, st.study_date DESC",
    "images": "st.num_instances {0}, st.study_date DESC",
    "received": "st.updated {0}",
}
#: Named date ranges of the search form.
PERIODS = ("any", "today", "yesterday", "week", "month", "year", "exact", "range")
_DATE_RE = re.compile(r"^\d{8}$")


def _glob_escape(text: str) -> str:
    """Escape GLOB metacharacters other than ``*`` and ``?`` (typed wildcards stay wildcards)."""
    return re.sub(r"([\[\]])", r"[\1]", text)


def text_pattern(value: str) -> str:
    """A GLOB pattern for a typed search text: prefix match, or anywhere with a leading ``*``."""
    value = value.strip()
    if not value:
        return ""
    return _glob_escape(value) + ("" if value.endswith("*") else "*")


def _fold(text: str) -> str:
    """Case- and accent-free form of a name part (``Jürgen`` -> ``jurgen``)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def name_parts(text: str) -> list[str]:
    """The parts of a typed or stored name: split at commas, spaces, ``^`` and ``=`` (PN groups), folded."""
    return [_fold(part) for part in re.split(r"[,\s^=]+", text) if part]


def name_matches(stored: str, typed: str) -> bool:
    """Whether every typed part matches the start of some part of the stored name (``*`` and ``?`` allowed)."""
    have = name_parts(stored)
    for part in name_parts(typed):
        pattern = part if part.endswith("*") else part + "*"
        if not any(fnmatch.fnmatchcase(candidate, pattern) for candidate in have):
            return False
    return True


def parse_date(value: str, what: str) -> str:
    """A typed date (``YYYYMMDD`` or ``YYYY-MM-DD``) as DA.

    Raises
    ------
    InvalidValue
        If it is no valid date.
    """
    text = value.strip().replace("-", "").replace(".", "")
    if not _DATE_RE.match(text):
        raise InvalidValue(f"{what} {value!r} is not a date: use YYYY-MM-DD")
    try:
        dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise InvalidValue(f"{what} {value!r} is not a date") from None
    return text


def period_range(period: str, today: dt.date, exact: str = "", start: str = "", end: str = "") -> tuple[str, str]:
    """The (from, to) Study Date bounds of a named period; empty strings mean open.

    ``week``, ``month`` and ``year`` are the last 7, 31 and 365 days, today included.

    Raises
    ------
    InvalidValue
        For an unknown period or a bad date.
    """
    da = "%Y%m%d"
    if period in ("", "any"):
        return "", ""
    if period == "today":
        return today.strftime(da), today.strftime(da)
    if period == "yesterday":
        day = (today - dt.timedelta(days=1)).strftime(da)
        return day, day
    if period in ("week", "month", "year"):
        days = {"week": 6, "month": 30, "year": 364}[period]
        return (today - dt.timedelta(days=days)).strftime(da), today.strftime(da)
    if period == "exact":
        day = parse_date(exact, "study date")
        return day, day
    if period == "range":
        low = parse_date(start, "start date") if start.strip() else ""
        high = parse_date(end, "end date") if end.strip() else ""
        if low and high and low > high:
            raise InvalidValue("the start date is after the end date")
        return low, high
    raise InvalidValue(f"unknown date period {period!r}")


@dataclass
class StudyQuery:
    """What the staff typed in the search form."""

    name: str = ""
    patient_id: str = ""
    accession: str = ""
    modality: str = ""
    date_from: str = ""
    date_to: str = ""
    birth_date: str = ""
    sort: str = "date"
    descending: bool = True
    page: int = 1
    per_page: int = 25


@dataclass
class StudyPage:
    """One page of search results."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    page: int = 1
    pages: int = 1


class Catalog:
    """Study search and deletion over the index.

    Parameters
    ----------
    db : Database
        The appliance database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def search(self, q: StudyQuery) -> StudyPage:
        """Studies matching ``q``, one page of them, with the patient's name, ID and birth date.

        Raises
        ------
        InvalidValue
            For an unknown sort key.
        """
        if q.sort not in SORTS:
            raise InvalidValue(f"cannot sort by {q.sort!r}")
        where: list[str] = []
        args: list[Any] = []
        if name_parts(q.name):
            # Matched in Python (accents, any order of parts): SQLite has no accent folding of its own.
            self.db.conn.create_function("name_matches", 2, name_matches, deterministic=True)
            where.append("name_matches(p.patient_name, ?)")
            args.append(q.name)
        for column, value in (("p.patient_id", q.patient_id), ("st.accession", q.accession)):
            pattern = text_pattern(value)
            if pattern:
                # IDs are matched without regard to case: staff type them as they read them.
                where.append(f"UPPER({column}) GLOB ?")
                args.append(pattern.upper())
        if q.modality.strip():
            where.append("('\\' || st.modalities || '\\') LIKE ?")
            args.append(f"%\\{q.modality.strip().upper()}\\%")
        if q.date_from:
            where.append("st.study_date >= ?")
            args.append(q.date_from)
        if q.date_to:
            where.append("st.study_date <= ?")
            args.append(q.date_to)
        if q.birth_date:
            where.append("p.birth_date = ?")
            args.append(q.birth_date)
        sql_from = " FROM studies st JOIN patients p ON p.id = st.patient_fk" + (
            " WHERE " + " AND ".join(where) if where else ""
        )
        conn = self.db.conn
        total = int(conn.execute("SELECT COUNT(*)" + sql_from, args).fetchone()[0])
        per_page = max(1, min(q.per_page, 200))
        pages = max(1, -(-total // per_page))
        page = max(1, min(q.page, pages))
        order = SORTS[q.sort].format("DESC" if q.descending else "ASC")
        rows = conn.execute(
            "SELECT st.study_uid, st.study_date, st.study_time, st.accession, st.description, st.modalities,"
            " st.num_series, st.num_instances, st.size, p.patient_id, p.patient_name, p.birth_date, p.sex"
            + sql_from
            + f" ORDER BY {order} LIMIT ? OFFSET ?",
            (*args, per_page, (page - 1) * per_page),
        ).fetchall()
        return StudyPage([dict(r) for r in rows], total, page, pages)

    def series(self, study_uid: str) -> list[dict[str, Any]]:
        """The series of a study with their counts and a representative (middle) instance for the thumbnail."""
        rows = self.db.conn.execute(
            "SELECT s.id, s.series_uid, s.modality, s.series_number, s.description, s.body_part, s.num_instances"
            " FROM series s JOIN studies st ON st.id = s.study_fk WHERE st.study_uid = ?"
            " ORDER BY CAST(s.series_number AS INTEGER), s.id",
            (study_uid,),
        ).fetchall()
        return [dict(r) for r in rows]

    def series_info(self, series_uid: str) -> dict[str, Any] | None:
        """A series with its study UID, or None."""
        row = self.db.conn.execute(
            "SELECT s.*, st.study_uid FROM series s JOIN studies st ON st.id = s.study_fk WHERE s.series_uid = ?",
            (series_uid,),
        ).fetchone()
        return dict(row) if row else None

    def instances(self, series_uid: str) -> list[dict[str, Any]]:
        """The instances of a series in instance-number order: SOP Instance UID, number, frames, path."""
        rows = self.db.conn.execute(
            "SELECT i.sop_uid, i.instance_number, i.frames, i.path, i.sop_class_uid FROM instances i"
            " JOIN series s ON s.id = i.series_fk WHERE s.series_uid = ?"
            " ORDER BY CAST(i.instance_number AS INTEGER), i.id",
            (series_uid,),
        ).fetchall()
        return [dict(r) for r in rows]

    def instance(self, sop_uid: str) -> dict[str, Any] | None:
        """An instance with its series and study UIDs, or None."""
        row = self.db.conn.execute(
            "SELECT i.sop_uid, i.path, i.instance_number, s.series_uid, st.study_uid FROM instances i"
            " JOIN series s ON s.id = i.series_fk JOIN studies st ON st.id = s.study_fk WHERE i.sop_uid = ?",
            (sop_uid,),
        ).fetchone()
        return dict(row) if row else None
