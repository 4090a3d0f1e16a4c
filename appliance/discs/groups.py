"""Delayed groups of the ``_TE``/``_TP`` AE titles: instances gather until the sender has been quiet a while.

A group is keyed by robot and Patient ID (or Study Instance UID, ``[burn] group_by``). Each instance that
arrives for it pushes its due time to ``now + delay``; the timer turns a due group into a disc job. Groups, their
instances and their due times (wall-clock seconds) are rows in the database, and turning a group into a job is
one transaction, so a restart, even after a crash, resumes every pending group with its remaining time and never
burns one twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from appliance.db import BURN_GROUP_INSTANCES, BURN_GROUPS, Database
from appliance.discs.jobs import JobStore, now_text

LOGGER = logging.getLogger(__name__)

PENDING = "pending"
PUBLISHED = "published"


@dataclass(frozen=True)
class Group:
    """A pending delayed group."""

    id: int
    robot: str
    key: str
    called_ae: str
    copies: int
    patient_id: str
    patient_name: str
    due: float
    instances: int


class GroupStore:
    """The persisted delayed groups.

    Parameters
    ----------
    db : Database
    jobs : JobStore
        Where a due group becomes a job.
    """

    def __init__(self, db: Database, jobs: JobStore) -> None:
        self.db = db
        self.jobs = jobs

    def add(
        self,
        robot: str,
        key: str,
        sop_uid: str,
        delay: float,
        called_ae: str = "",
        copies: int = 1,
        patient_id: str = "",
        patient_name: str = "",
        now: float | None = None,
    ) -> float:
        """Add an instance to its robot's group for ``key`` (opening one if needed) and restart its timer.

        Returns
        -------
        float
            The group's new due time (seconds since the epoch).
        """
        stamp = time.time() if now is None else now
        due = stamp + delay
        with self.db.transaction() as conn:
            row = conn.execute(
                f"SELECT id FROM {BURN_GROUPS} WHERE robot = ? AND group_key = ? AND state = ?", (robot, key, PENDING)
            ).fetchone()
            if row is None:
                group_id = conn.execute(
                    f"INSERT INTO {BURN_GROUPS} (robot, group_key, called_ae, copies, patient_id, patient_name,"
                    " state, created, last_at, due) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (robot, key, called_ae, copies, patient_id, patient_name, PENDING, now_text(), stamp, due),
                ).fetchone()[0]
                LOGGER.info("delayed group %d opened for %s on robot %s", group_id, key, robot)
            else:
                group_id = row[0]
                conn.execute(f"UPDATE {BURN_GROUPS} SET last_at = ?, due = ? WHERE id = ?", (stamp, due, group_id))
            conn.execute(
                f"INSERT OR IGNORE INTO {BURN_GROUP_INSTANCES} (group_id, sop_uid) VALUES (?, ?)", (group_id, sop_uid)
            )
        return due

    def pending(self) -> list[Group]:
        """Pending groups, soonest due first."""
        rows = self.db.conn.execute(
            f"SELECT g.id, g.robot, g.group_key, g.called_ae, g.copies, g.patient_id, g.patient_name, g.due,"
            f" (SELECT COUNT(*) FROM {BURN_GROUP_INSTANCES} i WHERE i.group_id = g.id)"
            f" FROM {BURN_GROUPS} g WHERE g.state = ? ORDER BY g.due, g.id",
            (PENDING,),
        ).fetchall()
        return [Group(*r) for r in rows]

    def next_due(self) -> float | None:
        """Due time of the soonest pending group."""
        row = self.db.conn.execute(f"SELECT MIN(due) FROM {BURN_GROUPS} WHERE state = ?", (PENDING,)).fetchone()
        return None if row[0] is None else float(row[0])

    def publish_due(self, now: float | None = None) -> list[int]:
        """Turn every group due by ``now`` into a disc job; return the new job ids."""
        stamp = time.time() if now is None else now
        due = self.db.conn.execute(
            f"SELECT id FROM {BURN_GROUPS} WHERE state = ? AND due <= ? ORDER BY due", (PENDING, stamp)
        ).fetchall()
        created = []
        for (group_id,) in due:
            with self.db.transaction() as conn:
                # Re-read inside the write lock: an instance may have arrived and pushed the due time.
                row = conn.execute(
                    f"SELECT robot, group_key, called_ae, copies, last_at FROM {BURN_GROUPS}"
                    " WHERE id = ? AND state = ? AND due <= ?",
                    (group_id, PENDING, stamp),
                ).fetchone()
                if row is None:
                    continue
                uids = [
                    r[0]
                    for r in conn.execute(f"SELECT sop_uid FROM {BURN_GROUP_INSTANCES} WHERE group_id = ?", (group_id,))
                ]
                quiet = stamp - float(row["last_at"])
                job_id = self.jobs.create(
                    row["robot"],
                    row["copies"],
                    uids,
                    "group",
                    row["called_ae"],
                    reason=f"delayed group for {row['group_key']}: {len(uids)} instance(s), quiet for {quiet:.0f} s",
                    conn=conn,
                )
                conn.execute(
                    f"UPDATE {BURN_GROUPS} SET state = ?, job_id = ? WHERE id = ?", (PUBLISHED, job_id, group_id)
                )
            created.append(job_id)
        return created


class GroupTimer:
    """A thread that publishes groups when they fall due.

    Parameters
    ----------
    groups : GroupStore
    on_job : callable
        Called with each new job id (wakes the job engine).
    """

    #: Longest sleep: a wall-clock change is noticed within this many seconds.
    MAX_SLEEP = 5.0

    def __init__(self, groups: GroupStore, on_job: Callable[[int], None] | None = None) -> None:
        self.groups = groups
        self.on_job = on_job
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the timer; groups already due (the appliance was down) are published at once."""
        pending = self.groups.pending()
        if pending:
            LOGGER.info(
                "resuming %d delayed group(s); the next is due in %.0f s",
                len(pending),
                max(0.0, pending[0].due - time.time()),
            )
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="burn-groups", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer; pending groups stay in the database."""
        self._stop.set()
        self._poke.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def poke(self) -> None:
        """A group's due time changed: recompute the sleep."""
        self._poke.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for job_id in self.groups.publish_due():
                    if self.on_job is not None:
                        self.on_job(job_id)
                due = self.groups.next_due()
            except Exception:
                LOGGER.exception("publishing delayed groups failed")
                due = None
            sleep = self.MAX_SLEEP if due is None else min(self.MAX_SLEEP, max(0.0, due - time.time()))
            self._poke.wait(sleep)
            self._poke.clear()
