"""Primera Disc Publisher / Bravo through the PTBurn service: ``.JRQ`` job files, ``Status\\*.txt`` status.

Lifecycle (specs/robots.md §2.1): ``.JRQ`` (ours) -> ``.QRJ`` (discovered, queued) -> ``.INP`` (in process)
-> ``.DON`` or ``.ERR``.  A job is aborted with a ``.PTM`` file of the same base name holding
``Message = ABORT``.  PTBurn is alive while ``ServerTickCount`` in ``SystemStatus.txt`` keeps increasing.
"""

from __future__ import annotations

import codecs
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from robots.base import (
    BurnRequest,
    CancelError,
    DriveStatus,
    JobProgress,
    JobState,
    RobotConfigError,
    RobotState,
    RobotStatus,
    UnknownTicketError,
)
from robots.codes import describe_primera
from robots.hotfolder import (
    HotFolderConfig,
    HotFolderRobot,
    Ini,
    as_int,
    atomic_write,
    clean_field,
    encode_text,
    job_files,
    read_ini,
    transliterate,
    wait_until,
)

LOGGER = logging.getLogger(__name__)

DATA_IMAGE_TYPES = (
    "ISOLEVEL1",
    "ISOLEVEL2",
    "ISOLEVEL3",
    "JOLIET",
    "ISOLEVEL1+JOLIET",
    "ISOLEVEL2+JOLIET",
    "ISOLEVEL3+JOLIET",
    "UDF",
    "UDF201",
    "UDF250",
    "UDF260",
)
IMAGE_TYPES = ("MODE_1_2048", "MODE_2_2336", "MODE_2_2352")
MAX_MERGE_CHARS = 260
#: ``CartridgeTypeX`` (PTBurn 3 SDK §3.1.3.8, PTRobot.h): 0 none, 1 colour, 2 black, 3-5 single-colour tanks.
CARTRIDGES: Mapping[int, str] = {1: "colour", 2: "black", 3: "yellow", 4: "cyan", 5: "magenta"}
CARTRIDGE_NONE = 0
#: Robots with four ink tanks record five cartridges (black, colour = the lowest tank, yellow, cyan, magenta).
MAX_CARTRIDGES = 8
#: ``JobState`` / ``CurrentStatusState`` of a job PTBurn 3.3.0+ moved to another robot (``AutoSwitchRobot``).
JOB_MOVED = 4
STATE_MOVED = 18
#: Codecs PTBurn cannot read: its MBCS build takes the ANSI code page, its Unicode build UTF-16LE with a BOM.
UNREADABLE_CODECS = ("utf-8", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "utf-7")
DRIVE_STATES: Mapping[int, str] = {
    0: "idle",
    1: "recording",
    2: "reading",
    3: "verifying",
    4: "disc loaded",
    5: "verify failed",
    6: "verify complete",
    7: "record failed",
    8: "record complete",
}
STATUS_STATES: Mapping[int, str] = {
    0: "recording",
    1: "reading",
    2: "verifying",
    3: "printing",
    4: "loading a disc",
    5: "unloading a disc",
    6: "waiting for the printer",
    7: "waiting for the recorder",
    8: "finishing",
    9: "rejecting a disc",
    10: "job complete",
    11: "paused",
    12: "resumed",
    13: "aborted",
    14: "initializing",
    15: "failed",
    16: "pre-mastering",
    17: "system OK",
    18: "moved to another robot",
}


#: The PTSETUP.INI-renameable extensions, as config keys, in lifecycle order.
EXTENSION_KEYS = ("job_extension", "queued_extension", "running_extension", "done_extension", "error_extension")


@dataclass(frozen=True)
class PrimeraConfig(HotFolderConfig):
    """Options of a ``[robots.primera]`` table; see docs/robots.md for each key."""

    robot_name: str = ""
    client_id: str = "appliance"
    importance: int = 4
    priority_importance: int = 0
    data_image_type: str = "ISOLEVEL2+JOLIET"
    image_type: str = "MODE_1_2048"
    close_disc: bool = True
    reject_if_not_blank: bool = True
    burn_speed: int = 0
    print_quality: int = -1
    job_extension: str = "JRQ"
    queued_extension: str = "QRJ"
    running_extension: str = "INP"
    done_extension: str = "DON"
    error_extension: str = "ERR"
    status_dir: str = "Status"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.client_id or len(self.client_id) > 32:
            raise RobotConfigError("client_id: 1-32 characters (PTBurn needs it to abort a job)")
        for key in ("importance", "priority_importance"):
            if not 0 <= getattr(self, key) <= 400:
                raise RobotConfigError(f"{key}: 0-400, 0 is the most important")
        if self.data_image_type.split(",")[0].strip() not in DATA_IMAGE_TYPES:
            raise RobotConfigError(f"data_image_type: use one of {', '.join(DATA_IMAGE_TYPES)}")
        if self.image_type not in IMAGE_TYPES:
            raise RobotConfigError(f"image_type: use one of {', '.join(IMAGE_TYPES)}")
        if not 0 <= self.burn_speed <= 100:
            raise RobotConfigError("burn_speed: 1-100 (x), 0 for the maximum")
        if not -1 <= self.print_quality <= 4:
            raise RobotConfigError("print_quality: 0 (low) to 4 (best), -1 leaves the key out")
        exts = self.extensions()
        for key, ext in zip(EXTENSION_KEYS, exts, strict=True):
            if not ext.isalnum():
                raise RobotConfigError(f"{key}: letters and digits only, as set in PTSETUP.INI")
        if len({ext.upper() for ext in (*exts, "PTM", "CANCELLED")}) != len(exts) + 2:
            raise RobotConfigError(
                f"{', '.join(EXTENSION_KEYS)} must differ from each other and from PTM (the abort message)"
            )
        if codecs.lookup(self.encoding).name in UNREADABLE_CODECS:
            raise RobotConfigError(
                'encoding: PTBurn reads "cp1252" (its MBCS build; or the PC\'s ANSI code page) or "utf-16" '
                f"(its Unicode build), not {self.encoding!r}"
            )

    def extensions(self) -> tuple[str, str, str, str, str]:
        """Job, queued, in-process, done and error extensions, upper case, in lifecycle order."""
        return (
            self.job_extension.upper(),
            self.queued_extension.upper(),
            self.running_extension.upper(),
            self.done_extension.upper(),
            self.error_extension.upper(),
        )


def yes_no(flag: bool) -> str:
    """PTBurn's boolean spelling."""
    return "YES" if flag else "NO"


class PrimeraRobot(HotFolderRobot):
    """Primera robot driven through the PTBurn service's job folder."""

    bridge_name = "PTBurn"
    max_ticket = 32

    def __init__(self, config: PrimeraConfig) -> None:
        super().__init__(config, "primera")
        self.config: PrimeraConfig = config
        self.job_ext, self.queued_ext, self.running_ext, self.done_ext, self.error_ext = config.extensions()

    @property
    def vendor(self) -> str:
        return "Primera (PTBurn)"

    # ------------------------------------------------------------------------------------------ job file

    def render(self, req: BurnRequest, ticket: str | None = None) -> dict[str, bytes]:
        """Return ``{"<ticket>.JRQ": ...}`` exactly as :meth:`submit` writes it.

        Keys follow the PTBurn SDK example (spec §2.2), written ``Key = Value`` with CRLF line ends.
        """
        ticket = ticket or req.job_id
        cfg = self.config
        to_bridge = self.paths.to_bridge
        lines = [
            f"JobID = {ticket}",
            f"ClientID = {cfg.client_id}",
            f"Importance = {cfg.priority_importance if req.priority else cfg.importance}",
        ]
        if req.image_path is not None:
            lines.append(f"ImageFile = {to_bridge(req.image_path)}")
            lines.append(f"ImageType = {cfg.image_type}")
        else:
            lines.extend(f"Data = {to_bridge(path)}" for path in req.data_paths)
            lines.append(f"DataImageType = {cfg.data_image_type}")
        lines.append(f"CloseDisc = {yes_no(cfg.close_disc)}")
        lines.append(f"Copies = {req.copies}")
        lines.extend(self._label_lines(req))
        if req.image_path is None:
            lines.append(f"VolumeName = {volume_name(req.volume_label, ticket)}")
        lines.append(f"VerifyDisc = {yes_no(req.verify)}")
        lines.append(f"RejectIfNotBlank = {yes_no(cfg.reject_if_not_blank)}")
        if cfg.burn_speed:
            lines.append(f"BurnSpeed = {cfg.burn_speed}")
        if cfg.print_quality >= 0:
            lines.append(f"PrintQuality = {cfg.print_quality}")
        if cfg.robot_name:
            lines.append(f"RobotName = {cfg.robot_name}")
        return {f"{ticket}.{self.job_ext}": encode_text(lines, cfg.encoding, f"job {ticket}")}

    def _label_lines(self, req: BurnRequest) -> list[str]:
        cfg = self.config
        template = self.template_path(req.label.std)
        if template:
            lines = [f"PrintLabel = {template}"]
            for value in req.label.fields.values():  # SureThing takes merge fields by position
                text = transliterate(clean_field(value, MAX_MERGE_CHARS), cfg.encoding)
                lines.append(f"MergeField = {text}")
            return lines
        image = req.label.jpg or req.label.bmp
        return [f"PrintLabel = {self.paths.to_bridge(image)}"] if image is not None else []

    # ------------------------------------------------------------------------------------------ status files

    def _read_status(self) -> tuple[Ini | None, Ini | None, str, float]:
        """Read SystemStatus.txt and the robot's file; return both, the robot name, seconds since a tick."""
        folder = self.hotfolder / self.config.status_dir
        system_path = folder / "SystemStatus.txt"
        system = read_ini(system_path, required=("System",), encoding=self.config.encoding)
        if system is None:
            self.liveness.reset()
            return None, None, self.config.robot_name, float("inf")
        robot = self.config.robot_name or system.get("RobotList", {}).get("Robot0", "")
        tick = system["System"].get("ServerTickCount")
        age = self._status_age(system_path, tick if tick is not None else _stat_signature(system_path))
        return system, self._robot_file(system, robot), robot, age

    def _known_job_ids(self) -> set[str]:
        _, robot_ini, _, _ = self._read_status()
        if robot_ini is None:
            return set()
        return {name.upper() for name, sec in robot_ini.items() if "JobState" in sec or "JobID" in sec}

    def _robot_file(self, system: Ini, robot: str) -> Ini | None:
        folder = self.hotfolder / self.config.status_dir
        status_file = system.get(robot, {}).get("StatusFile") or f"{robot}.txt"
        return read_ini(folder / status_file, required=("System",), encoding=self.config.encoding)

    def _job_section(
        self, system: Ini | None, robot_ini: Ini | None, robot: str, ticket: str
    ) -> tuple[dict[str, str], str]:
        """The job's status section and the robot it is on, following a job PTBurn moved to another robot."""
        section = dict((robot_ini or {}).get(ticket, {}))
        if system is None or not _moved(section):
            return section, robot
        for other in system.get("RobotList", {}).values():
            if other == robot:
                continue
            found = (self._robot_file(system, other) or {}).get(ticket)
            if found and not _moved(found):
                return dict(found), other
        return section, robot

    # ------------------------------------------------------------------------------------------ poll

    def poll(self, ticket: str) -> JobProgress:
        """Follow the job file's renames and its section in the robot's status file.

        A job PTBurn moved to another robot (``JobState = 4``) is followed to that robot's status file.
        """
        files = job_files(self.hotfolder, ticket)
        system, robot_ini, robot, age = self._read_status()
        section, where = self._job_section(system, robot_ini, robot, ticket)
        if self.done_ext in files:
            return _on_robot(_finished(section, failed=False), where, robot)
        if self.error_ext in files:
            return _on_robot(_finished(section, failed=True), where, robot)
        if self.job_ext in files:
            waited = self._pending_seconds(ticket, files[self.job_ext])
            if waited > self.config.offline_timeout:
                return self._offline(waited)
            return JobProgress(JobState.PENDING, "waiting for PTBurn to pick up the job", retry_possible=True)
        if self.queued_ext in files or self.running_ext in files:
            if age > self.config.status_timeout:
                since = age if system is not None else self._pending_seconds(ticket, next(iter(files.values())))
                return self._offline(since)
            progress = _running(self.running_ext in files, section, (system or {}).get(where, {}))
            return self._forward_only(ticket, _on_robot(progress, where, robot))
        if "CANCELLED" in files:
            return self._withdrawn()
        job_state = as_int(section.get("JobState"))
        if job_state in (2, 3):  # files already deleted after Status_Time
            return _on_robot(_finished(section, failed=job_state == 3), where, robot)
        raise UnknownTicketError(f"no job {ticket!r} in {self.hotfolder} or in PTBurn's status files")

    # ------------------------------------------------------------------------------------------ cancel

    def cancel(self, ticket: str) -> None:
        """Withdraw a job PTBurn has not read yet, else send ``Message = ABORT`` and wait for the ``.ERR``."""
        files = job_files(self.hotfolder, ticket)
        if self._withdraw(ticket, files):
            return
        files = job_files(self.hotfolder, ticket)
        finished = {self.done_ext, self.error_ext}
        if finished & files.keys():
            raise CancelError(f"job {ticket} has already finished")
        if not {self.queued_ext, self.running_ext} & files.keys():
            raise UnknownTicketError(f"no job {ticket!r} in {self.hotfolder}")
        body = encode_text(
            ["Message = ABORT", f"ClientID = {self.config.client_id}"], self.config.encoding, "abort message"
        )
        atomic_write(self.hotfolder, f"{ticket}.PTM", body)

        def ended() -> bool:
            return bool(finished & job_files(self.hotfolder, ticket).keys())

        if not wait_until(ended, self.config.cancel_timeout, 0.1):
            LOGGER.warning("%s: PTBurn has not aborted %s yet; the .PTM stays", self.name, ticket)
            return
        if self.done_ext in job_files(self.hotfolder, ticket):
            raise CancelError(f"job {ticket} finished before PTBurn could abort it")

    # ------------------------------------------------------------------------------------------ robot status

    def status(self) -> RobotStatus:
        """Summarise SystemStatus.txt and the robot file: system error, bins, cartridges, drives, jobs."""
        system, robot_ini, robot, age = self._read_status()
        raw: dict[str, dict[str, str]] = dict(system or {})
        if system is None or age > self.config.status_timeout:
            reason = (
                f"bridge offline: no answer from PTBurn for {int(age)} s"
                if system is not None
                else f"bridge offline: no {self.config.status_dir}/SystemStatus.txt in {self.hotfolder}"
            )
            return RobotStatus(False, RobotState.OFFLINE, reason=reason, media_unit="discs", raw=raw)
        sec = system.get(robot, {})
        ink: dict[str, int] = {}
        for n in range(MAX_CARTRIDGES):
            kind = as_int(sec.get(f"CartridgeType{n}"))
            fill = as_int(sec.get(f"CartridgeFill{n}"))
            if kind is not None and kind != CARTRIDGE_NONE and fill is not None and fill >= 0:
                # A type newer than the SDK's list keeps its number rather than pretending to be a slot.
                ink[CARTRIDGES.get(kind, f"cartridge type {kind}")] = fill
        media = {
            label: v
            for key, label in (("DiscsInLeftBin", "left bin"), ("DiscsInRightBin", "right bin"))
            if (v := as_int(sec.get(key))) is not None and v >= 0
        }
        rsys = (robot_ini or {}).get("System", {})
        drives = []
        for n in range(8):
            code = as_int(rsys.get(f"DriveState{n}"))
            if code is None:
                continue
            name = rsys.get(f"DriveDesc{n}") or f"drive {n}"
            drives.append(DriveStatus(name, DRIVE_STATES.get(code, "unknown"), as_int(rsys.get(f"DrivePercent{n}"))))
        errors: list[str] = []
        sys_error = as_int(sec.get("SysErrorNumber"), 0) or as_int(system["System"].get("SysErrorNumber"), 0) or 0
        if sys_error:
            errors.append(describe_primera(sys_error, system=True).reason)
        for job in _completed_jobs(robot_ini or {})[:5]:
            jsec = (robot_ini or {}).get(job, {})
            number = as_int(jsec.get("JobErrorNumber"), 0) or 0
            if number and number != 16:
                errors.append(f"{job}: {describe_primera(number, system=False).reason}")
        jobs = as_int(sec.get("NumJobs"), 0) or len(_active_jobs(robot_ini or {}))
        if sys_error:
            state, reason = RobotState.ERROR, errors[0]
        elif jobs:
            state, reason = RobotState.BUSY, f"{jobs} job(s) active"
        else:
            state, reason = RobotState.IDLE, "idle"
        if robot_ini:
            raw.update({f"{robot}:{name}": values for name, values in robot_ini.items()})
        version = system["System"].get("PtburnSWVer", "")
        return RobotStatus(
            True,
            state,
            reason=reason,
            ink=ink,
            media=media,
            media_unit="discs",
            drives=tuple(drives),
            errors=tuple(errors),
            bridge=f"PTBurn {version}".strip(),
            raw=raw,
        )


# ---------------------------------------------------------------------------------------------- helpers


def volume_name(label: str, fallback: str) -> str:
    """``VolumeName``: at most 32 characters (PTBurn shows about 11), no characters outside ASCII."""
    clean = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in transliterate(label, "ascii"))
    return clean.strip("_")[:32] or fallback[:32]


def _moved(section: Mapping[str, str]) -> bool:
    return as_int(section.get("JobState")) == JOB_MOVED or as_int(section.get("CurrentStatusState")) == STATE_MOVED


def _on_robot(progress: JobProgress, where: str, configured: str) -> JobProgress:
    """Say which robot a moved job now runs on."""
    if where == configured or not where:
        return progress
    return dataclasses.replace(progress, reason=f"{progress.reason} (moved to robot {where})")


def _job_sections(robot_ini: Ini) -> dict[str, dict[str, str]]:
    return {name: sec for name, sec in robot_ini.items() if "JobState" in sec}


def _active_jobs(robot_ini: Ini) -> list[str]:
    """``[JobList]``, or, for builds that omit it, the job sections not yet finished."""
    if "JobList" in robot_ini:
        return [v for _, v in sorted(robot_ini["JobList"].items()) if v]
    return [n for n, sec in _job_sections(robot_ini).items() if as_int(sec.get("JobState")) in (0, 1)]


def _completed_jobs(robot_ini: Ini) -> list[str]:
    """``[CompletedJobs]`` newest first, or, for builds that omit it, the finished job sections."""
    if "CompletedJobs" in robot_ini:
        entries = robot_ini["CompletedJobs"].items()
        return [v for _, v in sorted(entries, key=lambda kv: as_int(kv[0][3:], 0) or 0, reverse=True) if v]
    return [n for n, sec in _job_sections(robot_ini).items() if as_int(sec.get("JobState")) in (2, 3)]


def _stat_signature(path: Path) -> object:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _finished(section: Mapping[str, str], failed: bool) -> JobProgress:
    raw = dict(section)
    good = max(0, as_int(section.get("GoodDiscs"), 0) or 0)
    bad = max(0, as_int(section.get("BadDiscs"), 0) or 0)
    number = as_int(section.get("JobErrorNumber"), 0) or 0
    if number == 16 or as_int(section.get("CurrentStatusState")) == 13:
        return JobProgress(
            JobState.CANCELLED,
            "aborted",
            error_code="job-16",
            retry_possible=True,
            copies_done=good,
            copies_failed=bad,
            raw=raw,
        )
    if not failed:
        reason = f"{good} disc(s) published" + (f", {bad} rejected" if bad else "")
        return JobProgress(JobState.DONE, reason, copies_done=good, copies_failed=bad, raw=raw)
    if not number:
        text = section.get("JobErrorString") or "PTBurn reported an error without a number"
        return JobProgress(
            JobState.FAILED,
            text,
            retry_possible=True,
            needs_staff=True,
            copies_done=good,
            copies_failed=bad,
            raw=raw,
        )
    info = describe_primera(number, system=False)
    return JobProgress(
        JobState.FAILED,
        info.reason,
        error_code=f"job-{number}",
        retry_possible=info.retry_possible,
        needs_staff=info.needs_staff,
        copies_done=good,
        copies_failed=bad,
        raw=raw,
    )


def _running(in_process: bool, section: Mapping[str, str], robot_sec: Mapping[str, str]) -> JobProgress:
    raw = dict(section)
    good = max(0, as_int(section.get("GoodDiscs"), 0) or 0)
    bad = max(0, as_int(section.get("BadDiscs"), 0) or 0)
    sys_error = as_int(robot_sec.get("SysErrorNumber"), 0) or 0
    step = as_int(section.get("CurrentStatusState"))
    if _moved(section):  # PTBurn 3.3.0+ hands the job to another robot: it goes on there
        state, reason = JobState.ACCEPTED, "moved to another robot; waiting for it to take the job"
    elif not in_process:
        ahead = as_int(section.get("JobsAhead"), 0) or 0
        state = JobState.ACCEPTED
        reason = "queued" + (f" ({ahead} job(s) ahead)" if ahead else "")
    elif step == 11:
        state, reason = JobState.PAUSED, "paused"
    else:
        state = JobState.BURNING
        remaining = as_int(section.get("DiscsRemaining"))
        total = good + bad + (remaining or 0)
        what = STATUS_STATES.get(step or 0, "working") if step is not None else "working"
        reason = f"{what}, copy {min(good + bad + 1, total)} of {total}" if remaining is not None and total else what
    if sys_error:  # the robot waits for an operator; the job goes on afterwards
        info = describe_primera(sys_error, system=True)
        return JobProgress(
            state,
            info.reason,
            error_code=f"system-{sys_error}",
            retry_possible=True,
            needs_staff=True,
            copies_done=good,
            copies_failed=bad,
            raw=raw,
        )
    return JobProgress(state, reason, retry_possible=True, copies_done=good, copies_failed=bad, raw=raw)
