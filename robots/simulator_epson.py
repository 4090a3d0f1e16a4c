"""A TD Bridge look-alike: ``.JDF`` -> ``.RJD`` -> ``.INP`` (<-> ``.STP``) -> ``.DON``/``.ERR``."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from robots.epson import EPSON_FORMATS, EPSON_MODELS, FORMAT_ERRORS, EpsonConfig
from robots.hotfolder import decode_text
from robots.simulator import BridgeSimulator, Fault, SimJob, SimulatorConfig

LOGGER = logging.getLogger(__name__)

DISC_TYPES = ("CD", "DVD", "DVD-DL", "BD", "BD-DL")
MEDIA_SETTING = {"CD": 1, "DVD": 4, "DVD-DL": 7, "BD": 8, "BD-DL": 9}
INKS = ("INK_C", "INK_M", "INK_Y", "INK_LC", "INK_LM", "INK_B")
VOLUME_RE = re.compile(r"[\x21-\x7e ]{1,32}")
FORBIDDEN_VOLUME = set('\\/:*?"<>|')
#: WRITING_SPEED is "a number" (JDF0600); TD Bridge's own examples write ``4.0``.
NUMBER_RE = re.compile(r"\d+(\.\d+)?")
#: The model simulated when ``model`` is not configured.
DEFAULT_MODEL = "PP-100"


class EpsonSimulator(BridgeSimulator):
    """Behaves as EPSON TD Bridge with one publisher attached."""

    FAULTS: ClassVar[Mapping[str, Fault]] = {
        "no_media": Fault("wait", "RTN000"),
        "ink_out": Fault("wait", "RTN004"),
        "cover_open": Fault("wait", "RTN002"),
        "drive_error": Fault("fail", "CAN008"),
        "bad_media": Fault("pause", "STP002"),
        "bad_job_key": Fault("reject", "JDF0502"),
    }

    def __init__(self, config: EpsonConfig, sim: SimulatorConfig) -> None:
        self.model = config.model or DEFAULT_MODEL
        self.publisher = config.publisher or f"{self.model} (simulated)"
        super().__init__(config, sim)
        self.config: EpsonConfig = config
        self.completed: list[str] = []
        # The bridge accepts what the publisher model accepts, unless the test pins another set.
        self.out_stackers = sim.out_stackers or tuple(str(n) for n in EPSON_MODELS[self.model])

    def fault_for_code(self, code: str) -> Fault:
        code = code.upper()
        # OTH000 is passing (no job status yet): the job holds with it, then carries on once cleared.
        kind = {"RTN": "wait", "OTH": "wait", "STP": "pause", "JDF": "reject"}.get(code[:3], "fail")
        return Fault(kind, code)

    def bin_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.sim.stackers))

    def bins_for(self, media: str) -> tuple[str, ...]:
        return tuple(s for s in sorted(self.sim.stackers) if self.sim.stackers[s] == media)

    def ink_names(self) -> tuple[str, ...]:
        return INKS

    # ------------------------------------------------------------------------------------------ scanning

    def _resume(self) -> None:
        for ext in ("RJD", "INP", "STP"):
            for path in self.scan(ext):
                job = self.new_job(path)
                if ext != "RJD":
                    self._accept(job, rename=False)

    def _tick(self, now: float) -> None:
        for path in self.scan("JDF"):
            job = self.new_job(path)
            if not self.rename(job, "RJD"):
                del self.jobs[job.ticket]
        for path in self.scan("JCF"):
            self._cancel(path)
        for job in list(self.jobs.values()):
            if job.ext == "RJD" and not job.final and now - job.since >= self.sim.step_seconds:
                self._accept(job, rename=True)
        runnable = sorted(
            (j for j in self.jobs.values() if not j.final and j.ext in ("INP", "STP")),
            key=lambda j: (j.priority, j.seq),
        )
        if runnable:
            self._work(runnable[0], now)

    def _accept(self, job: SimJob, rename: bool) -> None:
        try:
            text = decode_text(job.path.read_bytes(), self.config.encoding)
        except OSError:
            job.final = True
            return
        keys, _, code = self.check(text)
        reject = self._fault(("reject",))
        if code is None and reject is not None:
            self._consume(reject)
            code = reject.code
        job.keys = keys
        job.job_id = keys.get("JOB_ID", job.ticket)
        if code is not None:
            job.error = code
            self._finish(job, "ERR", status=6, detail=14)
            return
        job.copies = int(keys.get("COPIES", "1"))
        job.media = keys["DISC_TYPE"]
        job.priority = 0 if keys.get("PRIORITY") == "HIGH" else 1
        job.prints = "LABEL" in keys
        job.disc_started = None
        if rename:
            self.rename(job, "INP")

    def _work(self, job: SimJob, now: float) -> None:
        pause = self._fault(("pause",))
        if pause is not None:
            job.error = pause.code
            if job.ext != "STP":
                self.rename(job, "STP")
            return
        if job.ext == "STP":
            job.error = ""
            self.rename(job, "INP")
        fail = self._fault(("fail",))
        if fail is not None:
            self._consume(fail)
            job.error = fail.code
            self._finish(job, "ERR", status=5, detail=13)
            return
        wait = self._fault(("wait",))
        if wait is None and not self.bins_for(job.media):
            wait = Fault("wait", "STP000")
        elif wait is None and not any(self.bins[s] > 0 for s in self.bins_for(job.media)):
            wait = Fault("wait", "RTN000")
        elif wait is None and job.prints and any(level <= 0 for level in self.ink.values()):
            wait = Fault("wait", "RTN004")
        # The job holds at the publisher while ``wait`` says why, then burns copy after copy.
        if self.publish_step(job, now, wait):
            self._finish(job, "DON", status=4, detail=9)

    def _finish(self, job: SimJob, ext: str, status: int, detail: int) -> None:
        job.keys["_STATUS"] = str(status)
        job.keys["_DETAIL"] = str(detail)
        job.final = True
        self.completed.insert(0, job.job_id or job.ticket)
        self._write_status()  # the status entry is final before the file name says so
        self.rename(job, ext)

    def _cancel(self, path: Path) -> None:
        text = decode_text(path.read_bytes(), self.config.encoding)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        job_id = next((line[7:] for line in lines if line.startswith("JOB_ID=")), "")
        target = next((j for j in self.jobs.values() if (j.job_id or j.ticket) == job_id and not j.final), None)
        base = path.with_suffix("")
        if not lines or lines[0] != "[CANCEL]" or target is None:
            path.replace(base.with_name(base.name + ".CER"))
            return
        target.error = ""
        self._finish(target, "DON", status=4, detail=12)
        path.replace(base.with_name(base.name + ".CDN"))

    # ------------------------------------------------------------------------------------------ strict check

    def check(self, text: str) -> tuple[dict[str, str], list[str], str | None]:
        """Parse and validate a JDF as TD Bridge does; return its keys, DATA lines, error code or None."""
        keys: dict[str, str] = {}
        data: list[str] = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            # Lower-case keys and keys with spaces around them are ignored as invalid (spec §1.2).
            if not sep or not key or key != key.strip() or key != key.upper():
                continue
            if key == "DATA":
                data.append(value)
            else:
                keys[key] = value
        return keys, data, self._validate(keys, data)

    def _validate(self, keys: dict[str, str], data: list[str]) -> str | None:
        known = {(j.job_id or j.ticket) for j in self.jobs.values() if j.keys}
        job_id = keys.get("JOB_ID")
        if job_id is not None:
            if len(job_id) > 40:
                return "JDF0101"
            if not re.fullmatch(r"[A-Za-z0-9_-]+", job_id):
                return "JDF0102"
            if job_id in known:
                return "JDF0100"
        if "PUBLISHER" in keys and keys["PUBLISHER"] != self.publisher:
            return "JDF0200"
        copies = keys.get("COPIES", "1")
        if not copies.isdigit() or not 1 <= int(copies) <= 1000:
            return "JDF0300"
        if "OUT_STACKER" in keys and keys["OUT_STACKER"] not in self.out_stackers:
            return "JDF0400"
        disc = keys.get("DISC_TYPE")
        if disc is None:
            return "JDF0501"
        if disc not in DISC_TYPES:
            return "JDF0502"
        if disc not in self.sim.stackers.values():
            return "JDF0500"
        if "WRITING_SPEED" in keys and not NUMBER_RE.fullmatch(keys["WRITING_SPEED"]):
            return "JDF0600"
        for key, code in (
            ("COMPARE", "JDF0700"),
            ("CLOSE_DISC", "JDF0800"),
            ("ARCHIVE_DISC_ONLY", "JDF2900"),
        ):
            if key in keys and keys[key] not in ("YES", "NO"):
                return code
        for line in data:
            source = line.partition("\t")[0]
            if not source:
                return "JDF0900"
            local = self.local(source)
            if local is None or not local.exists():
                return "JDF0907"
        if "VOLUME_LABEL" in keys:
            label = keys["VOLUME_LABEL"]
            if not VOLUME_RE.fullmatch(label) or FORBIDDEN_VOLUME & set(label):
                return "JDF1000"
        if "IMAGE" in keys:
            if not keys["IMAGE"].lower().endswith(".iso"):
                return "JDF1300"
            local = self.local(keys["IMAGE"])
            if local is None or not local.exists():
                return "JDF1302"
        family = disc if disc in EPSON_FORMATS else "BD"  # BD-DL follows the BD rules
        if data and keys.get("FORMAT", EPSON_FORMATS[family][0]) not in EPSON_FORMATS[family]:
            return FORMAT_ERRORS[family]
        label_code = self._check_label(keys)
        if label_code:
            return label_code
        if keys.get("PRIORITY", "HIGH") != "HIGH":
            return "JDF2300"
        if keys.get("LABEL_TYPE", "1") not in ("1", "2", "3"):
            return "JDF2500"
        if keys.get("PRINT_MODE", "1") not in ("1", "2", "3"):
            return "JDF2600"
        if keys.get("LABEL_TYPE") == "3" and keys.get("PRINT_MODE") in ("2", "3"):
            return "JDF2602"
        if keys.get("PRINT_MODE") == "3" and self.model != "PP-100AP":
            return "JDF2603"
        if keys.get("IN_STACKER", "AUTO") not in ("1", "2", "AUTO"):
            return "JDF2700"
        if keys.get("MEASURE", "0") not in ("0", "1"):
            return "JDF2800"
        if self.model == "PP-100AP" and "LABEL" not in keys:
            return "JDF0002"
        if not data and "IMAGE" not in keys and "LABEL" not in keys:
            return {"CD": "JDF0000", "DVD": "JDF0001", "DVD-DL": "JDF0001"}.get(disc, "JDF0003")
        return None

    def _check_label(self, keys: dict[str, str]) -> str | None:
        if "LABEL" in keys:
            allowed = (".tdd", ".jpg", ".bmp", ".png") if self.config.image_labels else (".tdd",)
            if not keys["LABEL"].lower().endswith(allowed):
                return "JDF1500"
            local = self.local(keys["LABEL"])
            if local is None or not local.exists():
                return "JDF1501"
        if "REPLACE_FIELD" in keys:
            local = self.local(keys["REPLACE_FIELD"])
            if local is None or not local.exists():
                return "JDF1600"
            lines = [ln for ln in decode_text(local.read_bytes(), self.config.encoding).splitlines() if ln]
            if len(lines) > 255 or any("=" not in ln or len(ln.partition("=")[2]) > 1024 for ln in lines):
                return "JDF1604"
        return None

    # ------------------------------------------------------------------------------------------ status file

    def _write_status(self) -> None:
        active = sorted(
            (j for j in self.jobs.values() if not j.final and j.keys),
            key=lambda j: (j.ext not in ("INP", "STP"), j.priority, j.seq),
        )
        running = next((j for j in active if j.ext in ("INP", "STP")), None)
        # Rev. C bridges (PP-100/PP-100N era) write no [TDB_INFO] section.
        out = ["[TDB_INFO]", "TDB_ID=SIMULATOR", "VERSION=9.9.0.0 (simulator)"] if self.sim.tdb_info else []
        out.append("[ACTIVE_JOB]")
        out += [f"JOB{n}={j.job_id}" for n, j in enumerate(active, 1)]
        out.append("[COMPLETE_JOB]")
        out += [f"JOB{n}={job_id}" for n, job_id in enumerate(self.completed[:50], 1)]
        out += ["[PUBLISHER1]", f"NAME={self.publisher}"]
        for n in range(1, 5):
            media = self.sim.stackers.get(str(n))
            level = self.bins.get(str(n), 0) * 100 // self.sim.discs if (media and self.sim.discs) else -1
            out.append(f"STACKER{n}={level}")
            out.append(f"STACKER{n}_SETTING={MEDIA_SETTING[media] if media else 0}")
        out += [f"{ink}={int(self.ink[ink])}" for ink in INKS]
        busy = running is not None and running.disc_started is not None
        out += [
            f"PRINTER_STATUS={2 if busy and running and running.prints else 1}",
            f"DRIVE1_STATUS={2 if busy else 1}",
            f"DRIVE1_PROGRESS={self._progress(running) if busy else 0}",
            "DRIVE2_STATUS=1",
            "DRIVE2_PROGRESS=0",
        ]
        for job in [*active, *(j for j in self.jobs.values() if j.final and j.keys)]:
            out += self._job_section(job, running)
        # Rewritten in place like TD Bridge does, so readers must cope with a file being rewritten.
        path = self.hotfolder / self.config.status_file
        with open(path, "wb") as fh:
            fh.write("".join(line + "\r\n" for line in out).encode(self.config.encoding, errors="replace"))

    def _progress(self, job: SimJob | None) -> int:
        if job is None or job.disc_started is None or not self.sim.disc_seconds:
            return 0
        return min(99, int((time.monotonic() - job.disc_started) * 100 / self.sim.disc_seconds))

    def _job_section(self, job: SimJob, running: SimJob | None) -> list[str]:
        if job.final:
            status, detail = job.keys.get("_STATUS", "4"), job.keys.get("_DETAIL", "9")
        elif job.ext == "STP":
            status, detail = "3", "7"
        elif job is running:
            status, detail = "2", "3"
        else:
            status, detail = "1", "2"
        remain = max(0, job.copies - job.done) * self.sim.disc_seconds
        return [
            f"[{job.job_id}]",
            f"STATUS={status}",
            f"DETAIL_STATUS={detail}",
            f"PUBLISHER={self.publisher}",
            f"PUBLICATION_NUMBER={job.copies}",
            f"COMPLETION_NUMBER={job.done}",
            f"ERRORDISC_NUMBER={job.bad}",
            f"ESTIMATION_TIME_REMAIN={int(remain)}",
            f"ERROR={job.error}",  # empty when there is no error, as TD Bridge writes it
        ]
