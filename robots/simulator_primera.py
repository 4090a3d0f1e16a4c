"""A PTBurn look-alike: ``.JRQ`` -> ``.QRJ`` -> ``.INP`` -> ``.DON``/``.ERR``, and ``.PTM`` abort."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from robots.hotfolder import decode_text
from robots.primera import DATA_IMAGE_TYPES, IMAGE_TYPES, PrimeraConfig
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
        self.job_ext = config.job_extension.upper()
        self.completed: list[str] = []
        self.tick_count = 0

    def fault_for_code(self, code: str) -> Fault:
        family, _, number = code.lower().partition("-")
        if family not in ("system", "job") or not number.isdigit():
            raise ValueError(f"Primera codes look like 'system-3' or 'job-18', not {code!r}")
        if family == "system":
            return Fault("wait", f"system-{int(number)}")
        kind = "reject" if int(number) in (4, 5, 6, 7, 8, 25, 38, 39) else "fail"
        return Fault(kind, f"job-{int(number)}")

    def bin_names(self) -> tuple[str, ...]:
        return ("left",)

    def bins_for(self, media: str) -> tuple[str, ...]:
        return ("left",)  # PTBurn burns whatever is loaded

    def ink_names(self) -> tuple[str, ...]:
        return INK

    # ------------------------------------------------------------------------------------------ scanning

    def _resume(self) -> None:
        # PTBurn's JobActionOnStartup=Retry: unfinished jobs start again.
        for ext in ("QRJ", "INP"):
            for path in self.scan(ext):
                job = self.new_job(path)
                self._accept(job)
                if job.ext == "INP" and not job.final:
                    self.rename(job, "QRJ")

    def _tick(self, now: float) -> None:
        for path in self.scan(self.job_ext):
            job = self.new_job(path)
            if not self.rename(job, "QRJ"):
                del self.jobs[job.ticket]
                continue
            self._accept(job)
        for path in self.scan("PTM"):
            self._message(path)
        running = next((j for j in self.jobs.values() if j.ext == "INP" and not j.final), None)
        if running is None:
            queued = sorted(
                (j for j in self.jobs.values() if j.ext == "QRJ" and not j.final),
                key=lambda j: (j.priority, j.seq),
            )
            if queued and now - queued[0].since >= self.sim.step_seconds:
                running = queued[0]
                self.rename(running, "INP")
                running.disc_started = None
        if running is not None:
            self._work(running, now)

    def _accept(self, job: SimJob) -> None:
        try:
            text = decode_text(job.path.read_bytes(), self.config.encoding)
        except OSError:
            job.final = True
            return
        keys, number = self.check(text)
        reject = self._fault(("reject",))
        if number is None and reject is not None:
            self._consume(reject)
            number = int(reject.code.partition("-")[2])
        job.keys = keys
        job.job_id = keys.get("JobID", job.ticket)
        if number is not None:
            job.error = f"job-{number}"
            self._finish(job, "ERR", state=15)
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
            self._finish(job, "ERR", state=15)
            return
        wait = self._fault(("wait",))
        if wait is None and self.bins["left"] <= 0:
            wait = Fault("wait", "system-3")
        elif wait is None and job.prints and any(level <= 0 for level in self.ink.values()):
            wait = Fault("wait", "system-35")
        # The job holds at the publisher while ``wait`` says why, then burns copy after copy.
        if self.publish_step(job, now, wait):
            self._finish(job, "DON", state=10)

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
                self._finish(job, "ERR", state=13)
            else:
                LOGGER.warning("simulator: ABORT for %s from a different ClientID ignored", base)
        elif keys.get("message", "").upper() == "IGNORE_INKLOW":
            self.faults = [f for f in self.faults if f.code not in ("system-5", "system-6", "system-7")]
        path.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------------ strict check

    def check(self, text: str) -> tuple[dict[str, str], int | None]:
        """Parse and validate a JRQ as PTBurn does; return its keys and a job error number or None."""
        keys: dict[str, str] = {}
        data: list[str] = []
        merge: list[str] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith(";"):
                continue
            name, sep, value = line.partition("=")
            if not sep:
                return keys, 8
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
        return keys, self._validate(keys, data, merge)

    def _validate(self, keys: dict[str, str], data: list[str], merge: list[str]) -> int | None:
        job_id = keys.get("JobID", "")
        if len(job_id) > 32 or not job_id.isascii():
            return 38
        if len(keys.get("ClientID", "")) > 32 or len(keys.get("VolumeName", "")) > 32:
            return 39
        if any(len(m) > 260 for m in merge):
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
        if (
            "DataImageType" in keys
            and keys["DataImageType"].split(",")[0].strip().upper() not in DATA_IMAGE_TYPES
        ):
            return 25
        if "ImageType" in keys and keys["ImageType"] not in IMAGE_TYPES:
            return 25
        if "RobotName" in keys and keys["RobotName"] != self.robot:
            return 25
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
        wait = next(
            (j.error for j in self.jobs.values() if not j.final and j.error.startswith("system-")), ""
        )
        sys_error = int(wait.partition("-")[2]) if wait else 0
        active = [j for j in self.jobs.values() if not j.final]
        status_file = f"{self.robot}.txt"
        system = [
            "[RobotList]",
            f"Robot0={self.robot}",
            f"[{self.robot}]",
            f"SysErrorString={'No Errors' if not sys_error else wait}",
            f"SysErrorNumber={sys_error}",
            "SystemDrives=1",
            "RobotType=6",
            f"NumJobs={len(active)}",
            f"DiscsInLeftBin={self.bins['left']}",
            "DiscsInRightBin=-1",
            f"StatusFile={status_file}",
            "KioskModeEnabled=0",
            "CartridgeType0=1",
            f"CartridgeFill0={int(self.ink['colour'])}",
            "CartridgeType1=2",
            f"CartridgeFill1={int(self.ink['black'])}",
            "[System]",
            f"SysErrorString={'No Errors' if not sys_error else wait}",
            f"SysErrorNumber={sys_error}",
            "PtburnSWVer=3.99 (simulator)",
            f"ServerTime={datetime.now():%m/%d/%Y %H:%M:%S}",
            # One tick per status write (the real one counts seconds) so short test timeouts work.
            f"ServerTickCount={self.tick_count}",
            "DriveSpace=100000",
        ]
        running = next((j for j in active if j.ext == "INP"), None)
        busy = running is not None and running.disc_started is not None
        robot = [
            "[System]",
            f"SystemStatus={'Busy' if running else 'Idle'}",
            "DriveDesc0=SIMULATED DRIVE",
            f"DriveState0={1 if busy else 0}",
            f"DrivePercent0={self._progress(running)}",
            "[JobList]",
        ]
        robot += [f"Job{n}={j.ticket}" for n, j in enumerate(active)]
        robot.append("[CompletedJobs]")
        robot += [f"Job{n}={t}" for n, t in enumerate(self.completed[:50])]
        queue = sorted((j for j in active if j.ext == "QRJ"), key=lambda j: (j.priority, j.seq))
        for job in self.jobs.values():
            if job.keys:
                robot += self._job_section(job, running, queue)
        for name, lines in (("SystemStatus.txt", system), (status_file, robot)):
            with open(folder / name, "wb") as fh:  # in place, as the service does
                fh.write(
                    "".join(line + "\r\n" for line in lines).encode(self.config.encoding, errors="replace")
                )

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
