"""Patient sessions: the server-side half of the patient cookie, so that "Leave" really ends it.

The patient cookie is signed, but a signed cookie alone cannot be taken back: a copy made before the patient
left would work until it expires. So each session opened by a link has a row here, named by the SHA-256 hash
of a random session id that only the cookie holds (a copy of the database opens nothing); every patient
request checks the row, and :meth:`PatientSessions.end` deletes it.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable

from appliance.db import PATIENT_SESSIONS, Database

#: Seconds between two purges of expired rows.
_PURGE_INTERVAL = 300.0
#: Open sessions kept per token (a family's phones and computers); opening one more ends the oldest, so that
#: opening a link in a loop cannot grow the table.
MAX_PER_TOKEN = 20


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class PatientSessions:
    """Open patient sessions (``patient_sessions`` table).

    Parameters
    ----------
    db : Database
        The appliance database.
    clock : callable, optional
        Wall-clock seconds (tests pass their own).
    """

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._last_purge = 0.0
        self._lock = threading.Lock()

    def open(self, token_id: int, seconds: float) -> str:
        """Open a session on a token for ``seconds``; return its id (for the cookie only)."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            purge = now - self._last_purge > _PURGE_INTERVAL
            if purge:
                self._last_purge = now
        with self.db.transaction() as conn:
            if purge:
                conn.execute(f"DELETE FROM {PATIENT_SESSIONS} WHERE expires < ?", (now,))
            conn.execute(
                f"INSERT INTO {PATIENT_SESSIONS} (id_hash, token_id, expires) VALUES (?, ?, ?)",
                (_hash(session_id), token_id, now + seconds),
            )
            conn.execute(
                f"DELETE FROM {PATIENT_SESSIONS} WHERE token_id = ? AND id_hash NOT IN (SELECT id_hash FROM"
                f" {PATIENT_SESSIONS} WHERE token_id = ? ORDER BY expires DESC LIMIT {MAX_PER_TOKEN})",
                (token_id, token_id),
            )
        return session_id

    def token_of(self, session_id: str) -> int | None:
        """The token id of an open, unexpired session, else None."""
        if not session_id:
            return None
        row = self.db.conn.execute(
            f"SELECT token_id, expires FROM {PATIENT_SESSIONS} WHERE id_hash = ?", (_hash(session_id),)
        ).fetchone()
        if row is None or row["expires"] < self.clock():
            return None
        return int(row["token_id"])

    def end(self, session_id: str) -> None:
        """End a session (nothing when it is unknown)."""
        if session_id:
            with self.db.transaction() as conn:
                conn.execute(f"DELETE FROM {PATIENT_SESSIONS} WHERE id_hash = ?", (_hash(session_id),))
