"""The persisted forwarding queue: one row per instance, its state, attempts and commitment transaction.

Rows are added by a database trigger in the transaction that indexes an instance (while forwarding is
enabled), so nothing stored is missed by a crash, and removed with the instance. States:

* ``queued``: waiting for a window (or for its retry time, after a failure);
* ``sent``: the regional server answered the C-STORE with success (final when commitment is off);
* ``committed``: the regional server's N-EVENT-REPORT said it holds the instance;
* ``failed``: the last attempt failed (``error`` says why); it is sent again at ``next_try``.

A series' state is derived from its instances: failed if any failed, else queued if any is waiting,
else sent if any awaits its commitment, else committed.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from appliance.db import Database

STATES = ("queued", "sent", "committed", "failed")


@dataclass(frozen=True)
class Waiting:
    """An instance to forward."""

    sop_uid: str
    series_uid: str
    attempts: int


@dataclass(frozen=True)
class QueueStatus:
    """What the staff page and ``appliance forwarding status`` show."""

    counts: dict[str, int]
    series: dict[str, int]
    oldest_waiting: float | None
    last_error: str
    last_error_at: float | None


class ForwardQueue:
    """The queue in the appliance database.

    Parameters
    ----------
    db : Database
        The appliance database (its ``forward_*`` tables).
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def set_enabled(self, enabled: bool) -> None:
        """Whether newly indexed instances are queued (the trigger reads this flag)."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE forward_settings SET enabled = ? WHERE id = 1", (int(enabled),))

    def take(self, limit: int, now: float | None = None) -> list[Waiting]:
        """Up to ``limit`` instances due now, oldest first (queued ones, and failed ones past their retry time)."""
        now = time.time() if now is None else now
        rows = self.db.conn.execute(
            "SELECT sop_uid, series_uid, attempts FROM forward_instances "
            "WHERE state IN ('queued', 'failed') AND next_try <= ? ORDER BY queued_at, series_uid, sop_uid LIMIT ?",
            (now, limit),
        ).fetchall()
        return [Waiting(r["sop_uid"], r["series_uid"], r["attempts"]) for r in rows]

    def next_due(self) -> float | None:
        """When the next waiting instance is due (None: nothing waits)."""
        row = self.db.conn.execute(
            "SELECT MIN(next_try) FROM forward_instances WHERE state IN ('queued', 'failed')"
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def mark_sent(self, uids: Iterable[str], transaction_uid: str = "") -> None:
        """Record instances the regional server accepted (and the commitment transaction asked about them)."""
        now = time.time()
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE forward_instances SET state = 'sent', sent_at = ?, transaction_uid = ?, "
                "error = '', attempts = attempts + 1 WHERE sop_uid = ?",
                [(now, transaction_uid, uid) for uid in uids],
            )

    def mark_failed(self, failures: dict[str, str], retry_min: float, retry_max: float) -> None:
        """Record failed instances (uid -> reason); each is tried again after a doubling pause."""
        now = time.time()
        with self.db.transaction() as conn:
            for uid, reason in failures.items():
                row = conn.execute("SELECT attempts FROM forward_instances WHERE sop_uid = ?", (uid,)).fetchone()
                if row is None:
                    continue  # deleted meanwhile
                pause = min(retry_max, retry_min * (2 ** min(int(row["attempts"]), 20)))
                conn.execute(
                    "UPDATE forward_instances SET state = 'failed', attempts = attempts + 1, next_try = ?, "
                    "error = ?, transaction_uid = '' WHERE sop_uid = ?",
                    (now + pause, reason[:500], uid),
                )

    def apply_report(
        self, transaction_uid: str, committed: Iterable[str], failed: dict[str, str], retry_min: float, retry_max: float
    ) -> bool:
        """Apply an N-EVENT-REPORT: committed instances are done, failed ones are sent again.

        Returns
        -------
        bool
            Whether the transaction was one of ours.
        """
        now = time.time()
        with self.db.transaction() as conn:
            known = conn.execute(
                "SELECT 1 FROM forward_instances WHERE transaction_uid = ? LIMIT 1", (transaction_uid,)
            ).fetchone()
            if known is None:
                return False
            conn.executemany(
                "UPDATE forward_instances SET state = 'committed', committed_at = ?, error = '' "
                "WHERE sop_uid = ? AND transaction_uid = ?",
                [(now, uid, transaction_uid) for uid in committed],
            )
        self.mark_failed(
            {uid: f"not committed by the regional server: {why}" for uid, why in failed.items()}, retry_min, retry_max
        )
        return True

    def expire_commitments(
        self,
        older_than: float,
        retry_min: float,
        retry_max: float,
        reason: str = "no storage commitment report from the regional server",
    ) -> int:
        """Instances sent with a transaction whose report never came before ``older_than``: send them again."""
        rows = self.db.conn.execute(
            "SELECT sop_uid FROM forward_instances WHERE state = 'sent' AND transaction_uid != '' AND sent_at < ?",
            (older_than,),
        ).fetchall()
        self.mark_failed({r["sop_uid"]: reason for r in rows}, retry_min, retry_max)
        return len(rows)

    def mark_held_regionally(self, uids: Iterable[str]) -> None:
        """Instances fetched from the regional server (extended search): it holds them, nothing to send back."""
        now = time.time()
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE forward_instances SET state = 'committed', committed_at = ?, error = '' "
                "WHERE sop_uid = ? AND state IN ('queued', 'failed')",
                [(now, uid) for uid in uids],
            )

    def restart(self) -> int:
        """Queue every stored instance again, as the manual's RESTART button (returns how many)."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO forward_instances (sop_uid, series_uid, study_uid, queued_at) "
                "SELECT i.sop_uid, s.series_uid, st.study_uid, ? FROM instances i "
                "JOIN series s ON s.id = i.series_fk JOIN studies st ON st.id = s.study_fk WHERE 1 "
                "ON CONFLICT (sop_uid) DO UPDATE SET state = 'queued', attempts = 0, next_try = 0, "
                "transaction_uid = '', error = ''",
                (time.time(),),
            )
            return int(conn.execute("SELECT COUNT(*) FROM forward_instances").fetchone()[0])

    def retry_failed(self) -> int:
        """Make every failed instance due now (the staff page's Retry button)."""
        with self.db.transaction() as conn:
            return conn.execute("UPDATE forward_instances SET next_try = 0 WHERE state = 'failed'").rowcount

    def status(self) -> QueueStatus:
        """Counts per instance state and per series state, the oldest waiting instance, the last error."""
        conn = self.db.conn
        counts = dict.fromkeys(STATES, 0)
        for row in conn.execute("SELECT state, COUNT(*) FROM forward_instances GROUP BY state"):
            counts[row[0]] = int(row[1])
        series = dict.fromkeys(STATES, 0)
        for row in conn.execute(
            f"SELECT {_SERIES_STATE} AS st, COUNT(*) FROM ("
            "SELECT series_uid, GROUP_CONCAT(DISTINCT state) AS states FROM forward_instances "
            "GROUP BY series_uid) GROUP BY st"
        ):
            series[row[0]] = int(row[1])
        oldest = conn.execute(
            "SELECT MIN(queued_at) FROM forward_instances WHERE state IN ('queued', 'failed')"
        ).fetchone()[0]
        error = conn.execute(
            "SELECT error, next_try FROM forward_instances WHERE state = 'failed' ORDER BY next_try DESC LIMIT 1"
        ).fetchone()
        return QueueStatus(
            counts, series, oldest, error["error"] if error else "", error["next_try"] if error else None
        )

    def study_states(self, study_uids: Iterable[str]) -> dict[str, str]:
        """Forwarding state of each study (as of its series) for the staff study list; absent: not queued."""
        uids = list(study_uids)
        out: dict[str, str] = {}
        for chunk in range(0, len(uids), 500):
            part = uids[chunk : chunk + 500]
            marks = ",".join("?" * len(part))
            for row in self.db.conn.execute(
                f"SELECT study_uid, {_SERIES_STATE} FROM (SELECT study_uid, GROUP_CONCAT(DISTINCT state) AS "
                f"states FROM forward_instances WHERE study_uid IN ({marks}) GROUP BY study_uid)",
                part,
            ):
                out[row[0]] = row[1]
        return out


#: The state of a group of instances from the comma-joined set of their states.
_SERIES_STATE = (
    "CASE WHEN instr(states, 'failed') THEN 'failed' WHEN instr(states, 'queued') THEN 'queued' "
    "WHEN instr(states, 'sent') THEN 'sent' ELSE 'committed' END"
)


def not_forwarded(conn: sqlite3.Connection, series_uids: Iterable[str], commitment: bool) -> set[str]:
    """Series with an instance not yet safely at the regional server (committed; or sent, without commitment).

    The one rule deletion asks (``[deletion] remove_not_forwarded``): such a series must not be deleted.
    """
    done = ("committed",) if commitment else ("committed", "sent")
    wanted = list(series_uids)
    found: set[str] = set()
    marks_done = ",".join("?" * len(done))
    for chunk in range(0, len(wanted), 500):
        part = wanted[chunk : chunk + 500]
        marks = ",".join("?" * len(part))
        rows: Any = conn.execute(
            f"SELECT DISTINCT series_uid FROM forward_instances WHERE series_uid IN ({marks}) "
            f"AND state NOT IN ({marks_done})",
            [*part, *done],
        )
        found.update(r[0] for r in rows)
    return found
