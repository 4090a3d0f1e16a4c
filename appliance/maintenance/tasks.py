"""Persisted maintenance tasks: one row per task, one row per series it covers.

A task is *collected* (its series chosen) when its kind's window is open, and then runs to its end, window or
not. Every series is marked done as soon as it is finished, so a restart after a crash resumes a task with the
series it had not finished; the per-instance work is written so that redoing a half-done series is safe
(see :mod:`appliance.maintenance.archiving` and :mod:`appliance.maintenance.deletion`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from appliance.db import Database


class TaskState(StrEnum):
    """Where a maintenance task is."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


def now_text() -> str:
    """The current UTC time as stored in the task tables."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Task:
    """A maintenance task as stored."""

    id: int
    kind: str
    state: str
    reason: str
    setting: str
    total: int
    done: int
    error: str
    created: str
    started: str
    finished: str


class TaskStore:
    """The ``maintenance_tasks`` and ``maintenance_items`` tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, kind: str, series_uids: Iterable[str], reason: str, setting: str = "") -> int | None:
        """Queue a task over some series; None (and no task) when there are none."""
        uids = list(dict.fromkeys(series_uids))
        if not uids:
            return None
        with self.db.transaction() as conn:
            task_id = int(
                conn.execute(
                    "INSERT INTO maintenance_tasks (kind, state, reason, setting, total, created)"
                    " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                    (kind, TaskState.QUEUED, reason, setting, len(uids), now_text()),
                ).fetchone()[0]
            )
            conn.executemany(
                "INSERT INTO maintenance_items (task_id, series_uid) VALUES (?, ?)", [(task_id, uid) for uid in uids]
            )
        return task_id

    def get(self, task_id: int) -> Task:
        """One task (KeyError when unknown)."""
        row = self.db.conn.execute("SELECT * FROM maintenance_tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise KeyError(task_id)
        return Task(**dict(row))

    def unfinished(self, kind: str | None = None) -> list[Task]:
        """Queued and running tasks, oldest first."""
        sql = "SELECT * FROM maintenance_tasks WHERE state IN ('queued', 'running')"
        args: tuple[str, ...] = ()
        if kind:
            sql += " AND kind = ?"
            args = (kind,)
        return [Task(**dict(r)) for r in self.db.conn.execute(sql + " ORDER BY id", args)]

    def recent(self, limit: int = 50) -> list[Task]:
        """The newest tasks first."""
        rows = self.db.conn.execute("SELECT * FROM maintenance_tasks ORDER BY id DESC LIMIT ?", (limit,))
        return [Task(**dict(r)) for r in rows]

    def last(self, kind: str) -> Task | None:
        """The newest task of a kind."""
        row = self.db.conn.execute(
            "SELECT * FROM maintenance_tasks WHERE kind = ? ORDER BY id DESC LIMIT 1", (kind,)
        ).fetchone()
        return Task(**dict(row)) if row else None

    def pending(self, task_id: int) -> list[str]:
        """Series of a task not finished yet."""
        rows = self.db.conn.execute(
            "SELECT series_uid FROM maintenance_items WHERE task_id = ? AND state = 'pending' ORDER BY rowid",
            (task_id,),
        )
        return [r[0] for r in rows]

    def start(self, task_id: int) -> None:
        """Mark a task running (again, after a restart)."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE maintenance_tasks SET state = 'running', started = CASE WHEN started = '' THEN ?"
                " ELSE started END WHERE id = ?",
                (now_text(), task_id),
            )

    def item_done(self, task_id: int, series_uid: str, state: str = "done", detail: str = "") -> None:
        """Mark one series of a task finished (state done, skipped or failed)."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE maintenance_items SET state = ?, detail = ? WHERE task_id = ? AND series_uid = ?",
                (state, detail[:500], task_id, series_uid),
            )
            conn.execute("UPDATE maintenance_tasks SET done = done + 1 WHERE id = ?", (task_id,))
            if state == "failed":
                conn.execute("UPDATE maintenance_tasks SET error = ? WHERE id = ?", (detail[:500], task_id))

    def finish(self, task_id: int, error: str = "") -> None:
        """Mark a task done (or failed with a reason)."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE maintenance_tasks SET state = ?, finished = ?, error = CASE WHEN ? = '' THEN error"
                " ELSE ? END WHERE id = ?",
                (TaskState.FAILED if error else TaskState.DONE, now_text(), error, error[:500], task_id),
            )

    def items(self, task_id: int) -> list[tuple[str, str, str]]:
        """(series UID, state, detail) of every series of a task."""
        rows = self.db.conn.execute(
            "SELECT series_uid, state, detail FROM maintenance_items WHERE task_id = ? ORDER BY rowid", (task_id,)
        )
        return [(r[0], r[1], r[2]) for r in rows]
