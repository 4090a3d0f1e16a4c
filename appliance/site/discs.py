"""Disc jobs and robots for the front desk: burn a study, the burn queue, job actions, robot status.

The room of the burn queue and robots pages. It builds no robot and no publisher: :mod:`appliance.cli` hands it
the running disc publishing (:meth:`Discs.use_publishing`) or, outside ``appliance serve``, the configured robots
and a publisher to cancel with (:meth:`Discs.use_robots`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from appliance.config import Config
from appliance.db import Database
from appliance.errors import InvalidTransition, InvalidValue, NotFound
from appliance.site.studies import Studies

if TYPE_CHECKING:  # pragma: no cover
    from appliance.discs.jobs import Job, JobStore
    from appliance.discs.publishing import Publishing
    from robots import DiscRobot

#: Disc job actions and the job states that allow them (as ``appliance jobs retry|cancel|reburn|reprint``).
JOB_ACTIONS: dict[str, tuple[str, ...]] = {
    "retry": ("failed", "cancelled"),
    "cancel": ("queued", "authoring", "submitted", "burning"),
    "reburn": ("done",),
    "reprint": ("done",),
}
_DONE_WORDS = {"retry": "retried", "cancel": "cancelled", "reburn": "burned again", "reprint": "reprinted"}


class Canceller(Protocol):
    """What cancels a job (:class:`~appliance.discs.publisher.DiscPublisher`): at once, or with the robot."""

    def cancel(self, job_id: int, reason: str = ...) -> Job:
        """Cancel the job; the job as it is now."""


class Discs:
    """Disc jobs and robots.

    Parameters
    ----------
    config : Config
        ``[burn]`` (default robot, copies) and the robot tables.
    db : Database
        The database (the burn queue's study names).
    studies : Studies
        The stored studies (a burn is only of a stored study).
    jobs : JobStore
        The disc job store.
    """

    def __init__(self, config: Config, db: Database, studies: Studies, jobs: JobStore) -> None:
        self.config = config
        self.db = db
        self.studies = studies
        self.jobs = jobs
        #: The configured robots by name; none until the composition root hands them over.
        self.robots: dict[str, DiscRobot] = {}
        self._publisher: Canceller | None = None
        self._wake: Callable[[], None] = lambda: None
        self._simulated: Collection[str] = ()

    def use_robots(
        self,
        robots: Mapping[str, DiscRobot],
        publisher: Canceller,
        jobs: JobStore | None = None,
        wake: Callable[[], None] | None = None,
        simulated: Collection[str] = (),
    ) -> None:
        """Use these robots, this publisher (to cancel), and ``wake`` to tell the job engine about new work."""
        self.robots = dict(robots)
        self._publisher = publisher
        if jobs is not None:
            self.jobs = jobs
        if wake is not None:
            self._wake = wake
        self._simulated = simulated

    def use_publishing(self, publishing: Publishing) -> None:
        """Use the running disc publishing of ``appliance serve`` (its robots, engine and publisher)."""
        self.use_robots(
            publishing.robots, publishing.publisher, publishing.jobs, publishing.engine.wake, publishing.simulators
        )

    def robot_names(self) -> list[str]:
        """Names of the configured robots, the default one first."""
        from appliance.discs.publishing import robot_tables

        names = list(robot_tables(self.config))
        default = self.config.burn.default_robot
        return sorted(names, key=lambda n: n != default)

    def burn(self, study_uid: str, robot: str = "", copies: int | None = None, actor: str = "") -> Job:
        """Queue a disc job for a stored study, as ``appliance burn`` does.

        Parameters
        ----------
        study_uid : str
        robot : str
            A configured robot; default ``[burn] default_robot``, else the first one.
        copies : int, optional
            1-99; default ``[burn] copies``.
        actor : str
            Who asked (kept in the job's first event).

        Returns
        -------
        Job
            The queued job.

        Raises
        ------
        NotFound
            The study is not stored.
        InvalidValue
            Unknown robot or copies out of range.
        """
        from appliance.discs.content import study_instances

        self.studies.study(study_uid)
        uids = study_instances(self.db, study_uid)
        if not uids:
            raise NotFound(f"study {study_uid} has no instances")
        names = self.robot_names()
        robot = robot or (names[0] if names else "")
        if robot not in names:
            raise InvalidValue(f"there is no robot {robot!r}; configured robots: {', '.join(names) or 'none'}")
        copies = self.config.burn.copies if copies is None else copies
        if not 1 <= copies <= 99:
            raise InvalidValue(f"copies must be 1-99, not {copies}")
        job_id = self.jobs.create(
            robot,
            copies,
            uids,
            "manual",
            reason=f"burn requested on the web by {actor or 'staff'}: {len(uids)} instance(s)",
        )
        self._wake()
        return self.jobs.get(job_id)

    def job(self, job_id: int) -> Job:
        """A disc job.

        Raises
        ------
        NotFound
        """
        return self.jobs.get(job_id)

    def study_info(self, study_uids: list[str]) -> dict[str, dict[str, str]]:
        """``study_date``, ``description`` and ``modalities`` of each of these studies that is stored."""
        out: dict[str, dict[str, str]] = {}
        for start in range(0, len(study_uids), 500):
            part = study_uids[start : start + 500]
            rows = self.db.conn.execute(
                f"SELECT study_uid, study_date, description, modalities FROM studies WHERE study_uid IN "
                f"({','.join('?' * len(part))})",
                part,
            )
            for row in rows:
                out[row["study_uid"]] = {
                    "study_date": row["study_date"],
                    "description": row["description"],
                    "modalities": row["modalities"],
                }
        return out

    def job_rows(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest disc jobs as plain data for the burn queue page and its JSON.

        Each row has ``id, state, patient_name, patient_id, studies, study_info`` (per study its record, None
        when it is no longer stored), ``robot, media, discs, copies, size, source, parent_id, attempt, note,
        needs_staff, robot_discs`` (``number, robot_state, reason`` of each disc the robot has seen),
        ``updated``, ``actions`` (those its state allows) and ``labels`` (disc numbers with a label PDF).
        """
        rows = []
        recent = self.jobs.recent(limit=limit)
        info = self.study_info(sorted({s for job in recent for s in job.studies}))
        for job in recent:
            discs = self.jobs.discs(job.id)
            rows.append(
                {
                    "id": job.id,
                    "state": job.state.value,
                    "patient_name": job.patient_name,
                    "patient_id": job.patient_id,
                    "studies": list(job.studies),
                    "study_info": [info.get(s) for s in job.studies],
                    "robot": job.robot,
                    "media": job.media,
                    "discs": job.disc_count,
                    "copies": job.copies,
                    "size": job.size,
                    "source": job.source,
                    "parent_id": job.parent_id,
                    "attempt": job.attempt,
                    "note": job.error if job.state.value == "failed" else job.message,
                    "needs_staff": job.needs_staff,
                    "updated": job.updated,
                    "robot_discs": [
                        {"number": d.number, "robot_state": d.robot_state, "reason": d.reason}
                        for d in discs
                        if d.ticket or d.robot_state
                    ],
                    "actions": [a for a, states in JOB_ACTIONS.items() if job.state.value in states],
                    "labels": [d.number for d in discs if _label_path(d.files) is not None],
                }
            )
        return rows

    def queue_depths(self) -> dict[str, Any]:
        """``disc_jobs`` (jobs per state) and ``pending_burn_groups`` (delayed groups not yet a job), for health."""
        jobs = {
            str(state): int(count)
            for state, count in self.db.conn.execute("SELECT state, COUNT(*) FROM disc_jobs GROUP BY state")
        }
        pending = int(self.db.conn.execute("SELECT COUNT(*) FROM burn_groups").fetchone()[0])
        return {"disc_jobs": jobs, "pending_burn_groups": pending}

    def job_label(self, job_id: int, disc: int = 1) -> Path:
        """The label PDF of one disc of a job.

        Raises
        ------
        NotFound
            No such job or disc, or its label is not (or no longer) staged.
        """
        self.jobs.get(job_id)
        for d in self.jobs.discs(job_id):
            if d.number == disc and (path := _label_path(d.files)) is not None:
                return path
        raise NotFound(f"job {job_id} has no label for disc {disc}")

    def job_action(self, job_id: int, action: str, actor: str = "") -> Job:
        """Retry, cancel, reburn or reprint a job, as ``appliance jobs <action>``.

        Returns
        -------
        Job
            The job changed (retry, cancel) or the new job (reburn, reprint).

        Raises
        ------
        NotFound
            No such job or action.
        InvalidTransition
            The job's state does not allow it (the message says which states do), or no robots are wired to
            cancel with.
        PublishError
            The robot refused to cancel.
        """
        if action not in JOB_ACTIONS:
            raise NotFound(f"unknown job action {action!r}")
        job = self.jobs.get(job_id)
        by = f"on the web by {actor or 'staff'}"
        if job.state.value not in JOB_ACTIONS[action]:
            raise InvalidTransition(
                f"job {job_id} is {job.state.value}; only {' or '.join(JOB_ACTIONS[action])} "
                f"jobs can be {_DONE_WORDS[action]}"
            )
        if action == "retry":
            result = self.jobs.retry(job_id, f"retry requested {by}")
        elif action == "cancel":
            if self._publisher is None:
                raise InvalidTransition(f"job {job_id} cannot be cancelled here: disc publishing is not running")
            result = self._publisher.cancel(job_id, f"cancelled {by}")
        else:
            result = self.jobs.get(self.jobs.repeat(job_id, action))
        self._wake()
        return result

    # -- robots -------------------------------------------------------------------------------------

    def robot_report(self) -> list[dict[str, Any]]:
        """Every configured robot with its bridge status (``robot.status()``), as plain data."""
        from robots import RobotError

        out = []
        for name, robot in self.robots.items():
            row: dict[str, Any] = {
                "name": name,
                "vendor": robot.vendor,
                "location": robot.location,
                "simulated": name in self._simulated,
            }
            try:
                st = robot.status()
            except RobotError as exc:
                row.update(
                    online=False,
                    state="unknown",
                    reason=f"status unavailable: {exc}",
                    ink={},
                    media={},
                    media_unit="%",
                    drives=[],
                    errors=[],
                    bridge="",
                )
            else:
                row.update(
                    online=st.online,
                    state=st.state.value,
                    reason=st.reason,
                    ink=dict(st.ink),
                    media=dict(st.media),
                    media_unit=st.media_unit,
                    errors=list(st.errors),
                    bridge=st.bridge,
                    drives=[{"name": d.name, "state": d.state, "percent": d.percent} for d in st.drives],
                )
            out.append(row)
        return out

    @staticmethod
    def usb_summary() -> dict[str, Any]:
        """The USB detection: ``{"available", "devices": [text], "message"}``."""
        from robots.detect import detect_usb

        scan = detect_usb()
        return {"available": scan.available, "devices": [d.describe() for d in scan.devices], "message": scan.message}


def _label_path(files: Mapping[str, Any]) -> Path | None:
    value = (files.get("label") or {}).get("pdf")
    path = Path(value) if value else None
    return path if path is not None and path.is_file() else None
