"""Hand authored discs to their robot and follow them until the job is done, failed or cancelled.

The publisher knows robots only through :class:`robots.DiscRobot`: it builds a :class:`robots.BurnRequest` per
disc, keeps the returned ticket with the disc, and maps each :class:`robots.JobProgress` to the job's state:

========================  =========================================================================
robot says                job
========================  =========================================================================
pending, accepted         submitted
burning, paused           burning (paused: held, with the robot's reason, until someone acts)
waiting for staff         state kept, held with the reason ("input stacker empty: load blank discs")
bridge offline            state kept, held ("bridge offline: no answer from TD Bridge for 90 s")
done (every disc)         done
failed (any disc)         failed with the robot's reason and code; the other discs are cancelled
cancelled at the robot    cancelled
========================  =========================================================================

A submission is recorded before and after it is made, so a crash in between neither loses the disc nor
burns it twice: on the next look the robot is asked about the job id first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from appliance.discs.jobs import Disc, Job, JobState, JobStore
from appliance.errors import InvalidTransition, PublishError
from robots import (
    BurnRequest,
    CancelError,
    DiscRobot,
    HotFolderError,
    JobProgress,
    LabelFiles,
    RobotError,
    UnknownTicketError,
)
from robots import JobState as RobotJobState

LOGGER = logging.getLogger(__name__)

_ACTIVE = (JobState.SUBMITTED, JobState.BURNING)


class DiscPublisher:
    """Submit discs to robots and turn their progress into job states.

    Parameters
    ----------
    jobs : JobStore
    robots : mapping of str to DiscRobot
        Configured robots by name.
    verify : bool
        Ask the robot to compare each disc after writing.
    """

    def __init__(self, jobs: JobStore, robots: Mapping[str, DiscRobot], verify: bool = True) -> None:
        self.jobs = jobs
        self.robots = dict(robots)
        self.verify = verify
        self._lock = threading.Lock()

    # -- following a job ----------------------------------------------------------------------------------

    def update(self, job_id: int) -> None:
        """Submit the job's discs that have no ticket yet, poll the others, and move the job on."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job.state not in _ACTIVE:
                return
            robot = self.robots.get(job.robot)
            if robot is None:
                self._finish(
                    job,
                    JobState.FAILED,
                    f"robot {job.robot!r} is not configured (configured: {', '.join(sorted(self.robots)) or 'none'})",
                )
                return
            for disc in self.jobs.discs(job_id):
                if not disc.ticket and not self._submit(job, disc, robot):
                    return
            progress = {d.number: self._poll(job, d, robot) for d in self.jobs.discs(job_id)}
            self._settle(job, robot, progress)

    def _submit(self, job: Job, disc: Disc, robot: DiscRobot) -> bool:
        """Give one disc to the robot; False (and the job failed) if the robot refused it."""
        robot_job_id = f"J{job.id}D{disc.number}A{job.attempt}"
        if disc.submitting and disc.robot_job_id:
            # A previous run crashed between writing the job file and recording the ticket: adopt it.
            try:
                robot.poll(disc.robot_job_id)
                self.jobs.update_disc(job.id, disc.number, ticket=disc.robot_job_id, submitting=False)
                LOGGER.info(
                    "disc job %d: disc %d was already with robot %s as %s",
                    job.id,
                    disc.number,
                    robot.name,
                    disc.robot_job_id,
                )
                return True
            except RobotError:
                pass
        try:
            request = self.request(job, disc, robot_job_id)
            self.jobs.update_disc(job.id, disc.number, robot_job_id=robot_job_id, submitting=True)
            ticket = robot.submit(request)
        except RobotError as exc:
            self.jobs.update_disc(job.id, disc.number, submitting=False)
            self._cancel_discs(job, robot)  # the discs already given to the robot would be an incomplete set
            what = "cannot reach the robot's hot folder" if isinstance(exc, HotFolderError) else "the robot refused"
            self._finish(job, JobState.FAILED, f"disc {disc.number} of {job.disc_count or 1}: {what}: {exc}")
            return False
        self.jobs.update_disc(
            job.id,
            disc.number,
            ticket=ticket,
            submitting=False,
            robot_state=RobotJobState.PENDING.value,
            reason="submitted",
        )
        self._keep_job_files(robot, request, ticket, Path(disc.files.get("dir", "")))
        LOGGER.info("disc job %d: disc %d submitted to robot %s as %s", job.id, disc.number, robot.name, ticket)
        return True

    def request(self, job: Job, disc: Disc, robot_job_id: str) -> BurnRequest:
        """The robot request for one disc: its ISO image and its label files.

        Raises
        ------
        RobotError
            The request does not fit the robot interface (bad copies or media).
        """
        label = disc.files.get("label", {})

        def path(key: str) -> Path | None:
            value = label.get(key)
            return Path(value) if value else None

        labels = LabelFiles(pdf=path("pdf"), jpg=path("jpg"), bmp=path("bmp"), fields=dict(label.get("fields") or {}))
        return BurnRequest(
            robot_job_id,
            job.copies,
            disc.media,
            disc.volume,
            image_path=Path(disc.files["iso"]),
            label=labels,
            verify=self.verify,
        )

    @staticmethod
    def _keep_job_files(robot: DiscRobot, request: BurnRequest, ticket: str, folder: Path) -> None:
        """Copy what was sent to the robot into the disc's folder, for support and audits."""
        if not folder.is_dir():
            return
        try:
            for name, data in robot.render(request, ticket).items():
                (folder / name).write_bytes(data)
        except (RobotError, OSError) as exc:
            LOGGER.warning("cannot keep a copy of robot job %s: %s", ticket, exc)

    def _poll(self, job: Job, disc: Disc, robot: DiscRobot) -> JobProgress:
        if disc.robot_state and RobotJobState(disc.robot_state).final:
            return JobProgress(RobotJobState(disc.robot_state), disc.reason, disc.error_code or None)
        try:
            progress = robot.poll(disc.ticket)
        except UnknownTicketError:
            progress = JobProgress(
                RobotJobState.FAILED,
                f"robot {robot.name} has no record of job {disc.ticket} any more (was its hot folder cleaned?)",
                retry_possible=True,
            )
        except RobotError as exc:  # the hot folder cannot be read: the job file may still be there
            progress = JobProgress(
                RobotJobState.BRIDGE_OFFLINE,
                f"cannot read robot {robot.name}: {exc}",
                retry_possible=True,
                needs_staff=True,
            )
        if progress.state.value != disc.robot_state or progress.reason != disc.reason:
            self.jobs.update_disc(
                job.id,
                disc.number,
                robot_state=progress.state.value,
                reason=progress.reason,
                error_code=progress.error_code or "",
                needs_staff=progress.needs_staff,
            )
        return progress

    def _settle(self, job: Job, robot: DiscRobot, progress: Mapping[int, JobProgress]) -> None:
        states = [p.state for p in progress.values()]
        count = len(progress)

        def prefix(number: int) -> str:
            return f"disc {number} of {count}: " if count > 1 else ""

        if states and all(s is RobotJobState.DONE for s in states):
            reasons = "; ".join(prefix(n) + p.reason for n, p in progress.items())
            # What staff should know of a good job ("no label printed (no template configured)") stays as its note.
            notes = "; ".join(dict.fromkeys(note for p in progress.values() for note in p.notes))
            self._finish(job, JobState.DONE, reasons or "published", note=notes)
            return
        failed = [(n, p) for n, p in progress.items() if p.state is RobotJobState.FAILED]
        if failed:
            number, first = failed[0]
            code = _code(first)
            self._cancel_discs(job, robot)
            self._finish(job, JobState.FAILED, f"robot {robot.name}: {prefix(number)}{first.reason}{code}")
            return
        if states and all(s.final for s in states):
            self._finish(job, JobState.CANCELLED, f"cancelled at robot {robot.name}")
            return
        held = [
            (n, p)
            for n, p in progress.items()
            if p.needs_staff or p.state in (RobotJobState.PAUSED, RobotJobState.BRIDGE_OFFLINE)
        ]
        if held:
            number, first = held[0]
            code = _code(first)
            message, staff = f"held: {prefix(number)}{first.reason}{code}", True
        else:
            running = [(n, p) for n, p in progress.items() if not p.state.final]
            message = prefix(running[0][0]) + running[0][1].reason if running else ""
            staff = False
        if message != job.message or staff != job.needs_staff:
            self.jobs.note(job.id, message, staff)
            if staff:
                LOGGER.warning("disc job %d %s", job.id, message)
        if job.state is JobState.SUBMITTED and any(s in (RobotJobState.BURNING, RobotJobState.PAUSED) for s in states):
            self._finish(job, JobState.BURNING, message or "the robot is writing")

    def _finish(self, job: Job, to: JobState, reason: str, note: str = "") -> None:
        message = note if to is JobState.DONE else "" if to is JobState.BURNING else reason
        fields: dict[str, object] = {"message": message, "needs_staff": False}
        if to is JobState.FAILED:
            fields["error"] = reason
        if to is JobState.BURNING:
            fields.pop("message")
            fields.pop("needs_staff")
        try:
            self.jobs.transition(job.id, to, reason, expect=_ACTIVE, **fields)
        except InvalidTransition as exc:  # cancelled from the CLI meanwhile
            LOGGER.info("disc job %d: %s", job.id, exc)

    # -- cancelling -----------------------------------------------------------------------------------------

    def _cancel_discs(self, job: Job, robot: DiscRobot) -> list[str]:
        """Ask the robot to cancel the job's unfinished discs; return the refusals."""
        refused = []
        for disc in self.jobs.discs(job.id):
            if not disc.ticket or (disc.robot_state and RobotJobState(disc.robot_state).final):
                continue
            try:
                robot.cancel(disc.ticket)
                self.jobs.update_disc(
                    job.id, disc.number, robot_state=RobotJobState.CANCELLED.value, reason="cancelled on request"
                )
            except UnknownTicketError:
                continue
            except CancelError as exc:
                refused.append(f"disc {disc.number}: {exc}")
            except RobotError as exc:
                refused.append(f"disc {disc.number}: {exc}")
        return refused

    def cancel(self, job_id: int, reason: str = "cancelled on request") -> Job:
        """Cancel a job: a queued one at once, one with the robot after the robot agreed.

        Raises
        ------
        InvalidTransition
            The job is finished (done, failed or cancelled).
        PublishError
            The robot refused to cancel a disc (it may be finishing).
        """
        with self._lock:
            job = self.jobs.get(job_id)
            if job.state in (JobState.QUEUED, JobState.AUTHORING):
                return self.jobs.transition(job_id, JobState.CANCELLED, reason, expect=job.state)
            if job.state not in _ACTIVE:
                raise InvalidTransition(
                    f"job {job_id} is {job.state.value}; only queued, authoring, submitted or "
                    "burning jobs can be cancelled"
                )
            robot = self.robots.get(job.robot)
            refused = self._cancel_discs(job, robot) if robot is not None else []
            if refused:
                raise PublishError(f"robot {job.robot} did not cancel job {job_id}: {'; '.join(refused)}")
            try:
                return self.jobs.transition(
                    job_id, JobState.CANCELLED, reason, expect=_ACTIVE, message="", needs_staff=False
                )
            except InvalidTransition:
                # The engine of a running `appliance serve` saw the robot's answer first.
                job = self.jobs.get(job_id)
                if job.state is JobState.CANCELLED:
                    return job
                raise


def _code(progress: JobProgress) -> str:
    """`` (CODE)`` after a reason that does not name the robot's error code yet."""
    code = progress.error_code
    return f" ({code})" if code and code not in progress.reason else ""
