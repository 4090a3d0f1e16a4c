"""The maintenance engine: one background thread that collects tasks in their windows and runs them.

Every :data:`TICK` seconds it re-reads the storages (a move or an unmounted share is seen), deletes the oldest
series of a storage below the low-space threshold at once (no window), collects an archiving or deletion task
when its window is open, and runs unfinished tasks to their end; at start it resumes the tasks a stop or a
crash interrupted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from appliance.maintenance.archiving import Archiver
from appliance.maintenance.deletion import Deleter
from appliance.maintenance.tasks import Task, TaskStore
from appliance.maintenance.windows import Schedule
from appliance.storage import Storages

LOGGER = logging.getLogger(__name__)

#: Seconds between two looks.
TICK = 2.0
#: In a window that stays open (e.g. all week), a new task is collected at most this often.
RECOLLECT = timedelta(hours=1)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Plan:
    """What the next window of each kind would do (``appliance maintenance plan``)."""

    next_window: dict[str, datetime | None] = field(default_factory=dict)
    compress: list[str] = field(default_factory=list)
    compression: str = "none"
    delete: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    low_space: list[str] = field(default_factory=list)


class Maintenance:
    """Collects and runs archiving and deletion tasks.

    Parameters
    ----------
    storages : Storages
        Refreshed every tick.
    tasks : TaskStore
        The persisted tasks.
    archiver, deleter
        Do the work.
    schedules : dict
        Task kind -> :class:`Schedule`.
    clock : callable
        Local time now (the windows are in local time).
    """

    def __init__(
        self,
        storages: Storages,
        tasks: TaskStore,
        archiver: Archiver,
        deleter: Deleter,
        schedules: dict[str, Schedule],
        clock: Callable[[], datetime] = datetime.now,
        tick: float = TICK,
    ) -> None:
        self.storages = storages
        self.tasks = tasks
        self.archiver = archiver
        self.deleter = deleter
        self.schedules = schedules
        self.clock = clock
        self.tick = tick
        #: Called with (task, error) when a task ends with an error.
        self.failed_listeners: list[Callable[[Task, str], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: When each kind was last looked at for due series (local time, as the windows).
        self._looked: dict[str, datetime] = {}
        self._lock = threading.Lock()

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (it first resumes interrupted tasks)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="maintenance", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the series being worked on; the task resumes at the next start."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                LOGGER.exception("maintenance round failed")
            self._stop.wait(self.tick)

    def run_once(self, now: datetime | None = None) -> None:
        """One round: refresh storages, low-space deletion, collect in open windows, run unfinished tasks."""
        with self._lock:
            self.storages.refresh()
            self.deleter.free_low_space()
            for kind in ("archiving", "deletion"):
                self.collect(kind, now)
            for task in self.tasks.unfinished():
                if self._stop.is_set():
                    return
                self.run_task(task)

    # -- collecting ---------------------------------------------------------------------------------

    def collect(self, kind: str, now: datetime | None = None, force: bool = False) -> int | None:
        """Queue a task of ``kind`` if its window is open (or ``force``) and there is work; its id or None."""
        now = now or self.clock()
        schedule = self.schedules.get(kind)
        opened = schedule.opened_at(now) if schedule is not None else None
        if not force and opened is None:
            return None
        if self.tasks.unfinished(kind):
            return None
        if not force and opened is not None:
            # Once per window opening (and at most once an hour in a long window): looking for due series scans
            # the index, so an empty look counts as much as a collected task.
            since = max(opened, now - RECOLLECT)
            looked = self._looked.get(kind)
            if looked is not None and looked >= since:
                return None
            last = self.tasks.last(kind)
            if last is not None and last.created >= _stamp(since):
                return None
        self._looked[kind] = now
        if kind == "archiving":
            uids = self.archiver.due()
            reason = f"compress to {self.archiver.config.compression}"
            setting = self.archiver.config.compression
        elif kind == "deletion":
            uids = self.deleter.due()
            reason = f"older than {self.deleter.config.store_days} day(s)"
            setting = str(self.deleter.config.store_days)
        else:
            return None
        task_id = self.tasks.create(kind, uids, reason, setting)
        if task_id is not None:
            LOGGER.info("%s task %d collected: %d series (%s)", kind, task_id, len(uids), reason)
        return task_id

    # -- running ------------------------------------------------------------------------------------

    def run_task(self, task: Task) -> None:
        """Run a task's unfinished series to the end (or until stop)."""
        self.tasks.start(task.id)
        error = ""
        for uid in self.tasks.pending(task.id):
            if self._stop.is_set():
                return
            try:
                state, detail = self._one(task, uid)
            except Exception as exc:
                LOGGER.exception("%s task %d failed on series %s", task.kind, task.id, uid)
                state, detail = "failed", f"{type(exc).__name__}: {exc}"
                error = detail
            self.tasks.item_done(task.id, uid, state, detail)
            self.deleter.free_low_space()  # low space is handled at once, even during a long task
        self.tasks.finish(task.id, error)
        LOGGER.info("%s task %d finished%s", task.kind, task.id, f" with errors: {error}" if error else "")
        if error:
            for listener in self.failed_listeners:
                try:
                    listener(task, error)
                except Exception:
                    LOGGER.exception("a maintenance listener failed")

    def _one(self, task: Task, uid: str) -> tuple[str, str]:
        if task.kind == "archiving":
            if self.archiver.config.compression != task.setting:
                return "skipped", f"compression changed from {task.setting} to {self.archiver.config.compression}"
            result = self.archiver.process_series(uid)
            return ("done" if not result.skipped else "skipped"), result.detail
        if task.kind == "deletion":
            kept = self.deleter._kept([uid])
            if uid in kept:
                return "skipped", f"kept: {kept[uid]}"
            n = self.deleter.delete_series(uid, task.reason)
            return "done", f"{n} instance(s) deleted"
        return "skipped", f"unknown task kind {task.kind}"

    def restart_archiving(self) -> int:
        """``appliance maintenance restart archiving``: every series is compressed again to the current setting
        at the next window; returns how many series were marked archived before."""
        return self.archiver.restart()

    # -- dry run ------------------------------------------------------------------------------------

    def plan(self, now: datetime | None = None) -> Plan:
        """What the next window of each kind would compress or delete, and what is kept and why."""
        now = now or self.clock()
        plan = Plan(compression=self.archiver.config.compression)
        for kind, schedule in self.schedules.items():
            plan.next_window[kind] = schedule.next_open(now)
        plan.compress = self.archiver.due()
        plan.delete, plan.kept = self.deleter.candidates()
        plan.low_space = [
            f"storage {s.number} at {s.root}: {s.free_bytes() // (1024 * 1024)} MB free"
            for s in self.deleter.low_storages()
        ]
        return plan
