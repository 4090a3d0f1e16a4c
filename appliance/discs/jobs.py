"""Disc jobs: their states, the one function that changes a state, and the engine that drives them.

Every job is a row of ``disc_jobs``; every change of state goes through :meth:`JobStore.transition`, which
checks it against :data:`TRANSITIONS`, writes it only if the job is still in the state it was read in (so the
engine and a CLI command in another process never both win), and appends a timestamped row to
``disc_job_events``. A restart therefore knows exactly where each job was: queued and authoring jobs are
authored (again), submitted and burning jobs are followed on the robot by their persisted tickets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from appliance.db import (
    DISC_JOB_DISCS,
    DISC_JOB_EVENTS,
    DISC_JOB_INSTANCES,
    DISC_JOBS,
    INSTANCES,
    PATIENTS,
    SERIES,
    STUDIES,
    Database,
    describe,
)
from appliance.errors import ApplianceError, InvalidTransition, NotFound

LOGGER = logging.getLogger(__name__)


class JobState(StrEnum):
    """Where a disc job is."""

    QUEUED = "queued"
    """Waiting to be authored."""
    AUTHORING = "authoring"
    """Its file-sets, images and labels are being written."""
    SUBMITTED = "submitted"
    """Handed to the robot; the robot has not started writing."""
    BURNING = "burning"
    """The robot is writing or printing (or holds the job until someone fixes it)."""
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: The allowed changes of state. A failed or cancelled job can be queued again (retry); an authoring job goes
#: back to queued when a restart interrupted it.
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.AUTHORING, JobState.CANCELLED}),
    JobState.AUTHORING: frozenset({JobState.SUBMITTED, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED}),
    JobState.SUBMITTED: frozenset({JobState.BURNING, JobState.DONE, JobState.FAILED, JobState.CANCELLED}),
    JobState.BURNING: frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED}),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
}
FINAL = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
#: Columns a transition may set along with the state.
_FIELDS = ("media", "disc_count", "size", "error", "message", "needs_staff", "attempt", "purged")


def now_text() -> str:
    """The current UTC time as stored in the job tables."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Job:
    """A disc job as stored."""

    id: int
    state: JobState
    robot: str
    copies: int
    source: str
    called_ae: str
    parent_id: int | None
    patient_id: str
    patient_name: str
    studies: tuple[str, ...]
    instances: int
    media: str
    disc_count: int
    size: int
    attempt: int
    error: str
    message: str
    needs_staff: bool
    purged: str
    created: str
    updated: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        """Build from a ``disc_jobs`` row."""
        values = dict(row)
        values["state"] = JobState(values["state"])
        values["studies"] = tuple(s for s in values["studies"].split("\\") if s)
        values["needs_staff"] = bool(values["needs_staff"])
        return cls(**values)


@dataclass(frozen=True)
class Disc:
    """One disc of a job: what to burn, and the robot's ticket and last answer about it."""

    job_id: int
    number: int
    media: str
    size: int
    volume: str
    robot_job_id: str
    ticket: str
    submitting: bool
    robot_state: str
    reason: str
    error_code: str
    needs_staff: bool
    files: Mapping[str, Any]
    updated: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Disc:
        """Build from a ``disc_job_discs`` row."""
        values = dict(row)
        values["submitting"] = bool(values["submitting"])
        values["needs_staff"] = bool(values["needs_staff"])
        values["files"] = json.loads(values["files"])
        return cls(**values)


@dataclass(frozen=True)
class DiscSpec:
    """A disc as the author made it: medium, bytes, volume label and its files (image, labels)."""

    number: int
    media: str
    size: int
    volume: str
    files: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobEvent:
    """One change of state of a job."""

    at: str
    from_state: str
    to_state: str
    reason: str


class JobStore:
    """The persisted disc jobs.

    Parameters
    ----------
    db : Database
        The appliance database (migrated).
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- creating and reading -----------------------------------------------------------------------

    def create(
        self,
        robot: str,
        copies: int,
        sop_uids: Sequence[str],
        source: str,
        called_ae: str = "",
        parent_id: int | None = None,
        reason: str = "",
        conn: sqlite3.Connection | None = None,
    ) -> int:
        """Queue a job for some stored instances and return its id.

        Parameters
        ----------
        robot : str
            Name of the ``[robots.<name>]`` table that burns it.
        copies : int
        sop_uids : sequence of str
            The instances on the disc(s).
        source : str
            ``association``, ``group``, ``manual``, ``reburn`` or ``reprint``.
        called_ae : str
            The burn AE title the instances came to, if any.
        parent_id : int, optional
            The job a reburn or reprint repeats.
        reason : str
            Text of the first event.
        conn : sqlite3.Connection, optional
            A connection inside the caller's transaction (a delayed group turns into a job atomically).
        """
        if conn is None:
            with self.db.transaction() as own:
                return self.create(robot, copies, sop_uids, source, called_ae, parent_id, reason, own)
        uids = list(dict.fromkeys(sop_uids))
        patient_id, patient_name, studies = _describe(conn, uids)
        stamp = now_text()
        job_id = int(
            conn.execute(
                f"INSERT INTO {DISC_JOBS} (state, robot, copies, source, called_ae, parent_id, patient_id,"
                " patient_name, studies, instances, created, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    JobState.QUEUED.value,
                    robot,
                    copies,
                    source,
                    called_ae,
                    parent_id,
                    patient_id,
                    patient_name,
                    "\\".join(studies),
                    len(uids),
                    stamp,
                    stamp,
                ),
            ).fetchone()[0]
        )
        conn.executemany(
            f"INSERT INTO {DISC_JOB_INSTANCES} (job_id, sop_uid) VALUES (?, ?)", [(job_id, uid) for uid in uids]
        )
        conn.execute(
            f"INSERT INTO {DISC_JOB_EVENTS} (job_id, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)",
            (job_id, stamp, "", JobState.QUEUED.value, reason or f"{len(uids)} instance(s), {source}"),
        )
        LOGGER.info("disc job %d queued for robot %s: %s", job_id, robot, reason or f"{len(uids)} instance(s)")
        return job_id

    def get(self, job_id: int) -> Job:
        """A job by id.

        Raises
        ------
        NotFound
        """
        row = self.db.conn.execute(f"SELECT * FROM {DISC_JOBS} WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"there is no disc job {job_id}")
        return Job.from_row(row)

    def recent(self, limit: int = 50, states: Iterable[JobState] = ()) -> list[Job]:
        """Newest jobs first, optionally only some states."""
        wanted = [s.value for s in states]
        where = f"WHERE state IN ({','.join('?' * len(wanted))})" if wanted else ""
        rows = self.db.conn.execute(
            f"SELECT * FROM {DISC_JOBS} {where} ORDER BY id DESC LIMIT ?", (*wanted, limit)
        ).fetchall()
        return [Job.from_row(r) for r in rows]

    def active(self) -> list[Job]:
        """Jobs the robot has: submitted or burning, oldest first."""
        rows = self.db.conn.execute(
            f"SELECT * FROM {DISC_JOBS} WHERE state IN (?, ?) ORDER BY id",
            (JobState.SUBMITTED.value, JobState.BURNING.value),
        ).fetchall()
        return [Job.from_row(r) for r in rows]

    def instances(self, job_id: int) -> list[str]:
        """SOP Instance UIDs of a job."""
        rows = self.db.conn.execute(f"SELECT sop_uid FROM {DISC_JOB_INSTANCES} WHERE job_id = ?", (job_id,))
        return [r[0] for r in rows]

    def events(self, job_id: int) -> list[JobEvent]:
        """Every change of state of a job, oldest first."""
        rows = self.db.conn.execute(
            f"SELECT at, from_state, to_state, reason FROM {DISC_JOB_EVENTS} WHERE job_id = ? ORDER BY id", (job_id,)
        )
        return [JobEvent(*r) for r in rows]

    # -- changing -----------------------------------------------------------------------------------

    def transition(
        self,
        job_id: int,
        to: JobState,
        reason: str = "",
        *,
        expect: JobState | Iterable[JobState] | None = None,
        **fields: Any,
    ) -> Job:
        """Move a job to another state, persist it with a timestamped event, and return the new job.

        Parameters
        ----------
        job_id : int
        to : JobState
        reason : str
            Why, in one readable sentence (kept in the event log).
        expect : JobState or iterable of JobState, optional
            Refuse unless the job is in (one of) these states.
        **fields
            Columns set in the same write: media, disc_count, size, error, message, needs_staff, attempt, purged.

        Raises
        ------
        NotFound
        InvalidTransition
            The job is in a state from which ``to`` is not allowed (or not in ``expect``).
        """
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise ValueError(f"transition cannot set {', '.join(sorted(unknown))}")
        expected = {expect} if isinstance(expect, JobState) else set(expect or ())
        with self.db.transaction() as conn:
            row = conn.execute(f"SELECT state FROM {DISC_JOBS} WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"there is no disc job {job_id}")
            current = JobState(row[0])
            if (expected and current not in expected) or to not in TRANSITIONS[current]:
                raise InvalidTransition(f"job {job_id} is {current.value}; it cannot become {to.value}")
            stamp = now_text()
            sets = ", ".join(f"{name} = ?" for name in fields)
            extra = f", {sets}" if sets else ""
            conn.execute(
                f"UPDATE {DISC_JOBS} SET state = ?, updated = ?{extra} WHERE id = ? AND state = ?",
                (to.value, stamp, *[_column(v) for v in fields.values()], job_id, current.value),
            )
            conn.execute(
                f"INSERT INTO {DISC_JOB_EVENTS} (job_id, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)",
                (job_id, stamp, current.value, to.value, reason),
            )
        LOGGER.log(
            logging.WARNING if to is JobState.FAILED else logging.INFO,
            "disc job %d: %s -> %s%s",
            job_id,
            current.value,
            to.value,
            f": {reason}" if reason else "",
        )
        return self.get(job_id)

    def note(self, job_id: int, message: str, needs_staff: bool = False) -> None:
        """Record the robot's latest word on a job without changing its state (a hold, progress)."""
        self.db.conn.execute(
            f"UPDATE {DISC_JOBS} SET message = ?, needs_staff = ? WHERE id = ?", (message, int(needs_staff), job_id)
        )

    def set_fields(self, job_id: int, **fields: Any) -> None:
        """Set descriptive columns (not the state)."""
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise ValueError(f"cannot set {', '.join(sorted(unknown))}")
        sets = ", ".join(f"{name} = ?" for name in fields)
        self.db.conn.execute(
            f"UPDATE {DISC_JOBS} SET {sets} WHERE id = ?", (*[_column(v) for v in fields.values()], job_id)
        )

    def claim_next(self) -> Job | None:
        """Take the oldest queued job for authoring (queued -> authoring), or None."""
        while True:
            row = self.db.conn.execute(
                f"SELECT id FROM {DISC_JOBS} WHERE state = ? ORDER BY id LIMIT 1", (JobState.QUEUED.value,)
            ).fetchone()
            if row is None:
                return None
            try:
                return self.transition(row[0], JobState.AUTHORING, "authoring started", expect=JobState.QUEUED)
            except InvalidTransition:
                continue  # cancelled or taken in the meantime: look again

    def retry(self, job_id: int, reason: str = "retry requested") -> Job:
        """Queue a failed or cancelled job again (its staged discs are reused if still complete).

        Raises
        ------
        InvalidTransition
            The job is not failed or cancelled.
        """
        job = self.get(job_id)
        if job.state is JobState.DONE:  # the common slip: the staff meant "burn it again"
            raise InvalidTransition(
                f"job {job_id} is done; to burn its discs again use reburn "
                f"(`appliance jobs reburn {job_id}`), for new labels reprint"
            )
        return self.transition(
            job_id,
            JobState.QUEUED,
            reason,
            expect=(JobState.FAILED, JobState.CANCELLED),
            attempt=job.attempt + 1,
            error="",
            message="",
            needs_staff=False,
        )

    def repeat(self, job_id: int, source: str, copies: int | None = None, robot: str | None = None) -> int:
        """Queue a new job burning a finished job's discs again (``source`` is ``reburn`` or ``reprint``).

        Raises
        ------
        InvalidTransition
            The job is not done.
        """
        job = self.get(job_id)
        if job.state is not JobState.DONE:
            raise InvalidTransition(
                f"job {job_id} is {job.state.value}; only a done job can be "
                f"{'reburned' if source == 'reburn' else 'reprinted'} (retry a failed one)"
            )
        return self.create(
            robot or job.robot,
            copies or job.copies,
            self.instances(job_id),
            source,
            job.called_ae,
            parent_id=job_id,
            reason=f"{source} of job {job_id}",
        )

    # -- discs ----------------------------------------------------------------------------------------

    def set_discs(self, job_id: int, discs: Sequence[DiscSpec]) -> None:
        """Replace a job's discs (after authoring): no ticket yet."""
        stamp = now_text()
        with self.db.transaction() as conn:
            conn.execute(f"DELETE FROM {DISC_JOB_DISCS} WHERE job_id = ?", (job_id,))
            conn.executemany(
                f"INSERT INTO {DISC_JOB_DISCS} (job_id, number, media, size, volume, files, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(job_id, d.number, d.media, d.size, d.volume, json.dumps(dict(d.files)), stamp) for d in discs],
            )

    def discs(self, job_id: int) -> list[Disc]:
        """A job's discs in order."""
        rows = self.db.conn.execute(f"SELECT * FROM {DISC_JOB_DISCS} WHERE job_id = ? ORDER BY number", (job_id,))
        return [Disc.from_row(r) for r in rows]

    def update_disc(self, job_id: int, number: int, **fields: Any) -> None:
        """Record a disc's ticket or robot progress (robot_job_id, ticket, submitting, robot_state, reason...)."""
        allowed = {"robot_job_id", "ticket", "submitting", "robot_state", "reason", "error_code", "needs_staff"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot set {', '.join(sorted(unknown))}")
        sets = ", ".join(f"{name} = ?" for name in fields)
        self.db.conn.execute(
            f"UPDATE {DISC_JOB_DISCS} SET {sets}, updated = ? WHERE job_id = ? AND number = ?",
            (*[_column(v) for v in fields.values()], now_text(), job_id, number),
        )

    def finished_before(self, hours: float) -> list[Job]:
        """Finished jobs whose last change is older than ``hours`` and whose staging is not purged yet."""
        limit = (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rows = self.db.conn.execute(
            f"SELECT * FROM {DISC_JOBS} WHERE state IN (?, ?, ?) AND purged = '' AND updated <= ? ORDER BY id",
            (*[s.value for s in FINAL], limit),
        ).fetchall()
        return [Job.from_row(r) for r in rows]


def _column(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _describe(conn: sqlite3.Connection, uids: Sequence[str]) -> tuple[str, str, list[str]]:
    """Patient ID, patient name and study UIDs of some instances (the first patient's, for a mixed job)."""
    studies: dict[str, tuple[str, str]] = {}
    for start in range(0, len(uids), 500):
        chunk = uids[start : start + 500]
        rows = conn.execute(
            f"SELECT DISTINCT st.study_uid, p.patient_id, p.patient_name FROM {INSTANCES} i"
            f" JOIN {SERIES} s ON s.id = i.series_fk JOIN {STUDIES} st ON st.id = s.study_fk"
            f" JOIN {PATIENTS} p ON p.id = st.patient_fk WHERE i.sop_uid IN ({','.join('?' * len(chunk))})",
            chunk,
        )
        for study_uid, patient_id, patient_name in rows:
            studies.setdefault(study_uid, (patient_id, patient_name))
    first = next(iter(studies.values()), ("", ""))
    return first[0], first[1], list(studies)


class Author(Protocol):
    """What the engine needs from the disc author."""

    def author(self, job: Job) -> list[DiscSpec]:
        """Write a job's discs (file-sets, images, labels) and describe them."""


class Publisher(Protocol):
    """What the engine needs from the robot side."""

    def update(self, job_id: int) -> None:
        """Submit the job's discs that have no ticket, poll the others, move the job on."""


class JobEngine:
    """Two threads: one authors queued jobs (one at a time, the disk is the limit), one follows the robots.

    Parameters
    ----------
    jobs : JobStore
    author : Author
    publisher : Publisher
    poll_interval : float
        Seconds between looks at the robots (and at jobs queued by another process, e.g. ``appliance burn``).
    housekeeping : callable, optional
        Called every ``housekeeping_interval`` seconds from the monitor thread (the staging purge).
    housekeeping_interval : float
    """

    def __init__(
        self,
        jobs: JobStore,
        author: Author,
        publisher: Publisher,
        poll_interval: float = 2.0,
        housekeeping: Callable[[], Any] | None = None,
        housekeeping_interval: float = 60.0,
    ) -> None:
        self.jobs = jobs
        self.author = author
        self.publisher = publisher
        self.poll_interval = poll_interval
        self.housekeeping = housekeeping
        self.housekeeping_interval = housekeeping_interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        #: Jobs claimed for authoring whose next state the database refused (read-only, locked): queued again
        #: as soon as it takes writes, so they do not wait for a restart.
        self._stranded: set[int] = set()

    def start(self) -> None:
        """Requeue jobs a stop interrupted while authoring, then start both threads."""
        self.resume_interrupted()
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._author_loop, name="disc-author", daemon=True),
            threading.Thread(target=self._monitor_loop, name="disc-monitor", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def resume_interrupted(self) -> None:
        """Queue again the jobs a stop interrupted while authoring, or fail those interrupted too often.

        A job found authoring at start was cut off by a stop or a crash. It is queued again, unless
        restarts already interrupted it :data:`MAX_AUTHORING_RESTARTS` times in a row: then it is
        failed with the reason (staff may retry it), so that a job that takes the process down
        (memory, a hang) does not do so again at every start.
        """
        for job in self.jobs.recent(limit=10_000, states=[JobState.AUTHORING]):
            with contextlib.suppress(InvalidTransition):
                interrupted = self._restarts(job.id)
                if interrupted >= MAX_AUTHORING_RESTARTS:
                    # Not queued again: a job whose authoring took the process down would do it at every start.
                    reason = (
                        f"authoring was interrupted by a restart {interrupted + 1} times in a row; it is not"
                        " resumed (an instance may be too heavy to author); retry it once the cause is known"
                    )
                    self.jobs.transition(job.id, JobState.FAILED, reason, expect=JobState.AUTHORING, error=reason)
                    continue
                self.jobs.transition(job.id, JobState.QUEUED, _RESTARTED, expect=JobState.AUTHORING)

    def _restarts(self, job_id: int) -> int:
        """How many times in a row (since it was last queued by staff or routing) a restart interrupted the job."""
        count = 0
        for event in reversed(self.jobs.events(job_id)):
            if event.to_state == JobState.QUEUED.value:
                if event.reason != _RESTARTED:
                    break
                count += 1
        return count

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the threads; a job being authored is requeued at the next start."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def wake(self) -> None:
        """A job was queued in this process: author it now rather than at the next poll."""
        self._wake.set()

    def _author_loop(self) -> None:
        while not self._stop.is_set():
            job = None
            try:
                self._requeue_stranded()
                job = self.jobs.claim_next()
            except Exception as exc:
                _log_failure(exc, "cannot take the next disc job from the queue")
            if job is None:
                self._wake.wait(self.poll_interval)
                self._wake.clear()
                continue
            try:
                self.run_one(job)
            except Exception as exc:  # the database refused the job's next state: keep the thread alive
                _log_failure(exc, f"disc job {job.id}: its new state cannot be recorded, it is queued again later")
                self._stranded.add(job.id)

    def _requeue_stranded(self) -> None:
        for job_id in sorted(self._stranded):
            # A job changed meanwhile (cancelled by staff) has nothing to put back; a database still refusing
            # raises, and the job is tried again at the next turn.
            with contextlib.suppress(InvalidTransition, NotFound):
                self.jobs.transition(
                    job_id,
                    JobState.QUEUED,
                    "authoring was interrupted by a database failure",
                    expect=JobState.AUTHORING,
                )
            self._stranded.discard(job_id)

    def run_one(self, job: Job) -> None:
        """Author a claimed job, hand it to the robot, or fail it with the reason."""
        try:
            discs = self.author.author(job)
        except ApplianceError as exc:
            self._fail(job.id, str(exc))
            return
        except Exception as exc:  # a bug must fail the job, not stop the engine
            LOGGER.exception("authoring disc job %d failed", job.id)
            self._fail(job.id, f"unexpected error while authoring: {exc}")
            return
        self.jobs.set_discs(job.id, discs)
        media = discs[0].media if discs else ""
        size = sum(d.size for d in discs)
        try:
            self.jobs.transition(
                job.id,
                JobState.SUBMITTED,
                f"{len(discs)} {media} disc(s), {size / 1e6:.1f} MB, ready for robot {job.robot}",
                expect=JobState.AUTHORING,
                media=media,
                disc_count=len(discs),
                size=size,
                error="",
                message="",
            )
        except InvalidTransition as exc:
            LOGGER.info("disc job %d was not submitted: %s", job.id, exc)
            return
        self._update(job.id)

    def _fail(self, job_id: int, reason: str) -> None:
        try:
            self.jobs.transition(job_id, JobState.FAILED, reason, expect=JobState.AUTHORING, error=reason)
        except InvalidTransition as exc:
            LOGGER.info("disc job %d: %s", job_id, exc)

    def _update(self, job_id: int) -> None:
        try:
            self.publisher.update(job_id)
        except Exception as exc:
            _log_failure(exc, f"following disc job {job_id} on its robot failed")

    def _monitor_loop(self) -> None:
        last_housekeeping = -self.housekeeping_interval
        while not self._stop.wait(self.poll_interval):
            try:
                active = self.jobs.active()
            except Exception as exc:
                _log_failure(exc, "cannot read the active disc jobs")
                active = []
            for job in active:
                if self._stop.is_set():
                    return
                self._update(job.id)
            now = time.monotonic()
            if self.housekeeping is not None and now - last_housekeeping >= self.housekeeping_interval:
                last_housekeeping = now
                try:
                    self.housekeeping()
                except Exception:
                    LOGGER.exception("disc staging housekeeping failed")


#: Reason of the requeue of a job whose authoring a restart interrupted.
_RESTARTED = "authoring was interrupted by a restart"
#: A job interrupted this many times in a row is failed at the next start rather than authored again.
MAX_AUTHORING_RESTARTS = 2


def _log_failure(exc: Exception, what: str) -> None:
    """Log a failure of the engine's threads: one line for a database that refuses (read-only, locked), which
    repeats at every poll until fixed; the traceback for anything else, which is a bug."""
    if isinstance(exc, sqlite3.Error):
        LOGGER.error("%s: %s", what, describe(exc))
    else:
        LOGGER.exception(what)
