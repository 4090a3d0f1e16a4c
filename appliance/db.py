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

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.errors import DatabaseError

PATIENTS = "patients"
STUDIES = "studies"
SERIES = "series"
INSTANCES = "instances"
WORKLIST = "worklist_items"
MERGED_PATIENTS = "merged_patients"
MPPS = "mpps"
HL7_MESSAGES = "hl7_messages"
TOKENS = "tokens"
USERS = "users"
DICOM_NODES = "dicom_nodes"
AUDIT_LOG = "audit_log"
DISC_JOBS = "disc_jobs"
DISC_JOB_EVENTS = "disc_job_events"
DISC_JOB_INSTANCES = "disc_job_instances"
DISC_JOB_DISCS = "disc_job_discs"
BURN_GROUPS = "burn_groups"
BURN_GROUP_INSTANCES = "burn_group_instances"
STORAGES = "storages"
MAINTENANCE_TASKS = "maintenance_tasks"
MAINTENANCE_ITEMS = "maintenance_items"
DELETION_JOURNAL = "deletion_journal"
EMAIL_QUEUE = "email_queue"
PATIENT_SESSIONS = "patient_sessions"
OUTBOX = "outbox"
OUTBOX_CURSORS = "outbox_cursors"
AMQP_MESSAGES = "amqp_messages"


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute ``;``-separated DDL statements inside the caller's transaction.

    ``executescript`` would commit the open transaction first, which breaks the
    all-or-nothing promise of a migration.
    """
    statement = ""
    for part in script.split(";"):
        statement += part + ";"
        # A trigger body holds ';' of its own: run a statement only once SQLite sees it complete.
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                conn.execute(statement)
            statement = ""


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
        """,
    )


def _m2_worklist(conn: sqlite3.Connection) -> None:
    # One row per scheduled procedure step: the columns hold the matching keys,
    # ``attrs`` the whole MWL item as JSON (DICOM keyword -> value).
    run_script(
        conn,
        """
        CREATE TABLE worklist_items (
            id INTEGER PRIMARY KEY,
            study_uid TEXT NOT NULL,
            sps_id TEXT NOT NULL,
            patient_id TEXT NOT NULL,
            issuer TEXT NOT NULL DEFAULT '',
            patient_name TEXT NOT NULL DEFAULT '',
            patient_name_key TEXT NOT NULL DEFAULT '',
            birth_date TEXT NOT NULL DEFAULT '',
            accession TEXT NOT NULL DEFAULT '',
            rp_id TEXT NOT NULL DEFAULT '',
            modality TEXT NOT NULL DEFAULT '',
            station_aet TEXT NOT NULL DEFAULT '',
            start_date TEXT NOT NULL DEFAULT '',
            start_time TEXT NOT NULL DEFAULT '',
            performing_key TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            charset TEXT NOT NULL DEFAULT '',
            attrs TEXT NOT NULL,
            source TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            UNIQUE (study_uid, sps_id)
        );
        CREATE INDEX worklist_start ON worklist_items (start_date, start_time);
        CREATE INDEX worklist_station ON worklist_items (station_aet, start_date);
        CREATE INDEX worklist_patient ON worklist_items (patient_id);
        CREATE INDEX worklist_accession ON worklist_items (accession);
        CREATE INDEX worklist_status ON worklist_items (status);
        CREATE TABLE merged_patients (
            patient_id TEXT NOT NULL,
            issuer TEXT NOT NULL DEFAULT '',
            merged_into TEXT NOT NULL,
            merged_into_issuer TEXT NOT NULL DEFAULT '',
            merged TEXT NOT NULL,
            PRIMARY KEY (patient_id, issuer)
        );
        CREATE TABLE mpps (
            sop_uid TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            calling_ae TEXT NOT NULL DEFAULT '',
            steps TEXT NOT NULL,
            attrs TEXT NOT NULL,
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        );
        CREATE TABLE hl7_messages (
            id INTEGER PRIMARY KEY,
            received TEXT NOT NULL,
            peer TEXT NOT NULL DEFAULT '',
            message_type TEXT NOT NULL DEFAULT '',
            control_id TEXT NOT NULL DEFAULT '',
            ack_code TEXT NOT NULL DEFAULT '',
            error TEXT NOT NULL DEFAULT '',
            message BLOB NOT NULL,
            ack TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX hl7_messages_received ON hl7_messages (received);
        """,
    )


def _m_web(conn: sqlite3.Connection) -> None:
    # Patient tokens (only a hash of each; see appliance/site/tokens.py), staff users, DICOM nodes added in the
    # staff UI (the config file's nodes are not copied here), and the append-only audit log of the web site.
    run_script(
        conn,
        """
        CREATE TABLE tokens (
            id INTEGER PRIMARY KEY,
            study_uid TEXT NOT NULL UNIQUE,
            token_hash TEXT NOT NULL UNIQUE,
            seed TEXT NOT NULL,
            created TEXT NOT NULL,
            valid_until TEXT NOT NULL,
            revoked TEXT NOT NULL DEFAULT '',
            last_access TEXT NOT NULL DEFAULT '',
            accesses INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX tokens_valid_until ON tokens (valid_until);
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL,
            created TEXT NOT NULL,
            last_login TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE dicom_nodes (
            ae_title TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            port INTEGER NOT NULL,
            tls INTEGER NOT NULL DEFAULT 0,
            description TEXT NOT NULL DEFAULT '',
            store INTEGER NOT NULL DEFAULT 1,
            find INTEGER NOT NULL DEFAULT 1,
            move INTEGER NOT NULL DEFAULT 1,
            get INTEGER NOT NULL DEFAULT 1,
            mwl INTEGER NOT NULL DEFAULT 1,
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        );
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            actor TEXT NOT NULL DEFAULT '',
            address TEXT NOT NULL DEFAULT '',
            user_agent TEXT NOT NULL DEFAULT '',
            action TEXT NOT NULL,
            study_uid TEXT NOT NULL DEFAULT '',
            token_id INTEGER,
            detail TEXT NOT NULL DEFAULT '',
            outcome TEXT NOT NULL DEFAULT 'success'
        );
        CREATE INDEX audit_log_study ON audit_log (study_uid, time);
        CREATE INDEX audit_log_time ON audit_log (time)
        """,
    )
    # Trigger bodies hold ';', which run_script would split: one statement each.
    for verb in ("UPDATE", "DELETE"):
        conn.execute(
            f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
            "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        )


def _m_disc_publishing(conn: sqlite3.Connection) -> None:
    # Disc jobs with their state history, content (SOP Instance UIDs) and discs (one robot ticket each), and the
    # pending delayed groups of _TE/_TP AE titles with their absolute due time, so a restart resumes them.
    run_script(
        conn,
        """
        CREATE TABLE disc_jobs (
            id INTEGER PRIMARY KEY,
            state TEXT NOT NULL,
            robot TEXT NOT NULL,
            copies INTEGER NOT NULL,
            source TEXT NOT NULL,
            called_ae TEXT NOT NULL DEFAULT '',
            parent_id INTEGER REFERENCES disc_jobs (id),
            patient_id TEXT NOT NULL DEFAULT '',
            patient_name TEXT NOT NULL DEFAULT '',
            studies TEXT NOT NULL DEFAULT '',
            instances INTEGER NOT NULL DEFAULT 0,
            media TEXT NOT NULL DEFAULT '',
            disc_count INTEGER NOT NULL DEFAULT 0,
            size INTEGER NOT NULL DEFAULT 0,
            attempt INTEGER NOT NULL DEFAULT 1,
            error TEXT NOT NULL DEFAULT '',
            message TEXT NOT NULL DEFAULT '',
            needs_staff INTEGER NOT NULL DEFAULT 0,
            purged TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        );
        CREATE INDEX disc_jobs_state ON disc_jobs (state, id);
        CREATE TABLE disc_job_events (
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL REFERENCES disc_jobs (id) ON DELETE CASCADE,
            at TEXT NOT NULL,
            from_state TEXT NOT NULL DEFAULT '',
            to_state TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX disc_job_events_job ON disc_job_events (job_id, id);
        CREATE TABLE disc_job_instances (
            job_id INTEGER NOT NULL REFERENCES disc_jobs (id) ON DELETE CASCADE,
            sop_uid TEXT NOT NULL,
            PRIMARY KEY (job_id, sop_uid)
        ) WITHOUT ROWID;
        CREATE TABLE disc_job_discs (
            job_id INTEGER NOT NULL REFERENCES disc_jobs (id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            media TEXT NOT NULL,
            size INTEGER NOT NULL DEFAULT 0,
            volume TEXT NOT NULL DEFAULT '',
            robot_job_id TEXT NOT NULL DEFAULT '',
            ticket TEXT NOT NULL DEFAULT '',
            submitting INTEGER NOT NULL DEFAULT 0,
            robot_state TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '',
            error_code TEXT NOT NULL DEFAULT '',
            needs_staff INTEGER NOT NULL DEFAULT 0,
            files TEXT NOT NULL DEFAULT '{}',
            updated TEXT NOT NULL,
            PRIMARY KEY (job_id, number)
        );
        CREATE TABLE burn_groups (
            id INTEGER PRIMARY KEY,
            robot TEXT NOT NULL,
            group_key TEXT NOT NULL,
            called_ae TEXT NOT NULL DEFAULT '',
            copies INTEGER NOT NULL DEFAULT 1,
            patient_id TEXT NOT NULL DEFAULT '',
            patient_name TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL,
            created TEXT NOT NULL,
            last_at REAL NOT NULL,
            due REAL NOT NULL,
            job_id INTEGER REFERENCES disc_jobs (id)
        );
        CREATE UNIQUE INDEX burn_groups_pending ON burn_groups (robot, group_key) WHERE state = 'pending';
        CREATE INDEX burn_groups_due ON burn_groups (state, due);
        CREATE TABLE burn_group_instances (
            group_id INTEGER NOT NULL REFERENCES burn_groups (id) ON DELETE CASCADE,
            sop_uid TEXT NOT NULL,
            PRIMARY KEY (group_id, sop_uid)
        ) WITHOUT ROWID
        """,
    )


def _m_forwarding(conn: sqlite3.Connection) -> None:
    # One row per instance to forward to the regional PACS, filled by a trigger in the transaction that indexes
    # the instance (only while forwarding is enabled), so a crash cannot lose a queued instance.
    run_script(
        conn,
        """
        CREATE TABLE forward_settings (id INTEGER PRIMARY KEY CHECK (id = 1), enabled INTEGER NOT NULL);
        INSERT INTO forward_settings VALUES (1, 0);
        CREATE TABLE forward_instances (
            sop_uid TEXT PRIMARY KEY,
            series_uid TEXT NOT NULL,
            study_uid TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'queued',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_try REAL NOT NULL DEFAULT 0,
            transaction_uid TEXT NOT NULL DEFAULT '',
            queued_at REAL NOT NULL,
            sent_at REAL,
            committed_at REAL,
            error TEXT NOT NULL DEFAULT ''
        ) WITHOUT ROWID;
        CREATE INDEX forward_waiting ON forward_instances (state, next_try);
        CREATE INDEX forward_series ON forward_instances (series_uid);
        CREATE INDEX forward_transaction ON forward_instances (transaction_uid);
        CREATE TRIGGER forward_queue_instance AFTER INSERT ON instances
        WHEN (SELECT enabled FROM forward_settings WHERE id = 1) = 1
        BEGIN
            INSERT INTO forward_instances (sop_uid, series_uid, study_uid, queued_at)
            SELECT NEW.sop_uid, s.series_uid, st.study_uid, (julianday('now') - 2440587.5) * 86400.0
            FROM series s JOIN studies st ON st.id = s.study_fk WHERE s.id = NEW.series_fk
            ON CONFLICT (sop_uid) DO UPDATE SET state = 'queued', attempts = 0, next_try = 0,
                transaction_uid = '', error = '', queued_at = excluded.queued_at;
        END;
        CREATE TRIGGER forward_forget_instance AFTER DELETE ON instances
        BEGIN
            DELETE FROM forward_instances WHERE sop_uid = OLD.sop_uid;
        END;
        """,
    )


def _m_sessions(conn: sqlite3.Connection) -> None:
    # Revocable web sessions: a staff cookie carries its user's session generation, which logout, a password or
    # role change and disabling the account bump; a patient cookie names a row here (only its hash), which
    # "Leave" deletes.
    run_script(
        conn,
        f"""
        ALTER TABLE users ADD COLUMN session_gen INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE {PATIENT_SESSIONS} (
            id_hash TEXT PRIMARY KEY,
            token_id INTEGER NOT NULL,
            expires REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX patient_sessions_expires ON {PATIENT_SESSIONS} (expires);
        CREATE INDEX patient_sessions_token ON {PATIENT_SESSIONS} (token_id, expires)
        """,
    )


def _m_api_keys(conn: sqlite3.Connection) -> None:
    # Credentials of DICOMweb and the JSON API: per-client API keys and the one master cookie (kind 'master'),
    # each stored as a SHA-256 hash only (see appliance/site/apikeys.py). Revoked rows stay for the audit trail.
    run_script(
        conn,
        """
        CREATE TABLE IF NOT EXISTS api_keys (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL COLLATE NOCASE,
            kind TEXT NOT NULL DEFAULT 'key',
            role TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            created TEXT NOT NULL,
            expires TEXT NOT NULL DEFAULT '',
            revoked TEXT NOT NULL DEFAULT '',
            last_used TEXT NOT NULL DEFAULT ''
        );
        CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys (name) WHERE revoked = ''
        """,
    )


def _m_notify(conn: sqlite3.Connection) -> None:
    # The outbox of events that leave the box (appliance/notify/outbox.py fills it by triggers, in the
    # transaction of the change), one read position per publisher, and the AMQP message log (in and out).
    # IF NOT EXISTS: this step may land after other branches' migrations in any order.
    run_script(
        conn,
        """
        CREATE TABLE IF NOT EXISTS outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            uid TEXT NOT NULL DEFAULT '',
            study_uid TEXT NOT NULL DEFAULT '',
            patient_id TEXT NOT NULL DEFAULT '',
            accession TEXT NOT NULL DEFAULT '',
            modality TEXT NOT NULL DEFAULT '',
            sps_id TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS outbox_cursors (
            channel TEXT PRIMARY KEY,
            last_id INTEGER NOT NULL,
            updated TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS amqp_messages (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            direction TEXT NOT NULL,
            address TEXT NOT NULL DEFAULT '',
            message_id TEXT NOT NULL DEFAULT '',
            outcome TEXT NOT NULL,
            error TEXT NOT NULL DEFAULT '',
            body BLOB NOT NULL
        );
        CREATE INDEX IF NOT EXISTS amqp_messages_time ON amqp_messages (time)
        """,
    )


def _m_upkeep(conn: sqlite3.Connection) -> None:
    # Storages by id (0: the data_dir store, whose index paths have no "@<id>/" prefix), with the admin's
    # switch and a move in progress; maintenance tasks with their series; the journal of files whose index rows
    # are already gone (removed at the next start if a crash interrupted the deletion); the e-mail queue.
    run_script(
        conn,
        """
        CREATE TABLE storages (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            moved_from TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT 'config',
            enabled INTEGER NOT NULL DEFAULT 1,
            free_space_limit_mb INTEGER NOT NULL DEFAULT 2048,
            initialized INTEGER NOT NULL DEFAULT 0,
            moving TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        );
        CREATE TABLE maintenance_tasks (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            setting TEXT NOT NULL DEFAULT '',
            total INTEGER NOT NULL DEFAULT 0,
            done INTEGER NOT NULL DEFAULT 0,
            error TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL,
            started TEXT NOT NULL DEFAULT '',
            finished TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX maintenance_tasks_state ON maintenance_tasks (state, id);
        CREATE TABLE maintenance_items (
            task_id INTEGER NOT NULL REFERENCES maintenance_tasks (id) ON DELETE CASCADE,
            series_uid TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            detail TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (task_id, series_uid)
        );
        CREATE TABLE archived_series (
            series_uid TEXT PRIMARY KEY,
            compression TEXT NOT NULL,
            at TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE deletion_journal (
            path TEXT PRIMARY KEY,
            sop_uid TEXT NOT NULL,
            at TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE email_queue (
            id INTEGER PRIMARY KEY,
            event TEXT NOT NULL,
            object TEXT NOT NULL DEFAULT '',
            subject TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'queued',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_try REAL NOT NULL DEFAULT 0,
            error TEXT NOT NULL DEFAULT '',
            suppressed INTEGER NOT NULL DEFAULT 0,
            created TEXT NOT NULL,
            sent TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX email_queue_state ON email_queue (state, next_try);
        CREATE INDEX email_queue_event ON email_queue (event, object, created)
        """,
    )


def _m_node_settings(conn: sqlite3.Connection) -> None:
    # The two settings [[dicom.nodes]] of the config file have, for nodes added in the staff UI, with the same
    # defaults as NodeConfig: may ask for Storage Commitment, transfer syntax as stored. "commit" is an SQL
    # keyword, hence the quotes.
    run_script(
        conn,
        """
        ALTER TABLE dicom_nodes ADD COLUMN "commit" INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE dicom_nodes ADD COLUMN preferred_ts TEXT NOT NULL DEFAULT ''
        """,
    )


#: Ordered schema migrations; entry ``n`` brings the schema to version ``n + 1``.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _m1_index,
    _m2_worklist,
    _m_web,
    _m_disc_publishing,
    _m_forwarding,
    _m_sessions,
    _m_api_keys,
    _m_notify,
    _m_upkeep,
    _m_node_settings,
]


#: SQLite primary result codes (the low byte of ``sqlite3.Error.sqlite_errorcode``) -> what they mean here.
_REASONS = {
    5: "is locked by another program",  # SQLITE_BUSY
    6: "is locked by another program",  # SQLITE_LOCKED
    8: "is read-only",  # SQLITE_READONLY
    10: "cannot be written to disk",  # SQLITE_IOERR (a disk remounted read-only under an open file, a failing disk)
    11: "is damaged",  # SQLITE_CORRUPT
    13: "is on a full disk",  # SQLITE_FULL
    14: "cannot be opened",  # SQLITE_CANTOPEN
    26: "is not an SQLite database",  # SQLITE_NOTADB
}
_SQLITE_READONLY = 8


def _primary_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def describe(exc: BaseException, subject: str = "the database") -> str:
    """Say why a database operation failed, for a log line or a protocol answer.

    Parameters
    ----------
    exc : BaseException
        What the operation raised.
    subject : str
        How to name the database in the sentence.

    Returns
    -------
    str
        E.g. ``the database is read-only (attempt to write a readonly database)``; the exception's own text
        when it is not an SQLite error with a known code.
    """
    reason = _REASONS.get(_primary_code(exc) or 0)
    return f"{subject} {reason} ({exc})" if reason else str(exc)


class Database:
    """The appliance's SQLite file, with one connection per thread.

    Parameters
    ----------
    path : Path
        The database file; created with the schema when missing.

    Raises
    ------
    DatabaseError
        The file or its folder cannot be created or opened, or the schema cannot be brought up to date.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        #: Every open connection by the thread that uses it; those of ended threads are closed as others open.
        self._open: dict[threading.Thread, sqlite3.Connection] = {}
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"database folder {self.path.parent} cannot be created: {exc.strerror}") from None
        try:
            self.migrate()
        except sqlite3.Error as exc:
            self.close()
            raise DatabaseError(self._why(exc)) from exc

    def _why(self, exc: sqlite3.Error) -> str:
        text = describe(exc, f"database {self.path}")
        if not os.access(self.path.parent, os.W_OK):  # also False for root on a read-only mount
            text += f"; its folder {self.path.parent} is not writable"
        return text

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
                # Each association and MLLP connection runs in a thread of its own: without this, every one of
                # them would leave an open connection (two file descriptors) behind until the process ends.
                for thread in [t for t in self._open if not t.is_alive()]:
                    self._open.pop(thread).close()
                self._open[threading.current_thread()] = conn
        return conn

    def _discard(self, conn: sqlite3.Connection) -> None:
        """Close this thread's connection; its next use opens a new one."""
        self._local.conn = None
        with self._lock:
            if self._open.get(threading.current_thread()) is conn:
                del self._open[threading.current_thread()]
        conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a block as one write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``).

        Taking the write lock at ``BEGIN`` avoids the deadlock-prone upgrade from a
        read to a write lock when several associations store at once.
        """
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # After an I/O error SQLite has already rolled back: a second ROLLBACK would hide the error.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            # A connection opened while the file was read-only stays read-only for good, even once the
            # file is writable again: drop it, the next transaction opens a new one.
            if _primary_code(exc) == _SQLITE_READONLY:
                self._discard(conn)
            raise

    def check_writable(self) -> None:
        """Make sure the database can be written, without changing it.

        Raises
        ------
        DatabaseError
            Naming the file and why (read-only file, folder or disk; locked).
        """
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")  # succeeds even on a read-only file: the write below is the test
            try:
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                conn.execute(f"PRAGMA user_version={version}")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            self._discard(conn)
            raise DatabaseError(self._why(exc)) from exc

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
            for conn in self._open.values():
                conn.close()
            self._open.clear()
        self._local = threading.local()
