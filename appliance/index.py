"""The SQLite index of stored instances: patient, study, series, instance.

:func:`extract` pulls the attributes C-FIND needs out of a data set;
:meth:`Index.record` writes them in one transaction, keeping the per-study and
per-series counters that C-FIND answers as NumberOfStudyRelated... without a
count over millions of rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset

from appliance.db import Database
from appliance.errors import InvalidDataset


def norm_date(value: str) -> str:
    """DA as ``YYYYMMDD`` (old ACR-NEMA ``YYYY.MM.DD`` accepted)."""
    return value.replace(".", "").strip()


def norm_time(value: str) -> str:
    """TM as ``HHMMSS.FFFFFF``, zero-padded, so that string order is time order."""
    value = value.replace(":", "").strip()
    if not value:
        return ""
    whole, _, frac = value.partition(".")
    return (whole + "000000")[:6] + "." + (frac + "000000")[:6]


def pn_key(value: str) -> str:
    """Case-folded form of a person name, for case-insensitive PN matching."""
    return value.upper()


def _text(ds: Dataset, keyword: str) -> str:
    """A string attribute as text ('' when absent); multiple values joined by backslash."""
    elem = ds.get(keyword)
    if elem is None or elem is ...:
        return ""
    if isinstance(elem, (list, tuple)) or type(elem).__name__ == "MultiValue":
        return "\\".join(str(v) for v in elem)
    return str(elem).strip()


@dataclass(frozen=True)
class InstanceRecord:
    """What the index keeps of one received instance."""

    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    study_uid: str
    study_date: str
    study_time: str
    accession: str
    study_id: str
    study_description: str
    referring: str
    series_uid: str
    modality: str
    series_number: str
    series_description: str
    body_part: str
    series_date: str
    series_time: str
    sop_uid: str
    sop_class_uid: str
    instance_number: str
    frames: int


def build_record(text: Callable[[str], str]) -> InstanceRecord:
    """Make the record from ``text(keyword)``, the indexed attributes as :func:`extract` reads them.

    Shared by :func:`extract` (values from a pydicom data set) and :func:`appliance.scan.instance_record`
    (values read from the raw bytes), so both give the same record.

    Raises
    ------
    InvalidDataset
        When Study, Series or SOP Instance UID is missing.
    """
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID") if not text(k)]
    if missing:
        raise InvalidDataset(f"data set has no {', '.join(missing)}")
    frames_text = text("NumberOfFrames")
    return InstanceRecord(
        patient_id=text("PatientID"),
        issuer=text("IssuerOfPatientID"),
        patient_name=text("PatientName"),
        birth_date=norm_date(text("PatientBirthDate")),
        sex=text("PatientSex"),
        study_uid=text("StudyInstanceUID"),
        study_date=norm_date(text("StudyDate")),
        study_time=norm_time(text("StudyTime")),
        accession=text("AccessionNumber"),
        study_id=text("StudyID"),
        study_description=text("StudyDescription"),
        referring=text("ReferringPhysicianName"),
        series_uid=text("SeriesInstanceUID"),
        modality=text("Modality"),
        series_number=text("SeriesNumber"),
        series_description=text("SeriesDescription"),
        body_part=text("BodyPartExamined"),
        series_date=norm_date(text("SeriesDate")),
        series_time=norm_time(text("SeriesTime")),
        sop_uid=text("SOPInstanceUID"),
        sop_class_uid=text("SOPClassUID"),
        instance_number=text("InstanceNumber"),
        frames=int(frames_text) if frames_text.isdigit() else 1,
    )


def text_value(ds: Dataset, keyword: str) -> str:
    """One indexed attribute of a pydicom data set as :func:`extract` reads it ('' when absent)."""
    return _text(ds, keyword)


def extract(ds: Dataset) -> InstanceRecord:
    """Read the indexed attributes of a data set.

    Raises
    ------
    InvalidDataset
        When Study, Series or SOP Instance UID is missing, or a value cannot be decoded.
    """
    try:
        return build_record(lambda keyword: _text(ds, keyword))
    except InvalidDataset:
        raise
    except Exception as exc:  # pydicom raises many types on corrupt values
        raise InvalidDataset(f"data set cannot be decoded: {exc}") from exc


@dataclass(frozen=True)
class StoredInstance:
    """An instance as the index knows it."""

    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: str
    size: int
    series_uid: str
    study_uid: str


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Index:
    """Patient/study/series/instance tables in the appliance database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def lookup(self, sop_uid: str) -> StoredInstance | None:
        """Return the stored instance with this SOP Instance UID, if any."""
        row = self.db.conn.execute(
            "SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.path, i.size, s.series_uid, st.study_uid "
            "FROM instances i JOIN series s ON s.id = i.series_fk JOIN studies st ON st.id = s.study_fk "
            "WHERE i.sop_uid = ?",
            (sop_uid,),
        ).fetchone()
        return StoredInstance(*row) if row else None

    def record(
        self,
        rec: InstanceRecord,
        transfer_syntax: str,
        path: str,
        size: int,
        calling_ae: str = "",
        called_ae: str = "",
    ) -> str | None:
        """Index an instance in one transaction.

        Returns
        -------
        str or None
            The store path of the instance this one replaced (to delete after the
            commit), or None when it is new.
        """
        with self.db.transaction() as conn:
            return self._record(conn, _now(), rec, transfer_syntax, path, size, calling_ae, called_ae)

    def record_many(self, entries: Sequence[tuple[InstanceRecord, str, str, int, str, str]]) -> list[str | None]:
        """Index several instances in one transaction (one commit, one flush of the database for all).

        Parameters
        ----------
        entries : sequence of (record, transfer syntax, path, size, calling AE, called AE)
            As the arguments of :meth:`record`; an instance may replace one recorded earlier in the sequence.

        Returns
        -------
        list of str or None
            For each entry, the store path of the instance it replaced, or None.
        """
        now = _now()
        with self.db.transaction() as conn:
            return [self._record(conn, now, *entry) for entry in entries]

    def _record(
        self,
        conn: sqlite3.Connection,
        now: str,
        rec: InstanceRecord,
        transfer_syntax: str,
        path: str,
        size: int,
        calling_ae: str,
        called_ae: str,
    ) -> str | None:
        patient_fk = conn.execute(
            "INSERT INTO patients (patient_id, issuer, patient_name, patient_name_key, birth_date, sex, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (patient_id, issuer) DO UPDATE SET"
            " patient_name = excluded.patient_name, patient_name_key = excluded.patient_name_key,"
            " birth_date = excluded.birth_date, sex = excluded.sex RETURNING id",
            (rec.patient_id, rec.issuer, rec.patient_name, pn_key(rec.patient_name), rec.birth_date, rec.sex, now),
        ).fetchone()[0]
        study_fk = conn.execute(
            "INSERT INTO studies (patient_fk, study_uid, study_date, study_time, accession, study_id,"
            " description, referring, referring_key, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (study_uid) DO UPDATE SET updated = excluded.updated RETURNING id",
            (
                patient_fk,
                rec.study_uid,
                rec.study_date,
                rec.study_time,
                rec.accession,
                rec.study_id,
                rec.study_description,
                rec.referring,
                pn_key(rec.referring),
                now,
                now,
            ),
        ).fetchone()[0]
        series_row = conn.execute("SELECT id, study_fk FROM series WHERE series_uid = ?", (rec.series_uid,)).fetchone()
        if series_row is None:
            series_fk = conn.execute(
                "INSERT INTO series (study_fk, series_uid, modality, series_number, description, body_part,"
                " series_date, series_time, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    study_fk,
                    rec.series_uid,
                    rec.modality,
                    rec.series_number,
                    rec.series_description,
                    rec.body_part,
                    rec.series_date,
                    rec.series_time,
                    now,
                ),
            ).fetchone()[0]
            conn.execute("UPDATE studies SET num_series = num_series + 1 WHERE id = ?", (study_fk,))
            self._update_modalities(conn, study_fk)
        else:
            series_fk = series_row[0]
        old = conn.execute(
            "SELECT id, series_fk, path, size FROM instances WHERE sop_uid = ?", (rec.sop_uid,)
        ).fetchone()
        if old is not None:
            # Overwrite: drop the old row and its counters, then insert afresh.
            conn.execute("DELETE FROM instances WHERE id = ?", (old["id"],))
            self._count(conn, old["series_fk"], -1, -old["size"])
        conn.execute(
            "INSERT INTO instances (series_fk, sop_uid, sop_class_uid, instance_number, transfer_syntax, path,"
            " size, frames, calling_ae, called_ae, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                series_fk,
                rec.sop_uid,
                rec.sop_class_uid,
                rec.instance_number,
                transfer_syntax,
                path,
                size,
                rec.frames,
                calling_ae,
                called_ae,
                now,
            ),
        )
        self._count(conn, series_fk, 1, size)
        return old["path"] if old is not None else None

    @staticmethod
    def _count(conn: sqlite3.Connection, series_fk: int, delta: int, size: int) -> None:
        conn.execute("UPDATE series SET num_instances = num_instances + ? WHERE id = ?", (delta, series_fk))
        conn.execute(
            "UPDATE studies SET num_instances = num_instances + ?, size = size + ?"
            " WHERE id = (SELECT study_fk FROM series WHERE id = ?)",
            (delta, size, series_fk),
        )

    @staticmethod
    def _update_modalities(conn: sqlite3.Connection, study_fk: int) -> None:
        mods = sorted(
            {r[0] for r in conn.execute("SELECT modality FROM series WHERE study_fk = ?", (study_fk,)) if r[0]}
        )
        conn.execute("UPDATE studies SET modalities = ? WHERE id = ?", ("\\".join(mods), study_fk))

    def remove_paths(self, paths: Iterable[str]) -> int:
        """Drop index rows whose files are gone; return how many were dropped."""
        dropped = 0
        with self.db.transaction() as conn:
            for path in paths:
                row = conn.execute("SELECT id, series_fk, size FROM instances WHERE path = ?", (path,)).fetchone()
                if row is None:
                    continue
                conn.execute("DELETE FROM instances WHERE id = ?", (row["id"],))
                self._count(conn, row["series_fk"], -1, -row["size"])
                dropped += 1
            self._prune(conn)
        return dropped

    def delete_series(
        self,
        series_uid: str,
        in_transaction: Callable[[sqlite3.Connection, list[StoredInstance]], None],
    ) -> list[StoredInstance]:
        """Drop a series' rows in one transaction; ``in_transaction`` writes what must commit with them.

        Returns
        -------
        list of StoredInstance
            The instances whose rows were dropped (their files are the caller's to remove).
        """
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.path, i.size, s.series_uid, st.study_uid "
                "FROM instances i JOIN series s ON s.id = i.series_fk JOIN studies st ON st.id = s.study_fk "
                "WHERE s.series_uid = ?",
                (series_uid,),
            ).fetchall()
            instances = [StoredInstance(*r) for r in rows]
            if not instances:
                return []
            in_transaction(conn, instances)
            series_fk = conn.execute("SELECT id FROM series WHERE series_uid = ?", (series_uid,)).fetchone()[0]
            conn.execute("DELETE FROM instances WHERE series_fk = ?", (series_fk,))
            self._count(conn, series_fk, -len(instances), -sum(i.size for i in instances))
            conn.execute("UPDATE series SET num_instances = 0 WHERE id = ?", (series_fk,))
            self._prune(conn)
        return instances

    def replace_files(self, changes: Sequence[tuple[str, str, str, str, int]]) -> list[bool]:
        """Point instances at new files of the same instances (archiving), in one transaction.

        Parameters
        ----------
        changes : sequence of (sop_uid, old_path, new_path, transfer_syntax, size)
            One per instance.

        Returns
        -------
        list of bool
            Per change, False when the instance's row no longer names ``old_path`` (replaced or deleted meanwhile).
        """
        done = []
        with self.db.transaction() as conn:
            for sop_uid, old_path, new_path, transfer_syntax, size in changes:
                row = conn.execute(
                    "SELECT id, series_fk, size FROM instances WHERE sop_uid = ? AND path = ?", (sop_uid, old_path)
                ).fetchone()
                if row is None:
                    done.append(False)
                    continue
                conn.execute(
                    "UPDATE instances SET path = ?, transfer_syntax = ?, size = ? WHERE id = ?",
                    (new_path, transfer_syntax, size, row["id"]),
                )
                self._count(conn, row["series_fk"], 0, size - row["size"])
                done.append(True)
        return done

    @staticmethod
    def _prune(conn: sqlite3.Connection) -> None:
        """Remove series, studies and patients left without instances."""
        emptied = [r[0] for r in conn.execute("SELECT study_fk FROM series WHERE num_instances <= 0")]
        conn.execute("DELETE FROM series WHERE num_instances <= 0")
        for study_fk in set(emptied):
            conn.execute(
                "UPDATE studies SET num_series = (SELECT COUNT(*) FROM series WHERE study_fk = ?) WHERE id = ?",
                (study_fk, study_fk),
            )
            Index._update_modalities(conn, study_fk)
        conn.execute("DELETE FROM studies WHERE num_instances <= 0")
        conn.execute("DELETE FROM patients WHERE id NOT IN (SELECT patient_fk FROM studies)")

    def all_paths(self) -> set[str]:
        """Every indexed file path."""
        return {r[0] for r in self.db.conn.execute("SELECT path FROM instances")}

    def instances_of(self, level: str, uid: str) -> list[StoredInstance]:
        """Instances of a study, series or single instance (``level`` STUDY/SERIES/IMAGE)."""
        column = {"STUDY": "st.study_uid", "SERIES": "s.series_uid", "IMAGE": "i.sop_uid"}[level]
        rows = self.db.conn.execute(
            "SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.path, i.size, s.series_uid, st.study_uid "
            "FROM instances i JOIN series s ON s.id = i.series_fk JOIN studies st ON st.id = s.study_fk "
            f"WHERE {column} = ? ORDER BY s.id, CAST(i.instance_number AS INTEGER), i.id",
            (uid,),
        ).fetchall()
        return [StoredInstance(*r) for r in rows]

    def holds(self, level: str, uid: str) -> bool:
        """Whether a patient (by Patient ID), study, series or instance (``level`` PATIENT/STUDY/SERIES/IMAGE) is
        held here."""
        table, column = {
            "PATIENT": ("patients", "patient_id"),
            "STUDY": ("studies", "study_uid"),
            "SERIES": ("series", "series_uid"),
            "IMAGE": ("instances", "sop_uid"),
        }[level]
        return self.db.conn.execute(f"SELECT 1 FROM {table} WHERE {column} = ? LIMIT 1", (uid,)).fetchone() is not None

    def study(self, study_uid: str) -> dict[str, Any] | None:
        """A study joined with its patient, as a dict, or None."""
        row = self.db.conn.execute(
            "SELECT p.patient_id, p.patient_name, p.birth_date, p.sex, st.* FROM studies st "
            "JOIN patients p ON p.id = st.patient_fk WHERE st.study_uid = ?",
            (study_uid,),
        ).fetchone()
        return dict(row) if row else None

    def counts(self) -> dict[str, int]:
        """Number of patients, studies, series and instances."""
        conn = self.db.conn
        return {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("patients", "studies", "series", "instances")
        }
