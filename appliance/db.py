"""The SQLite database: connections, transactions and schema migrations.

One file holds the index, and later the jobs, worklist and logs. Each thread gets
its own connection (SQLite connections are not shared across threads); WAL mode
lets readers (C-FIND, the web UI) run while a writer commits, and
``synchronous=FULL`` makes a committed transaction survive a power cut, which the
store relies on before it acknowledges an instance.

Schema changes are numbered migrations applied in order under ``PRAGMA
user_version``; each runs in one transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

PATIENTS = "patients"
STUDIES = "studies"
SERIES = "series"
INSTANCES = "instances"


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute ``;``-separated DDL statements inside the caller's transaction.

    ``executescript`` would commit the open transaction first, which breaks the
    all-or-nothing promise of a migration.
    """
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _m1_index(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        CREATE TABLE patients (
            id INTEGER PRIMARY KEY,
            patient_id TEXT NOT NULL,
            issuer TEXT NOT NULL DEFAULT '',
            patient_name TEXT NOT NULL DEFAULT '',
            patient_name_key TEXT NOT NULL DEFAULT '',
            birth_date TEXT NOT NULL DEFAULT '',
            sex TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL,
            UNIQUE (patient_id, issuer)
        );
        CREATE INDEX patients_name ON patients (patient_name_key);
        CREATE INDEX patients_birth ON patients (birth_date);
        CREATE TABLE studies (
            id INTEGER PRIMARY KEY,
            patient_fk INTEGER NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
            study_uid TEXT NOT NULL UNIQUE,
            study_date TEXT NOT NULL DEFAULT '',
            study_time TEXT NOT NULL DEFAULT '',
            accession TEXT NOT NULL DEFAULT '',
            study_id TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL DEFAULT '',
            referring TEXT NOT NULL DEFAULT '',
            referring_key TEXT NOT NULL DEFAULT '',
            modalities TEXT NOT NULL DEFAULT '',
            num_series INTEGER NOT NULL DEFAULT 0,
            num_instances INTEGER NOT NULL DEFAULT 0,
            size INTEGER NOT NULL DEFAULT 0,
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        );
        CREATE INDEX studies_patient ON studies (patient_fk);
        CREATE INDEX studies_date ON studies (study_date, study_time);
        CREATE INDEX studies_accession ON studies (accession);
        CREATE TABLE series (
            id INTEGER PRIMARY KEY,
            study_fk INTEGER NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
            series_uid TEXT NOT NULL UNIQUE,
            modality TEXT NOT NULL DEFAULT '',
            series_number TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL DEFAULT '',
            body_part TEXT NOT NULL DEFAULT '',
            series_date TEXT NOT NULL DEFAULT '',
            series_time TEXT NOT NULL DEFAULT '',
            num_instances INTEGER NOT NULL DEFAULT 0,
            created TEXT NOT NULL
        );
        CREATE INDEX series_study ON series (study_fk);
        CREATE TABLE instances (
            id INTEGER PRIMARY KEY,
            series_fk INTEGER NOT NULL REFERENCES series (id) ON DELETE CASCADE,
            sop_uid TEXT NOT NULL UNIQUE,
            sop_class_uid TEXT NOT NULL,
            instance_number TEXT NOT NULL DEFAULT '',
            transfer_syntax TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            frames INTEGER NOT NULL DEFAULT 1,
            calling_ae TEXT NOT NULL DEFAULT '',
            called_ae TEXT NOT NULL DEFAULT '',
            received TEXT NOT NULL
        );
        CREATE INDEX instances_series ON instances (series_fk);
        """
    )


#: Ordered schema migrations; entry ``n`` brings the schema to version ``n + 1``.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m1_index]


class Database:
    """The appliance's SQLite file, with one connection per thread.

    Parameters
    ----------
    path : Path
        The database file; created with the schema when missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a block as one write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``).

        Taking the write lock at ``BEGIN`` avoids the deadlock-prone upgrade from a
        read to a write lock when several associations store at once.
        """
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def migrate(self) -> None:
        """Bring the schema to the newest version."""
        conn = self.conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                step(conn)
                conn.execute(f"PRAGMA user_version={number}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection opened through this object."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
