"""Epson Discproducer through EPSON TD Bridge: ``.JDF`` job files in a hot folder, ``TDBStatus.txt`` status.

Lifecycle (specs/robots.md §1.1): ``.JDF`` (ours) -> ``.RJD`` (read, being checked) -> ``.INP`` (queued or
publishing) <-> ``.STP`` (paused) -> ``.DON`` or ``.ERR``.  A cancel is a ``.JCF`` file that TD Bridge renames
to ``.CDN`` (done) or ``.CER`` (refused).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from robots.base import (
    BurnRequest,
    CancelError,
    DriveStatus,
    JobProgress,
    JobState,
    RequestError,
    RobotConfigError,
    RobotState,
    RobotStatus,
    UnknownTicketError,
)
from robots.codes import EPSON_INFORMATIONAL, describe_epson
from robots.hotfolder import (
    HotFolderConfig,
    HotFolderRobot,
    Ini,
    as_int,
    atomic_write,
    clean_field,
    decode_text,
    encode_text,
    job_files,
    read_ini,
    transliterate,
    wait_until,
)

LOGGER = logging.getLogger(__name__)

#: FORMAT values TD Bridge accepts per DISC_TYPE (PP100API.h JDF1400-1402): UDF150 is for DVD only.
EPSON_FORMATS: Mapping[str, tuple[str, ...]] = {
    "CD": ("ISO9660L2", "JOLIET", "UDF102"),
    "DVD": ("UDF102", "UDF102_BRIDGE", "UDF150"),
    "DVD-DL": ("UDF102", "UDF102_BRIDGE", "UDF150"),
    "BD": ("UDF102", "UDF260"),
}
#: The code TD Bridge answers a FORMAT outside :data:`EPSON_FORMATS` with, per disc type.
FORMAT_ERRORS: Mapping[str, str] = {"CD": "JDF1400", "DVD": "JDF1401", "DVD-DL": "JDF1401", "BD": "JDF1402"}
DEFAULT_FORMATS: Mapping[str, str] = {"CD": "JOLIET", "DVD": "UDF102", "DVD-DL": "UDF102", "BD": "UDF260"}
#: OUT_STACKER values per publisher model (PP100API.h JDF0400; the TD Bridge guides Rev. C and Rev. L).
_PP100_STACKERS = (2, 3, 4)
_PP50_STACKERS = (2, 3)
EPSON_MODELS: Mapping[str, tuple[int, ...]] = {
    "PP-100": _PP100_STACKERS,
    "PP-100N": _PP100_STACKERS,
    "PP-100AP": _PP100_STACKERS,
    "PP-100II": _PP100_STACKERS,
    "PP-50": _PP50_STACKERS,
    "PP-50BD": _PP50_STACKERS,
    "PP-7050": _PP50_STACKERS,
    "PP-7050BD": _PP50_STACKERS,
}
#: OUT_STACKER values every model accepts: the allowed set when ``model`` is not configured.
COMMON_OUT_STACKERS = _PP50_STACKERS
#: STF sections that are not job ids.
STF_RESERVED = ("TDB_INFO", "ACTIVE_JOB", "COMPLETE_JOB")
#: A complete TDBStatus.txt has at least one of these.  Rev. L bridges write ``[TDB_INFO]`` first; the Rev. C
#: (PP-100/PP-100N era) status file has no ``[TDB_INFO]`` at all.
STF_SECTIONS = ("TDB_INFO", "ACTIVE_JOB", "COMPLETE_JOB", "PUBLISHER1")
#: The job note of an Epson job whose JDF has no ``LABEL=``.
NO_LABEL_NOTE = "no label printed (no template configured)"
INK_KEYS: Mapping[str, str] = {
    "INK_C": "cyan",
    "INK_M": "magenta",
    "INK_Y": "yellow",
    "INK_LC": "light cyan",
    "INK_LM": "light magenta",
    "INK_B": "black",
}
STACKER_MEDIA: Mapping[int, str] = {
    0: "output",
    1: "CD",
    4: "DVD",
    7: "DVD-DL",
    8: "BD",
    9: "BD-DL",
    99: "unused",
    100: "source",
}
DRIVE_STATES: Mapping[int, str] = {
    1: "idle",
    2: "writing",
    3: "verifying",
    4: "unused",
    5: "error",
    6: "transporting",
    7: "stopped",
}
DETAIL_TEXT: Mapping[int, str] = {
    1: "TD Bridge is checking the job",
    2: "waiting for the publisher",
    3: "publishing",
    4: "pausing",
    5: "waiting to resume",
    6: "cancelling",
    7: "paused",
    8: "waiting to resume",
}
#: Merge-file limits (JDF1604).
MAX_FIELDS = 255
MAX_FIELD_CHARS = 1024


@dataclass(frozen=True)
class EpsonConfig(HotFolderConfig):
    """Options of an ``[robots.epson]`` table; see docs/robots.md for each key."""

    publisher: str = ""
    model: str = ""
    status_file: str = "TDBStatus.txt"
    out_stacker: int = 0
    in_stacker: str = ""
    writing_speed: int = 0
    close_disc: str = ""
    formats: Mapping[str, str] = field(default_factory=dict)
    label_type: int = 0
    print_mode: int = 0
    image_labels: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.publisher) > 64:
            raise RobotConfigError("publisher: at most 64 characters")
        if self.in_stacker not in ("", "1", "2", "AUTO"):
            raise RobotConfigError('in_stacker: use "1", "2" or "AUTO"')
        if self.close_disc not in ("", "YES", "NO"):
            raise RobotConfigError('close_disc: use "YES" or "NO" (or leave it out)')
        if self.label_type not in (0, 1, 2, 3) or self.print_mode not in (0, 1, 2, 3):
            raise RobotConfigError("label_type and print_mode: use 1, 2 or 3 (0 leaves the key out)")
        if self.model and self.model not in EPSON_MODELS:
            raise RobotConfigError(
                f"model {self.model!r}: use one of {', '.join(EPSON_MODELS)}, or leave it out for another model"
            )
        if self.out_stacker and self.out_stacker not in self.out_stackers():
            allowed = " or ".join(str(n) for n in self.out_stackers())
            hint = "" if self.model else ' (4 needs model = "PP-100", "PP-100N", "PP-100AP" or "PP-100II")'
            raise RobotConfigError(
                f"out_stacker = {self.out_stacker}: {self.model or 'this publisher'} accepts {allowed}{hint}"
            )
        if self.print_mode == 3 and self.model != "PP-100AP":
            raise RobotConfigError('print_mode = 3 (fastest) is only for model = "PP-100AP" (TD Bridge JDF2603)')
        if self.label_type == 3 and self.print_mode in (2, 3):
            raise RobotConfigError("label_type = 3 (Epson media) needs print_mode = 1 (TD Bridge JDF2602)")
        for media, fmt in self.formats.items():
            if media not in EPSON_FORMATS or fmt not in EPSON_FORMATS[media]:
                raise RobotConfigError(f"formats.{media} = {fmt!r}: allowed are {dict(EPSON_FORMATS)}")

    def format_for(self, media: str) -> str:
        """The FORMAT value for a data job on ``media``."""
        return self.formats.get(media, DEFAULT_FORMATS[media])

    def out_stackers(self) -> tuple[int, ...]:
        """The OUT_STACKER values the configured model accepts (those of every model when none is set)."""
        return EPSON_MODELS.get(self.model, COMMON_OUT_STACKERS)

    def prints_labels(self) -> bool:
        """True when a job of this robot carries a ``LABEL=`` (a template, or images where proven)."""
        return bool(self.label_template) or self.image_labels


class EpsonRobot(HotFolderRobot):
    """EPSON Discproducer driven through TD Bridge's hot folder."""

    bridge_name = "TD Bridge"
    job_ext = "JDF"
    max_ticket = 40

    def __init__(self, config: EpsonConfig) -> None:
        super().__init__(config, "epson")
        self.config: EpsonConfig = config

    @property
    def vendor(self) -> str:
        return "Epson (TD Bridge)"

    def setup_warnings(self) -> tuple[str, ...]:
        """Warn that discs come out unprinted when no ``.tdd`` template is configured."""
        if self.config.prints_labels():
            return ()
        return (
            f"{self.name}: no label template is configured (label_template = the site's .tdd made in EPSON Total "
            "Disc Maker), so TD Bridge burns every disc without printing a label",
        )

    # ------------------------------------------------------------------------------------------ job files

    def render(self, req: BurnRequest, ticket: str | None = None) -> dict[str, bytes]:
        """Return ``{"<ticket>.JDF": ..., "<ticket>.DAT": ...}`` exactly as :meth:`submit` writes them.

        Keys follow the order of the TD Bridge manual's example (spec §1.2); optional keys appear only when
        configured.  Lines end in CRLF; the text is encoded in ``encoding`` (ANSI).
        """
        ticket = ticket or req.job_id
        cfg = self.config
        to_bridge = self.paths.to_bridge
        lines = [f"JOB_ID={ticket}"]
        if cfg.publisher:
            lines.append(f"PUBLISHER={cfg.publisher}")
        lines.append(f"COPIES={req.copies}")
        if cfg.out_stacker:
            lines.append(f"OUT_STACKER={cfg.out_stacker}")
        if cfg.in_stacker:
            lines.append(f"IN_STACKER={cfg.in_stacker}")
        lines.append(f"DISC_TYPE={req.media}")
        if cfg.writing_speed:
            lines.append(f"WRITING_SPEED={cfg.writing_speed}")
        lines.append(f"COMPARE={'YES' if req.verify else 'NO'}")
        if cfg.close_disc:
            lines.append(f"CLOSE_DISC={cfg.close_disc}")
        if req.image_path is not None:
            # The image carries its own file system and volume label.
            lines.append(f"IMAGE={to_bridge(req.image_path)}")
        else:
            lines.append(f"FORMAT={cfg.format_for(req.media)}")
            lines.extend(f"DATA={to_bridge(path)}" for path in req.data_paths)
            lines.append(f"VOLUME_LABEL={volume_label(req.volume_label, ticket)}")
        files: dict[str, bytes] = {}
        label, merge = self._label_lines(req, ticket)
        lines.extend(label)
        if merge is not None:
            files[f"{ticket}.DAT"] = merge
        if cfg.label_type:
            lines.append(f"LABEL_TYPE={cfg.label_type}")
        if cfg.print_mode:
            lines.append(f"PRINT_MODE={cfg.print_mode}")
        if req.priority:
            lines.append("PRIORITY=HIGH")
        files[f"{ticket}.JDF"] = encode_text(lines, cfg.encoding, f"job {ticket}")
        return files

    def _label_lines(self, req: BurnRequest, ticket: str) -> tuple[list[str], bytes | None]:
        cfg = self.config
        template = self.template_path(req.label.tdd)
        if template:
            lines = [f"LABEL={template}"]
            if not req.label.fields:
                return lines, None
            merge_path = self.hotfolder / f"{ticket}.DAT"
            lines.append(f"REPLACE_FIELD={self.paths.to_bridge(merge_path)}")
            return lines, merge_file(req.label.fields, cfg.encoding)
        image = req.label.jpg or req.label.bmp
        if cfg.image_labels and image is not None:
            return [f"LABEL={self.paths.to_bridge(image)}"], None
        if req.label.fields or image is not None:
            LOGGER.warning(
                "%s: job %s has label data but no .tdd template (label_template); printing nothing",
                self.name,
                ticket,
            )
        return [], None

    # ------------------------------------------------------------------------------------------ status file

    def _read_stf(self) -> tuple[Ini | None, float]:
        """Read TDBStatus.txt; return it (or None) and the seconds since TD Bridge last rewrote it."""
        path = self.hotfolder / self.config.status_file
        # Both layouts count: with [TDB_INFO] (Rev. L) and without it (Rev. C).  Offline means missing or stale.
        stf = read_ini(path, any_of=STF_SECTIONS, encoding=self.config.encoding)
        if stf is None:
            self.liveness.reset()
            return None, float("inf")
        try:
            st = path.stat()
            signature: object = (st.st_mtime_ns, st.st_size)
        except OSError:
            signature = None
        return stf, self._status_age(path, signature)

    def _known_job_ids(self) -> set[str]:
        stf, _ = self._read_stf()
        return {
            name.upper() for name in (stf or {}) if name not in STF_RESERVED and not re.fullmatch(r"PUBLISHER\d+", name)
        }

    # ------------------------------------------------------------------------------------------ poll

    def poll(self, ticket: str) -> JobProgress:
        """Follow the job file's renames and its ``[<JOB_ID>]`` section in TDBStatus.txt."""
        files = job_files(self.hotfolder, ticket)
        stf, age = self._read_stf()
        section = dict((stf or {}).get(ticket, {}))
        fresh = age <= self.config.status_timeout
        if "CDN" in files and (not _active(files) or as_int(section.get("STATUS")) in (4, 5)):
            return JobProgress(JobState.CANCELLED, "cancelled on request", retry_possible=True, raw=section)
        if "DON" in files:
            return self._note_label(_finished(section, failed=False), files["DON"])
        if "ERR" in files:
            return _finished(section, failed=True)
        if "JDF" in files:
            waited = self._pending_seconds(ticket, files["JDF"])
            if waited > self.config.offline_timeout:
                return self._offline(waited)
            return JobProgress(JobState.PENDING, "waiting for TD Bridge to pick up the job", retry_possible=True)
        if _active(files):
            if not fresh:
                since = age if stf is not None else self._pending_seconds(ticket, next(iter(files.values())))
                return self._offline(since)
            return self._forward_only(ticket, _running(files, section, stf or {}, ticket))
        if "CANCELLED" in files:
            return self._withdrawn()
        status = as_int(section.get("STATUS"))
        if status in (4, 5, 6):  # .DON/.ERR already moved to TD Bridge's log folder
            done = _finished(section, failed=status != 4)
            return self._note_label(done, None) if status == 4 else done
        raise UnknownTicketError(f"no job {ticket!r} in {self.hotfolder} or in {self.config.status_file}")

    def _note_label(self, progress: JobProgress, job_file: Path | None) -> JobProgress:
        """Add :data:`NO_LABEL_NOTE` to a finished job whose JDF had no ``LABEL=`` line."""
        if progress.state != JobState.DONE:
            return progress
        printed = self.config.prints_labels()
        if job_file is not None:  # the renamed JDF says exactly what was asked for
            try:
                text = decode_text(job_file.read_bytes(), self.config.encoding)
                printed = any(line.startswith("LABEL=") for line in text.splitlines())
            except OSError:
                pass
        if printed:
            return progress
        return dataclasses.replace(
            progress, reason=f"{progress.reason}; {NO_LABEL_NOTE}", notes=(*progress.notes, NO_LABEL_NOTE)
        )

    # ------------------------------------------------------------------------------------------ cancel

    def cancel(self, ticket: str) -> None:
        """Withdraw a job TD Bridge has not read yet, else send a ``.JCF`` and wait for ``.CDN``/``.CER``."""
        files = job_files(self.hotfolder, ticket)
        if self._withdraw(ticket, files):
            return
        files = job_files(self.hotfolder, ticket)
        if "DON" in files or "ERR" in files:
            raise CancelError(f"job {ticket} has already finished")
        if not _active(files):
            raise UnknownTicketError(f"no job {ticket!r} in {self.hotfolder}")
        for stale in ("CDN", "CER"):  # answers to an earlier attempt would hide the new one
            if stale in files:
                files[stale].unlink(missing_ok=True)
        body = encode_text(["[CANCEL]", f"JOB_ID={ticket}"], self.config.encoding, "cancel file")
        atomic_write(self.hotfolder, f"{ticket}.JCF", body)

        def answered() -> bool:
            return bool({"CDN", "CER"} & job_files(self.hotfolder, ticket).keys())

        if not wait_until(answered, self.config.cancel_timeout, 0.1):
            LOGGER.warning("%s: no answer to cancelling %s yet; the .JCF stays for TD Bridge", self.name, ticket)
            return
        if "CER" in job_files(self.hotfolder, ticket):
            raise CancelError(f"TD Bridge could not cancel job {ticket} (it may be finishing)")

    # ------------------------------------------------------------------------------------------ robot status

    def status(self) -> RobotStatus:
        """Summarise TDBStatus.txt: publisher state, stacker and ink levels, drives and errors."""
        stf, age = self._read_stf()
        if stf is None or age > self.config.status_timeout:
            seconds = "ever" if stf is None else f"{int(age)} s"
            reason = (
                f"bridge offline: no answer from TD Bridge for {seconds}"
                if stf is not None
                else f"bridge offline: no {self.config.status_file} in {self.hotfolder}"
            )
            return RobotStatus(False, RobotState.OFFLINE, reason=reason, raw=stf or {})
        pub = _publisher_section(stf, self.config.publisher)
        ink = {label: v for key, label in INK_KEYS.items() if (v := as_int(pub.get(key), -1)) is not None and v >= 0}
        media: dict[str, int] = {}
        for n in range(1, 5):
            level = as_int(pub.get(f"STACKER{n}"), -1)
            setting = as_int(pub.get(f"STACKER{n}_SETTING"))
            if level is None or level < 0 or setting in (0, 99):
                continue
            kind = STACKER_MEDIA.get(setting, "") if setting is not None else ""
            media[f"stacker {n}" + (f" ({kind})" if kind else "")] = level
        drives = []
        for n in (1, 2):
            code = as_int(pub.get(f"DRIVE{n}_STATUS"))
            if code is None and f"DRIVE{n}_PROGRESS" not in pub:
                continue
            drives.append(
                DriveStatus(
                    f"drive {n}",
                    DRIVE_STATES.get(code or 0, "unknown"),
                    as_int(pub.get(f"DRIVE{n}_PROGRESS")),
                )
            )
        active = _job_list(stf, "ACTIVE_JOB")
        errors = []
        for job in active:
            code_s = stf.get(job, {}).get("ERROR", "").strip()
            if code_s and code_s != "0" and code_s.upper() not in EPSON_INFORMATIONAL:
                errors.append(f"{job}: {describe_epson(code_s).reason}")
        current_error = (
            bool(errors) or as_int(pub.get("PRINTER_STATUS")) in (5, 7) or any(d.state == "error" for d in drives)
        )
        for job in _job_list(stf, "COMPLETE_JOB")[:5]:
            sec = stf.get(job, {})
            if as_int(sec.get("STATUS")) in (5, 6) and sec.get("ERROR"):
                errors.append(f"{job}: {describe_epson(sec['ERROR']).reason}")
        if current_error:
            state, reason = RobotState.ERROR, errors[0] if errors else "printer or drive error"
        elif active:
            state, reason = RobotState.BUSY, f"{len(active)} job(s) active"
        else:
            state, reason = RobotState.IDLE, "idle"
        version = stf.get("TDB_INFO", {}).get("VERSION", "")
        return RobotStatus(
            True,
            state,
            reason=reason,
            ink=ink,
            media=media,
            media_unit="%",
            drives=tuple(drives),
            errors=tuple(errors),
            bridge=f"TD Bridge {version}".strip(),
            raw=stf,
        )


# ---------------------------------------------------------------------------------------------- helpers


def volume_label(label: str, fallback: str) -> str:
    """A volume label every FORMAT accepts: ``A-Z a-z 0-9 _``, at most 32 characters (rule UNCONFIRMED)."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", transliterate(label, "ascii")).strip("_")[:32]
    return clean or fallback[:32]


def merge_file(fields: Mapping[str, str], encoding: str) -> bytes:
    """The ``REPLACE_FIELD`` file: ``Name=value`` lines, CRLF, in the bridge's code page.

    Raises
    ------
    RequestError
        A field name is unusable or there are more than 255 fields (TD Bridge error JDF1604).
    """
    if len(fields) > MAX_FIELDS:
        raise RequestError(f"label has {len(fields)} merge fields; TD Bridge accepts at most {MAX_FIELDS}")
    lines = []
    for name, value in fields.items():
        if not name or re.search(r"[=\r\n]", name):
            raise RequestError(f"merge field name {name!r} must be non-empty without '=' or line breaks")
        # Patient names often hold characters the ANSI code page lacks: transliterate, never fail the disc.
        lines.append(f"{name}={transliterate(clean_field(value, MAX_FIELD_CHARS), encoding)}")
    return encode_text(lines, encoding, "merge file")


def _active(files: Mapping[str, Path]) -> bool:
    return bool({"RJD", "INP", "STP"} & files.keys())


def _job_list(stf: Ini, section: str) -> list[str]:
    entries = stf.get(section, {})
    keyed = sorted((as_int(k[3:], 0) or 0, v) for k, v in entries.items() if k.upper().startswith("JOB") and v)
    return [v for _, v in keyed]


def _publisher_section(stf: Ini, name: str) -> dict[str, str]:
    pubs = [sec for key, sec in stf.items() if re.fullmatch(r"PUBLISHER\d+", key)]
    for sec in pubs:
        if name and sec.get("NAME") == name:
            return sec
    return pubs[0] if pubs else {}


def _counts(section: Mapping[str, str]) -> tuple[int, int]:
    done = max(0, as_int(section.get("COMPLETION_NUMBER"), 0) or 0)
    bad = max(0, as_int(section.get("ERRORDISC_NUMBER"), 0) or 0)
    return done, bad


def _finished(section: Mapping[str, str], failed: bool) -> JobProgress:
    detail = as_int(section.get("DETAIL_STATUS"))
    done, bad = _counts(section)
    raw = dict(section)
    if detail == 12:
        return JobProgress(
            JobState.CANCELLED,
            "cancelled by a user at the publisher",
            retry_possible=True,
            copies_done=done,
            copies_failed=bad,
            raw=raw,
        )
    code = section.get("ERROR", "").strip()
    if not failed and detail != 13:
        reason = f"{done} disc(s) published"
        if bad or detail in (10, 11):
            reason += f", {bad} error disc(s)" if bad else " with an alarm"
        return JobProgress(JobState.DONE, reason, copies_done=done, copies_failed=bad, raw=raw)
    if not code or code == "0":
        return JobProgress(
            JobState.FAILED,
            "TD Bridge reported an error without a code",
            retry_possible=True,
            needs_staff=True,
            copies_done=done,
            copies_failed=bad,
            raw=raw,
        )
    info = describe_epson(code)
    return JobProgress(
        JobState.FAILED,
        info.reason,
        error_code=code,
        retry_possible=info.retry_possible,
        needs_staff=info.needs_staff,
        copies_done=done,
        copies_failed=bad,
        raw=raw,
    )


def _running(files: Mapping[str, Path], section: Mapping[str, str], stf: Ini, ticket: str) -> JobProgress:
    raw = dict(section)
    done, bad = _counts(section)
    total = as_int(section.get("PUBLICATION_NUMBER"), 0) or 0
    status = as_int(section.get("STATUS"))
    code = section.get("ERROR", "").strip()
    if code.upper() in EPSON_INFORMATIONAL:  # OTH000 right after submission: the job simply goes on
        code = ""
    info = describe_epson(code) if code and code != "0" else None
    if "STP" in files or status == 3:
        reason = info.reason if info else "paused in EPSON Total Disc Monitor or cover open"
        return JobProgress(
            JobState.PAUSED,
            reason,
            error_code=code or None,
            retry_possible=True,
            needs_staff=True,
            copies_done=done,
            copies_failed=bad,
            raw=raw,
        )
    if "RJD" in files:
        return JobProgress(JobState.ACCEPTED, "TD Bridge is checking the job", retry_possible=True, raw=raw)
    if status == 2:
        state = JobState.BURNING
        reason = f"publishing copy {min(done + bad + 1, total or done + bad + 1)} of {total or '?'}"
    else:
        state = JobState.ACCEPTED
        active = _job_list(stf, "ACTIVE_JOB")
        ahead = active.index(ticket) if ticket in active else 0
        reason = "waiting for the publisher" + (f" ({ahead} job(s) ahead)" if ahead else "")
    if info is not None:  # RTN codes: the job waits until an operator fixes the robot
        return JobProgress(
            state,
            info.reason,
            error_code=code,
            retry_possible=True,
            needs_staff=True,
            copies_done=done,
            copies_failed=bad,
            raw=raw,
        )
    detail = as_int(section.get("DETAIL_STATUS"))
    if detail in (4, 5, 6, 8):
        reason = DETAIL_TEXT[detail]
    return JobProgress(state, reason, retry_possible=True, copies_done=done, copies_failed=bad, raw=raw)
