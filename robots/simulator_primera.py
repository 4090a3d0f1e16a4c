"""A PTBurn look-alike: ``.JRQ`` -> ``.QRJ`` -> ``.INP`` -> ``.DON``/``.ERR``, and ``.PTM`` abort."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from robots.base import RequestError
from robots.hotfolder import decode_text, encode_text
from robots.primera import DATA_IMAGE_TYPES, IMAGE_TYPES, JOB_MOVED, STATE_MOVED, PrimeraConfig
from robots.simulator import BridgeSimulator, Fault, SimJob, SimulatorConfig

LOGGER = logging.getLogger(__name__)

YES_NO_KEYS = (
    "CloseDisc",
    "VerifyDisc",
    "RejectIfNotBlank",
    "DeleteFiles",
    "TestRecord",
    "PrintReject",
    "PreMasterData",
    "LoadUnloadOverride",
    "PreserveISOVariations",
)
#: Keys PTBurn knows, by lower-case name (the profile API ignores case).
KNOWN_KEYS = {
    k.lower(): k
    for k in (
        "JobID",
        "ClientID",
        "Importance",
        "Data",
        "AudioFile",
        "ImageFile",
        "ImageType",
        "DataImageType",
        "Copies",
        "PrintLabel",
        "VolumeName",
        "BurnSpeed",
        "NotifyClient",
        "MergeField",
        "RobotName",
        "PrintQuality",
        "PrintInnerDiam",
        "PrintOuterMargin",
        "BinID",
        "DriveID",
        "DiscType",
        *YES_NO_KEYS,
    )
}
PRINT_EXTS = (".std", ".jpg", ".bmp", ".prn")
INK = ("colour", "black")
#: The job error for ``Data`` and ``ImageFile`` in one session.  The SDK forbids the mix but names no number;
#: 8 (invalid job request file) is the documented error that fits.
MIXED_DATA_IMAGE = 8


def _session(entry: str) -> int:
    """The ``SessionX`` option of a ``Data``/``ImageFile`` value (1 when absent)."""
    for option in entry.split(",")[1:]:
        option = option.strip().lower()
        if option.startswith("session") and option[7:].isdigit():
            return int(option[7:])
    return 1


class PrimeraSimulator(BridgeSimulator):
    """Behaves as the PTBurn service with one robot attached."""

    FAULTS: ClassVar[Mapping[str, Fault]] = {
        "no_media": Fault("wait", "system-3"),
        "ink_out": Fault("wait", "system-35"),
        "cover_open": Fault("wait", "system-15"),
        "drive_error": Fault("fail", "job-18"),
        "bad_media": Fault("fail", "job-20"),
        "bad_job_key": Fault("reject", "job-25"),
    }

    def __init__(self, config: PrimeraConfig, sim: SimulatorConfig) -> None:
        self.robot = config.robot_name or "Disc Publisher SE (simulated)"
        super().__init__(config, sim)
        self.config: PrimeraConfig = config
        self.job_ext, self.queued_ext, self.running_ext, self.done_ext, self.error_ext = config.extensions()
        self.completed: list[str] = []
        self.tick_count = 0
        #: The robot PTBurn moves jobs to (``move``); listed in [RobotList] once a job went there.
        self.second_robot = f"{self.robot} #2"
        self.moved: set[str] = set()

    def fault_for_code(self, code: str) -> Fault:
        family, _, number = code.lower().partition("-")
        if family not in ("system", "job") or not number.isdigit():
            raise ValueError(f"Primera codes look like 'system-3' or 'job-18', not {code!r}")
        if family == "system":
            return Fault("wait", f"system-{int(number)}")
        kind = "reject" if int(number) in (4, 5, 6, 7, 8, 25, 38, 39) else "fail"
        return Fault(kind, f"job-{int(number)}")

    def _command(self, verb: str, args: list[str]) -> None:
        if verb == "move":
            self.move_running()
        else:
            super()._command(verb, args)

    def move_running(self) -> str | None:
        """Move the running job to the second robot, as PTBurn 3.3.0+ does with ``AutoSwitchRobot``.

        The first robot's file keeps a section with ``JobState=4`` / ``CurrentStatusState=18``; the second
        robot's file carries on with the job.  Returns the ticket moved, or None when no job runs.
        """
        with self.lock:
            job = next((j for j in self.jobs.values() if j.ext == self.running_ext and not j.final), None)
            if job is None:
                return None
            job.robot = self.second_robot
            self.moved.add(job.ticket)
            return job.ticket

    def bin_names(self) -> tuple[str, ...]:
        return ("left",)

    def bins_for(self, media: str) -> tuple[str, ...]:
        return ("left",)  # PTBurn burns whatever is loaded

    def ink_names(self) -> tuple[str, ...]:
        return INK

    # ------------------------------------------------------------------------------------------ scanning

    def _resume(self) -> None:
        # PTBurn's JobActionOnStartup=Retry: unfinished jobs start again.
        for ext in (self.queued_ext, self.running_ext):
            for path in self.scan(ext):
                job = self.new_job(path)
                self._accept(job)
                if job.ext == self.running_ext and not job.final:
                    self.rename(job, self.queued_ext)

    def _tick(self, now: float) -> None:
        for path in self.scan(self.job_ext):
            job = self.new_job(path)
            if not self.rename(job, self.queued_ext):
                del self.jobs[job.ticket]
                continue
            self._accept(job)
        for path in self.scan("PTM"):
            self._message(path)
        running = next((j for j in self.jobs.values() if j.ext == self.running_ext and not j.final), None)
        if running is None:
            queued = sorted(
                (j for j in self.jobs.values() if j.ext == self.queued_ext and not j.final),
                key=lambda j: (j.priority, j.seq),
            )
            if queued and now - queued[0].since >= self.sim.step_seconds:
                running = queued[0]
                self.rename(running, self.running_ext)
                running.disc_started = None
        if running is not None:
            self._work(running, now)

    def _accept(self, job: SimJob) -> None:
        try:
            text = decode_text(job.path.read_bytes(), self.config.encoding)
        except OSError:
            job.final = True
            return
        keys, merge, number = self.check_merge(text)
        reject = self._fault(("reject",))
        if number is None and reject is not None:
            self._consume(reject)
            number = int(reject.code.partition("-")[2])
        job.keys = keys
        job.merge = merge
        job.job_id = keys.get("JobID", job.ticket)
        if number is not None:
            job.error = f"job-{number}"
            self._finish(job, self.error_ext, state=15)
            return
        job.copies = int(keys.get("Copies", "1"))
        job.priority = int(keys.get("Importance", "4"))
        job.prints = "PrintLabel" in keys

    def _work(self, job: SimJob, now: float) -> None:
        fail = self._fault(("fail",))
        if fail is not None:
            self._consume(fail)
            job.error = fail.code
            job.bad += 1
            self._finish(job, self.error_ext, state=15)
            return
        wait = self._fault(("wait",))
        if wait is None and self.bins["left"] <= 0:
            wait = Fault("wait", "system-3")
        elif wait is None and job.prints and any(level <= 0 for level in self.ink.values()):
            wait = Fault("wait", "system-35")
        # The job holds at the publisher while ``wait`` says why, then burns copy after copy.
        if self.publish_step(job, now, wait):
            self._finish(job, self.done_ext, state=10)

    def _finish(self, job: SimJob, ext: str, state: int) -> None:
        job.keys["_STATE"] = str(state)
        job.final = True
        self.completed.insert(0, job.ticket)
        self._write_status()  # the status entry is final before the file name says so
        self.rename(job, ext)

    def _message(self, path: Path) -> None:
        text = decode_text(path.read_bytes(), self.config.encoding)
        keys = {k.strip().lower(): v.strip() for k, _, v in (ln.partition("=") for ln in text.splitlines())}
        base = path.name.rpartition(".")[0]
        job = self.jobs.get(base)
        if keys.get("message", "").upper() == "ABORT" and job is not None and not job.final:
            if keys.get("clientid") in (job.keys.get("ClientID", "Unknown"), "Administrator"):
                job.error = "job-16"
                self._finish(job, self.error_ext, state=13)
            else:
                LOGGER.warning("simulator: ABORT for %s from a different ClientID ignored", base)
        elif keys.get("message", "").upper() == "IGNORE_INKLOW":
            self.faults = [f for f in self.faults if f.code not in ("system-5", "system-6", "system-7")]
        path.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------------ strict check

    def check(self, text: str) -> tuple[dict[str, str], int | None]:
        """Parse and validate a JRQ as PTBurn does; return its keys and a job error number or None."""
        keys, _, number = self.check_merge(text)
        return keys, number

    def check_merge(self, text: str) -> tuple[dict[str, str], list[str], int | None]:
        """As :meth:`check`, also returning the ``MergeField`` values in order."""
        keys: dict[str, str] = {}
        data: list[str] = []
        merge: list[str] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith(";"):
                continue
            name, sep, value = line.partition("=")
            if not sep:  # the Windows profile API skips a line without "=", and so does PTBurn
                continue
            key = KNOWN_KEYS.get(name.strip().lower())
            if key is None:
                continue
            value = value.strip()
            if key == "Data":
                data.append(value)
            elif key == "MergeField":
                merge.append(value)
            else:
                keys[key] = value
        return keys, merge, self._validate(keys, data, merge)

    def _validate(self, keys: dict[str, str], data: list[str], merge: list[str]) -> int | None:
        job_id = keys.get("JobID", "")
        if len(job_id) > 32 or not job_id.isascii():
            return 38
        if any(len(m) > 260 for m in merge):  # the SDK's only use of error 39
            return 39
        for key, low, high in (
            ("Importance", 0, 400),
            ("Copies", 1, 10000),
            ("BurnSpeed", 0, 100),
            ("PrintQuality", 0, 4),
        ):
            if key in keys and not (keys[key].isdigit() and low <= int(keys[key]) <= high):
                return 25
        for key in YES_NO_KEYS:
            if key in keys and keys[key].upper() not in ("YES", "NO"):
                return 25
        if "DataImageType" in keys and keys["DataImageType"].split(",")[0].strip().upper() not in DATA_IMAGE_TYPES:
            return 25
        if "ImageType" in keys and keys["ImageType"] not in IMAGE_TYPES:
            return 25
        if "RobotName" in keys and keys["RobotName"] != self.robot:
            return 25
        if "ImageFile" in keys and data:
            # SDK §2.1.4-2.1.6: Data and ImageFile only together in different sessions (SessionX).
            image_session = _session(keys["ImageFile"])
            if any(_session(item) == image_session for item in data):
                return MIXED_DATA_IMAGE
        if len(data) > 99:
            return 5
        for item in data:
            source = item.split(">")[0].split(",")[0].strip()
            local = self.local(source)
            if not source or local is None or not local.exists():
                return 4
        if "ImageFile" in keys:
            image = keys["ImageFile"].split(",")[0].strip()
            local = self.local(image)
            if not image.lower().endswith((".iso", ".gi")) or local is None or not local.exists():
                return 4
        if "PrintLabel" in keys:
            label = keys["PrintLabel"]
            if not label.lower().endswith(PRINT_EXTS):
                return 7
            local = self.local(label)
            if local is None or not local.exists():
                return 29
        if not data and "ImageFile" not in keys and "PrintLabel" not in keys:
            return 6
        return None

    # ------------------------------------------------------------------------------------------ status files

    def _write_status(self) -> None:
        self.tick_count += 1
        folder = self.hotfolder / self.config.status_dir
        folder.mkdir(exist_ok=True)
        wait = next((j.error for j in self.jobs.values() if not j.final and j.error.startswith("system-")), "")
        sys_error = int(wait.partition("-")[2]) if wait else 0
        active = [j for j in self.jobs.values() if not j.final]
        robots = [self.robot, *([self.second_robot] if self.moved else [])]
        system = ["[RobotList]", *(f"Robot{n}={name}" for n, name in enumerate(robots))]
        for name in robots:
            mine = [j for j in active if (j.robot or self.robot) == name]
            error = sys_error  # the one simulated ink/bin state is shared by both robots
            system += [
                f"[{name}]",
                f"SysErrorString={'No Errors' if not error else wait}",
                f"SysErrorNumber={error}",
                "SystemDrives=1",
                "RobotType=6",
                f"NumJobs={len(mine)}",
                f"DiscsInLeftBin={self.bins['left']}",
                "DiscsInRightBin=-1",
                f"StatusFile={name}.txt",
                "KioskModeEnabled=0",
                "CartridgeType0=1",
                f"CartridgeFill0={int(self.ink['colour'])}",
                "CartridgeType1=2",
                f"CartridgeFill1={int(self.ink['black'])}",
            ]
        system += [
            "[System]",
            f"SysErrorString={'No Errors' if not sys_error else wait}",
            f"SysErrorNumber={sys_error}",
            "PtburnSWVer=3.99 (simulator)",
            f"ServerTime={datetime.now():%m/%d/%Y %H:%M:%S}",
            # One tick per status write (the real one counts seconds) so short test timeouts work.
            f"ServerTickCount={self.tick_count}",
            "DriveSpace=100000",
        ]
        files = {"SystemStatus.txt": system}
        running = next((j for j in active if j.ext == self.running_ext), None)
        queue = sorted((j for j in active if j.ext == self.queued_ext), key=lambda j: (j.priority, j.seq))
        for name in robots:
            here = running if running is not None and (running.robot or self.robot) == name else None
            busy = here is not None and here.disc_started is not None
            robot = [
                "[System]",
                f"SystemStatus={'Busy' if here else 'Idle'}",
                "DriveDesc0=SIMULATED DRIVE",
                f"DriveState0={1 if busy else 0}",
                f"DrivePercent0={self._progress(here)}",
            ]
            if self.sim.job_lists:  # newer PTBurn builds may leave these two sections out
                robot.append("[JobList]")
                mine = [j for j in active if (j.robot or self.robot) == name]
                robot += [f"Job{n}={j.ticket}" for n, j in enumerate(mine)]
                robot.append("[CompletedJobs]")
                robot += [f"Job{n}={t}" for n, t in enumerate(self.completed[:50])]
            for job in self.jobs.values():
                if not job.keys:
                    continue
                if (job.robot or self.robot) == name:
                    robot += self._job_section(job, running, queue)
                elif name == self.robot and job.ticket in self.moved:
                    robot += self._moved_section(job)
            files[f"{name}.txt"] = robot
        for fname, lines in files.items():
            with open(folder / fname, "wb") as fh:  # in place, as the service does
                fh.write(self._encode(lines))

    def _encode(self, lines: list[str]) -> bytes:
        try:
            return encode_text(lines, self.config.encoding, "status file")
        except RequestError:  # a character the code page lacks: PTBurn would write '?'
            return "".join(line + "\r\n" for line in lines).encode(self.config.encoding, errors="replace")

    def _moved_section(self, job: SimJob) -> list[str]:
        return [
            f"[{job.ticket}]",
            f"JobID={job.job_id}",
            f"ClientID={job.keys.get('ClientID', 'Unknown')}",
            f"JobState={JOB_MOVED}",
            f"CurrentStatusState={STATE_MOVED}",
            "JobErrorNumber=0",
            "JobErrorString=No Error",
        ]

    def _progress(self, job: SimJob | None) -> int:
        if job is None or job.disc_started is None or not self.sim.disc_seconds:
            return 0
        return min(99, int((time.monotonic() - job.disc_started) * 100 / self.sim.disc_seconds))

    def _job_section(self, job: SimJob, running: SimJob | None, queue: list[SimJob]) -> list[str]:
        number = int(job.error.partition("-")[2]) if job.error.startswith("job-") else 0
        if job.final:
            state = int(job.keys.get("_STATE", "10"))
            job_state = 2 if state == 10 else 3
        elif job is running:
            state, job_state = (6 if job.error else 0), 1
        else:
            state, job_state = 7, 0
        ahead = queue.index(job) + (1 if running else 0) if job in queue else 0
        return [
            f"[{job.ticket}]",
            f"JobID={job.job_id}",
            f"ClientID={job.keys.get('ClientID', 'Unknown')}",
            f"JobsAhead={ahead}",
            f"DiscsRemaining={max(0, job.copies - job.done)}",
            f"GoodDiscs={job.done}",
            f"BadDiscs={job.bad}",
            f"JobState={job_state}",
            f"CurrentStatusState={state}",
            f"JobErrorNumber={number}",
            f"JobErrorString={job.error or 'No Error'}",
        ]
