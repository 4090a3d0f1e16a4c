"""The outbox: events that leave the box, written in the transaction of the change they report.

SQLite triggers on ``studies``, ``series`` and ``worklist_items`` add one row per new
study, new series and worklist step status change, inside the very transaction that
makes the change: whatever path stored the instance (C-STORE, STOW-RS, import,
crash recovery) or changed the step (MPPS, HL7, the staff UI, the CLI), the event is
committed with it or not at all, and nothing on the ingest path waits for a broker.

Publishers (:mod:`appliance.notify.amqp`) read the rows in ``id`` order from their own
read position (``outbox_cursors``) and move it on once the broker confirmed; rows every
publisher has passed are deleted. Each row carries a random message ID made when it
was written, so a message sent twice (after a crash between confirm and cursor update)
can be recognised by consumers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from appliance.db import OUTBOX, OUTBOX_CURSORS, Database

#: Event kinds and the trigger that records each.
STUDY = "study"
SERIES = "series"
MWL = "mwl"
KINDS = (STUDY, SERIES, MWL)

_NOW_SQL = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
_ID_SQL = "lower(hex(randomblob(16)))"

#: One trigger per kind; each body is a single INSERT (no ';' inside but the one closing it).
_TRIGGERS = {
    STUDY: (
        "CREATE TRIGGER IF NOT EXISTS outbox_new_study AFTER INSERT ON studies BEGIN "
        f"INSERT INTO {OUTBOX} (message_id, kind, uid, study_uid, patient_id, accession, created) VALUES "
        f"({_ID_SQL}, 'study', NEW.study_uid, NEW.study_uid, "
        "COALESCE((SELECT patient_id FROM patients WHERE id = NEW.patient_fk), ''), NEW.accession, "
        f"{_NOW_SQL}); END"
    ),
    SERIES: (
        "CREATE TRIGGER IF NOT EXISTS outbox_new_series AFTER INSERT ON series BEGIN "
        f"INSERT INTO {OUTBOX} (message_id, kind, uid, study_uid, patient_id, accession, modality, created) "
        f"SELECT {_ID_SQL}, 'series', NEW.series_uid, st.study_uid, p.patient_id, st.accession, NEW.modality, "
        f"{_NOW_SQL} FROM studies st JOIN patients p ON p.id = st.patient_fk WHERE st.id = NEW.study_fk; END"
    ),
    MWL: (
        "CREATE TRIGGER IF NOT EXISTS outbox_mwl_status AFTER UPDATE OF status ON worklist_items "
        "WHEN OLD.status IS NOT NEW.status BEGIN "
        f"INSERT INTO {OUTBOX} (message_id, kind, uid, study_uid, patient_id, accession, modality, sps_id, "
        f"status, created) VALUES ({_ID_SQL}, 'mwl', NEW.study_uid, NEW.study_uid, NEW.patient_id, "
        f"NEW.accession, NEW.modality, NEW.sps_id, NEW.status, {_NOW_SQL}); END"
    ),
}
_TRIGGER_NAMES = {STUDY: "outbox_new_study", SERIES: "outbox_new_series", MWL: "outbox_mwl_status"}


@dataclass(frozen=True)
class Event:
    """One row of the outbox.

    Attributes
    ----------
    id : int
        Position in the outbox (increasing, never reused).
    message_id : str
        Stable ID of the message (32 hex digits), the same on every attempt.
    kind : str
        ``study``, ``series`` or ``mwl``.
    uid : str
        The new study's or series' UID; the step's study UID for ``mwl``.
    """

    id: int
    message_id: str
    kind: str
    uid: str
    study_uid: str
    patient_id: str
    accession: str
    modality: str
    sps_id: str
    status: str
    created: str


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Outbox:
    """The outbox table, its triggers and the publishers' read positions.

    Parameters
    ----------
    db : Database
        The appliance database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def configure(self, kinds: Collection[str]) -> None:
        """Record exactly these kinds of event from now on (triggers created or dropped in one transaction).

        Parameters
        ----------
        kinds : collection of str
            Of :data:`KINDS`; empty records nothing (every trigger dropped).

        Raises
        ------
        ValueError
            For an unknown kind.
        """
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown event kind(s): {', '.join(sorted(unknown))}")
        with self.db.transaction() as conn:
            for kind in KINDS:
                if kind in kinds:
                    conn.execute(_TRIGGERS[kind])
                else:
                    conn.execute(f"DROP TRIGGER IF EXISTS {_TRIGGER_NAMES[kind]}")

    def recording(self) -> set[str]:
        """The kinds whose triggers exist now."""
        names = {r[0] for r in self.db.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        return {kind for kind, name in _TRIGGER_NAMES.items() if name in names}

    def position(self, channel: str) -> int:
        """The last event ``channel`` has delivered (0: none yet)."""
        row = self.db.conn.execute(f"SELECT last_id FROM {OUTBOX_CURSORS} WHERE channel = ?", (channel,)).fetchone()
        return int(row[0]) if row else 0

    def pending(self, channel: str, limit: int = 200, after: int | None = None) -> list[Event]:
        """The next events for ``channel``, oldest first (after its stored position, or after ``after``)."""
        rows = self.db.conn.execute(
            f"SELECT id, message_id, kind, uid, study_uid, patient_id, accession, modality, sps_id, status, created"
            f" FROM {OUTBOX} WHERE id > ? ORDER BY id LIMIT ?",
            (self.position(channel) if after is None else after, int(limit)),
        ).fetchall()
        return [Event(*r) for r in rows]

    def backlog(self, channel: str) -> int:
        """How many events ``channel`` has still to deliver (after its stored position)."""
        return self.count_after(self.position(channel))

    def count_after(self, last_id: int) -> int:
        """How many events follow ``last_id``."""
        return int(self.db.conn.execute(f"SELECT COUNT(*) FROM {OUTBOX} WHERE id > ?", (last_id,)).fetchone()[0])

    def advance(self, channel: str, last_id: int, also: Iterable[tuple[str, tuple[object, ...]]] = ()) -> None:
        """Move ``channel`` past ``last_id`` and drop the rows every channel has passed, in one transaction.

        Parameters
        ----------
        channel : str
            The publisher.
        last_id : int
            The last event it delivered.
        also : iterable of (sql, parameters)
            More statements for the same transaction (the publisher's message log rows).
        """
        with self.db.transaction() as conn:
            conn.execute(
                f"INSERT INTO {OUTBOX_CURSORS} (channel, last_id, updated) VALUES (?, ?, ?)"
                " ON CONFLICT (channel) DO UPDATE SET last_id = MAX(last_id, excluded.last_id),"
                " updated = excluded.updated",
                (channel, last_id, _now()),
            )
            conn.execute(f"DELETE FROM {OUTBOX} WHERE id <= (SELECT MIN(last_id) FROM {OUTBOX_CURSORS})")
            for sql, params in also:
                conn.execute(sql, params)

    def study_counts(self, study_uid: str) -> dict[str, object]:
        """Series and instance counts and modalities of a study as the index knows them now ({} when gone)."""
        row = self.db.conn.execute(
            "SELECT num_series, num_instances, modalities FROM studies WHERE study_uid = ?", (study_uid,)
        ).fetchone()
        if row is None:
            return {}
        return {"series_count": row[0], "instance_count": row[1], "modalities": row[2]}

    def series_counts(self, series_uid: str) -> dict[str, object]:
        """The instance count of a series as the index knows it now ({} when gone)."""
        row = self.db.conn.execute("SELECT num_instances FROM series WHERE series_uid = ?", (series_uid,)).fetchone()
        return {"instance_count": row[0]} if row else {}
