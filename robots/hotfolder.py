"""Helpers shared by the hot-folder drivers and simulators.

Both vendors' bridges watch a folder, rename job files as the job moves on, and rewrite an INI status file
every few seconds.  This module holds what does not depend on the vendor: atomic writes, finding a job's
files, reading a status file that the bridge may be rewriting at that moment, path translation to the bridge
PC, and the liveness clock that turns "no answer" into ``bridge_offline``.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import logging
import ntpath
import os
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from robots.base import (
    BurnRequest,
    DiscRobot,
    HotFolderError,
    JobProgress,
    JobState,
    RequestError,
    RobotConfigError,
)

LOGGER = logging.getLogger(__name__)

#: Parsed INI file: section -> key -> value (keys keep their case).
Ini = dict[str, dict[str, str]]

#: Extension (upper case) of the file we leave behind when a job is withdrawn before the bridge saw it.
WITHDRAWN_EXT = "CANCELLED"


def atomic_write(folder: Path, name: str, data: bytes) -> Path:
    """Write ``folder/name`` so that a watcher never sees a partial file.

    The bytes go to a hidden temporary name ending in ``.tmp`` (no bridge watches that pattern), are flushed
    and fsynced, then renamed into place with :func:`os.replace`.

    Parameters
    ----------
    folder : Path
        The hot folder (or any folder the bridge reads).
    name : str
        Final file name.
    data : bytes
        Exact content.

    Returns
    -------
    Path
        The final path.

    Raises
    ------
    HotFolderError
        The folder is missing or not writable.
    """
    final = folder / name
    temp = folder / f".~{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(temp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, final)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise HotFolderError(f"cannot write {final}: {exc.strerror or exc}") from exc
    _fsync_dir(folder)
    return final


def _fsync_dir(folder: Path) -> None:
    # Makes the rename durable on a local disk; SMB/CIFS mounts and Windows refuse, which is harmless.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def job_files(folder: Path, base: str) -> dict[str, Path]:
    """Find the files of one job: ``{"JDF": Path(".../base.JDF"), ...}``.

    The base name is compared exactly, the extension without regard to case (the bridges run on Windows).

    Raises
    ------
    HotFolderError
        The folder cannot be listed.
    """
    found: dict[str, Path] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, dot, ext = entry.name.rpartition(".")
                if dot and stem == base and entry.is_file():
                    found[ext.upper()] = Path(entry.path)
    except OSError as exc:
        raise HotFolderError(f"cannot list hot folder {folder}: {exc.strerror or exc}") from exc
    return found


def used_bases(folder: Path) -> set[str]:
    """Base names of every file in the folder, folded to upper case (Windows names ignore case)."""
    try:
        return {entry.name.rpartition(".")[0].upper() for entry in os.scandir(folder) if "." in entry.name}
    except OSError as exc:
        raise HotFolderError(f"cannot list hot folder {folder}: {exc.strerror or exc}") from exc


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Call ``condition`` until it is true or ``timeout`` seconds have passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# ----------------------------------------------------------------------------------------------- INI files


def decode_text(data: bytes, encoding: str) -> str:
    """Decode a file written by a Windows program: honour a BOM, else use the configured ANSI code page."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    return data.decode(encoding, errors="replace")


def parse_ini(text: str) -> Ini:
    """Parse INI text as the Windows profile API does: ``[section]``, ``key=value``, case kept, last key wins.

    Lines before the first section and lines without ``=`` are ignored; ``;`` and ``#`` start comment lines.
    """
    result: Ini = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = result.setdefault(line[1:-1].strip(), {})
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return result


def read_ini(
    path: Path,
    required: Iterable[str] = (),
    encoding: str = "cp1252",
    any_of: Iterable[str] = (),
    attempts: int = 5,
    delay: float = 0.05,
    reader: Callable[[Path], bytes] | None = None,
) -> Ini | None:
    """Read a status file that the bridge rewrites in place, retrying on a partial read.

    The file is opened, read in one go and closed at once (TD Bridge cannot rewrite it while someone holds it
    open).  A read counts as partial when it is empty, contains NUL bytes (space the writer has reserved but
    not filled), lacks one of the ``required`` sections or every one of the ``any_of`` sections, or fails with
    a sharing violation.

    Parameters
    ----------
    path : Path
    required : iterable of str
        Sections a complete file always has (e.g. ``"TDB_INFO"``).
    encoding : str
        Code page when the file has no BOM.
    any_of : iterable of str
        Sections of which a complete file has at least one (for bridges whose versions differ in layout).
    attempts, delay : int, float
        How often to try and how long to wait in between.
    reader : callable, optional
        Replaces the file read (tests use it to feed partial content).

    Returns
    -------
    dict or None
        Section -> key -> value, or None when the file is missing or stayed unreadable.
    """
    read = reader or _read_bytes
    needed = tuple(required)
    some = tuple(any_of)
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(delay)
        try:
            data = read(path)
        except FileNotFoundError:
            return None
        except OSError as exc:  # sharing violation while the bridge writes: try again
            LOGGER.debug("status file %s busy: %s", path, exc)
            continue
        utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
        if not data.strip() or (b"\x00" in data and not utf16):
            continue
        ini = parse_ini(decode_text(data, encoding))
        if all(section in ini for section in needed) and (not some or any(section in ini for section in some)):
            return ini
    LOGGER.warning("status file %s stayed incomplete after %d reads", path, attempts)
    return None


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def as_int(value: str | None, default: int | None = None) -> int | None:
    """Leading integer of a status value (``"5 "`` -> 5); ``default`` when absent or not a number."""
    if value is None:
        return default
    match = re.match(r"\s*(-?\d+)", value)
    return int(match.group(1)) if match else default


# ---------------------------------------------------------------------------------------------------- paths


def _is_windows_path(path: str) -> bool:
    return "\\" in path or bool(re.match(r"[A-Za-z]:", path))


@dataclass(frozen=True)
class PathMap:
    """Translate our local paths to the paths the bridge PC sees, and back.

    Each pair is ``(local_root, bridge_root)``, e.g. ``("/var/app/discs", r"\\\\PC\\share\\discs")`` or
    ``("/var/app/discs", "D:\\\\discs")``.  The longest matching root wins.  With no pairs, paths pass
    unchanged (the bridge reads the same file system, as the simulator does).
    """

    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_roots(cls, pairs: Iterable[tuple[str | os.PathLike[str], str]]) -> PathMap:
        """Build a map; local roots are made absolute, trailing separators dropped."""
        clean: list[tuple[str, str]] = []
        for local, bridge in pairs:
            local_s = os.path.abspath(os.fspath(local))
            bridge_s = bridge.rstrip("\\/") or bridge
            clean.append((local_s, bridge_s))
        clean.sort(key=lambda pair: len(pair[0]), reverse=True)
        return cls(tuple(clean))

    def to_bridge(self, path: str | os.PathLike[str]) -> str:
        """Return the bridge's name for a local path.

        Raises
        ------
        RequestError
            A mapping is configured but the path lies outside every local root, so the bridge cannot see it.
        """
        local = os.path.abspath(os.fspath(path))
        if not self.pairs:
            return local
        for root, bridge in self.pairs:
            if local == root or local.startswith(root.rstrip("/") + "/"):
                rest = PurePosixPath(local[len(root) :].lstrip("/")).parts
                if _is_windows_path(bridge):
                    return ntpath.join(bridge, *rest) if rest else bridge
                return str(PurePosixPath(bridge, *rest))
        roots = ", ".join(root for root, _ in self.pairs)
        raise RequestError(f"{local} is outside local_root ({roots}); the bridge PC cannot reach it")

    def to_local(self, bridge_path: str) -> Path | None:
        """Return the local path for a path the bridge was given; None if no root covers it."""
        if not self.pairs:
            return Path(bridge_path)
        for root, bridge in self.pairs:
            if _is_windows_path(bridge):
                norm = bridge_path.replace("/", "\\")
                broot = bridge.replace("/", "\\")
                if norm.lower() == broot.lower() or norm.lower().startswith(broot.lower().rstrip("\\") + "\\"):
                    rest = [part for part in norm[len(broot) :].split("\\") if part]
                    return Path(root, *rest)
            elif bridge_path == bridge or bridge_path.startswith(bridge.rstrip("/") + "/"):
                rest = [part for part in bridge_path[len(bridge) :].split("/") if part]
                return Path(root, *rest)
        return None


# ------------------------------------------------------------------------------------------------ liveness


class Liveness:
    """Seconds since the bridge last showed a sign of life.

    A sign is a change of the status file's signature (its size and mtime, or PTBurn's ``ServerTickCount``).
    The first reading falls back on the file's mtime, so a one-shot command sees a long-dead bridge at once,
    while a long-running process uses only its own monotonic clock and is immune to clock skew on the share.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signature: object = None
        self._changed_at = 0.0

    def observe(self, signature: object, mtime: float | None) -> float:
        """Record a reading and return the seconds since the last change."""
        now = time.monotonic()
        with self._lock:
            if self._signature is None or signature != self._signature:
                first = self._signature is None
                self._signature = signature
                wall_age = max(0.0, time.time() - mtime) if (first and mtime is not None) else 0.0
                self._changed_at = now - wall_age
            return now - self._changed_at

    def reset(self) -> None:
        """Forget the last reading (the status file vanished)."""
        with self._lock:
            self._signature = None


def file_age(path: Path) -> float | None:
    """Seconds since ``path`` was last modified, or None if it does not exist."""
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except OSError:
        return None


def clean_field(value: str, limit: int) -> str:
    """Make a merge-field value fit a one-line ``key=value`` file: no line breaks, ``limit`` chars."""
    return re.sub(r"[\r\n\t]+", " ", value).strip()[:limit]


def encode_text(lines: Iterable[str], encoding: str, what: str) -> bytes:
    """Join lines with CRLF (Windows text, ending with CRLF) and encode them for the bridge.

    ``encoding = "utf-16"`` gives UTF-16LE with a byte-order mark.

    Raises
    ------
    RequestError
        A character has no representation in the bridge's code page.
    """
    text = "".join(line + "\r\n" for line in lines)
    if codecs.lookup(encoding).name == "utf-16":
        # PTBurn's Unicode build reads UTF-16LE with a byte-order mark, whatever this machine's byte order.
        return b"\xff\xfe" + text.encode("utf-16-le")
    try:
        return text.encode(encoding)
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise RequestError(f"{what}: {bad!r} cannot be written in the bridge's code page {encoding}") from exc


def transliterate(value: str, encoding: str) -> str:
    """Replace characters the code page lacks by their ASCII form (``"Łódź"`` -> ``"Lodz"``), else ``?``."""
    out = []
    for ch in value:
        try:
            ch.encode(encoding)
            out.append(ch)
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
            out.append(base or _EXTRA_ASCII.get(ch, "?"))
    return "".join(out)


_EXTRA_ASCII: Mapping[str, str] = {"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Ø": "O", "ø": "o", "ß": "ss"}


# ---------------------------------------------------------------------------------------------------- drivers


@dataclass(frozen=True)
class HotFolderConfig:
    """Options every hot-folder robot has (one ``[robots.<name>]`` table).  Documented in docs/robots.md."""

    name: str = ""
    hotfolder: str = ""
    simulate: bool = False
    local_root: str = ""
    bridge_root: str = ""
    bridge_hotfolder: str = ""
    offline_timeout: float = 60.0
    status_timeout: float = 30.0
    cancel_timeout: float = 15.0
    encoding: str = "cp1252"
    label_template: str = ""
    simulator: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.hotfolder:
            raise RobotConfigError("hotfolder: the folder the bridge watches is required")
        if bool(self.local_root) != bool(self.bridge_root):
            raise RobotConfigError("local_root and bridge_root go together: give both or neither")
        for key in ("offline_timeout", "status_timeout", "cancel_timeout"):
            if getattr(self, key) <= 0:
                raise RobotConfigError(f"{key} must be more than 0 seconds")
        try:
            "x".encode(self.encoding)
        except LookupError as exc:
            raise RobotConfigError(f"encoding: unknown code page {self.encoding!r}") from exc

    def path_map(self) -> PathMap:
        """The local -> bridge path translation these options describe."""
        pairs: list[tuple[str, str]] = []
        if self.local_root:
            pairs.append((self.local_root, self.bridge_root))
        if self.bridge_hotfolder:
            pairs.append((self.hotfolder, self.bridge_hotfolder))
        return PathMap.from_roots(pairs)


class HotFolderRobot(DiscRobot):
    """What the vendor drivers share: ticket allocation, atomic submission, withdrawal, liveness."""

    #: Readable name of the bridge software, used in reasons.
    bridge_name = "bridge"
    #: Extension of the job file we write (upper case).
    job_ext = "JOB"
    #: Longest job file base name the bridge accepts.
    max_ticket = 32

    def __init__(self, config: HotFolderConfig, kind: str) -> None:
        self.config = config
        self._name = config.name or kind
        self.hotfolder = Path(config.hotfolder)
        self.paths = config.path_map()
        self._lock = threading.Lock()
        self._submitted: dict[str, float] = {}
        self._progress: dict[str, JobState] = {}
        self.liveness = Liveness()

    #: Order of the states a running job passes through.
    _RUNNING_ORDER = (JobState.PENDING, JobState.ACCEPTED, JobState.BURNING)

    def _forward_only(self, ticket: str, progress: JobProgress) -> JobProgress:
        """Never report a running job as going back (burning -> accepted).

        The status file is rewritten by the bridge on its own schedule and can lag
        behind the job file's rename; staff watching the queue must not see a disc
        "un-start".
        """
        state = progress.state
        if state not in self._RUNNING_ORDER:
            if state.final:
                self._progress.pop(ticket, None)
            return progress
        last = self._progress.get(ticket)
        if last is not None and self._RUNNING_ORDER.index(last) > self._RUNNING_ORDER.index(state):
            return dataclasses.replace(progress, state=last)
        self._progress[ticket] = state
        return progress

    @property
    def name(self) -> str:
        return self._name

    @property
    def location(self) -> str:
        return f"hot folder {self.hotfolder}"

    def _known_job_ids(self) -> set[str]:
        """Job ids the bridge still remembers (upper case); vendors add their status-file entries."""
        return set()

    def _allocate(self, job_id: str) -> str:
        used = used_bases(self.hotfolder) | self._known_job_ids()
        for n in range(1, 1000):
            suffix = "" if n == 1 else f"_{n}"
            candidate = job_id[: self.max_ticket - len(suffix)] + suffix
            if candidate.upper() not in used:
                return candidate
        raise RequestError(f"job id {job_id!r} has been used 999 times in {self.hotfolder}; clean the folder")

    def template_path(self, requested: Path | None) -> str:
        """The bridge's path of the label template: the request's, else ``label_template``, else ``""``.

        A ``label_template`` written as a Windows path (``C:\\Labels\\patient.tdd``) is taken as the bridge
        PC's own path and passed through unchanged; a local path is mapped like every other path.
        """
        if requested is not None:
            return self.paths.to_bridge(requested)
        configured = self.config.label_template
        if not configured:
            return ""
        return configured if _is_windows_path(configured) else self.paths.to_bridge(configured)

    def _check_sources(self, req: BurnRequest) -> None:
        sources = [req.image_path] if req.image_path else list(req.data_paths)
        for extra in (req.label.tdd, req.label.std, req.label.jpg, req.label.bmp):
            if extra is not None:
                sources.append(extra)
        for path in sources:
            if path is not None and not Path(path).exists():
                raise RequestError(f"{path} does not exist")

    def submit(self, req: BurnRequest) -> str:
        """Write the job atomically and return its ticket (the job file's base name).

        A retry of the same ``job_id`` gets a fresh ticket (``<job_id>_2`` ...) because both bridges refuse a
        job id they have already seen.
        """
        if not self.hotfolder.is_dir():
            raise HotFolderError(f"hot folder {self.hotfolder} does not exist or is not a folder")
        self._check_sources(req)
        with self._lock:
            ticket = self._allocate(req.job_id)
            files = self.render(req, ticket)
            job_name = f"{ticket}.{self.job_ext}"
            # Helper files (merge data) first: the bridge may read the job file the moment it appears.
            for fname, data in files.items():
                if fname != job_name:
                    atomic_write(self.hotfolder, fname, data)
            atomic_write(self.hotfolder, job_name, files[job_name])
            self._submitted[ticket] = time.monotonic()
        LOGGER.info("%s: submitted job %s to %s", self.name, ticket, self.hotfolder)
        return ticket

    def _pending_seconds(self, ticket: str, path: Path) -> float:
        started = self._submitted.get(ticket)
        if started is not None:
            return time.monotonic() - started
        return file_age(path) or 0.0

    def _offline(self, seconds: float, raw: Mapping[str, str] | None = None) -> JobProgress:
        return JobProgress(
            JobState.BRIDGE_OFFLINE,
            reason=f"bridge offline: no answer from {self.bridge_name} for {int(seconds)} s",
            retry_possible=True,
            needs_staff=True,
            raw=dict(raw or {}),
        )

    def _withdraw(self, ticket: str, files: Mapping[str, Path]) -> bool:
        """Take a job the bridge has not picked up out of the hot folder; False if the bridge got it first."""
        src = files.get(self.job_ext)
        if src is None:
            return False
        try:
            os.replace(src, src.with_name(f"{ticket}.{WITHDRAWN_EXT.lower()}"))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise HotFolderError(f"cannot withdraw {src}: {exc.strerror or exc}") from exc
        LOGGER.info("%s: withdrew job %s before %s picked it up", self.name, ticket, self.bridge_name)
        return True

    def _withdrawn(self) -> JobProgress:
        return JobProgress(
            JobState.CANCELLED,
            reason=f"cancelled before {self.bridge_name} picked the job up",
            retry_possible=True,
        )

    def _status_age(self, path: Path, signature: object) -> float:
        try:
            mtime: float | None = path.stat().st_mtime
        except OSError:
            mtime = None
        return self.liveness.observe(signature, mtime)
