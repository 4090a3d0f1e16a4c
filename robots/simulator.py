"""Bridge simulators: a thread that behaves like TD Bridge or PTBurn on a hot folder.

A simulator picks up job files, renames them through the vendor's states, rewrites the vendor's status files,
spends a configurable time per disc, uses up blank discs and ink, and can be told to fail.  It is strict: a
job file with a missing or malformed key is rejected with the vendor's documented error code, so the drivers
are held to the real format.

Faults are injected through the Python API (:meth:`BridgeSimulator.inject`) or, from another process, through
a control file in the hot folder (:func:`send_control`) holding one command per line::

    fault no_media | ink_out | drive_error | bad_job_key | cover_open | bad_media
    code RTN013          (any vendor code: Epson "CAN008", Primera "job-18" / "system-3")
    clear                (remove injected faults)
    move                 (Primera: PTBurn moves the running job to a second robot, as AutoSwitchRobot does)
    refill [N]           (load N blank discs in every input stacker/bin; default: the configured number)
    ink N                (set every ink level to N percent)
    offline / online     (the bridge stops answering / answers again)

The simulator deletes the control file once it has acted on it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from robots.base import RobotConfigError
from robots.hotfolder import HotFolderConfig, PathMap, atomic_write, wait_until

LOGGER = logging.getLogger(__name__)

FAULT_KINDS = ("wait", "pause", "fail", "reject")


@dataclass(frozen=True)
class SimulatorConfig:
    """Options of the ``[robots.<name>.simulator]`` table; see docs/robots.md."""

    disc_seconds: float = 2.0
    step_seconds: float = 0.3
    status_interval: float = 1.0
    scan_interval: float = 0.05
    discs: int = 50
    ink: int = 100
    ink_per_disc: float = 1.0
    control_file: str = "simulator.ctl"
    stackers: Mapping[str, str] = field(default_factory=lambda: {"1": "CD", "2": "DVD"})
    out_stackers: tuple[str, ...] = ()
    tdb_info: bool = True
    job_lists: bool = True

    def __post_init__(self) -> None:
        for key in ("disc_seconds", "step_seconds", "status_interval", "scan_interval"):
            if getattr(self, key) < 0:
                raise RobotConfigError(f"simulator.{key} must not be negative")
        if self.discs < 0 or not 0 <= self.ink <= 100:
            raise RobotConfigError("simulator.discs must be >= 0 and simulator.ink 0-100")
        for stacker, media in self.stackers.items():
            if stacker not in ("1", "2") or media not in ("CD", "DVD", "DVD-DL", "BD", "BD-DL"):
                raise RobotConfigError(f"simulator.stackers.{stacker} = {media!r}: stacker 1 or 2, media CD/DVD/...")


@dataclass(frozen=True)
class Fault:
    """A fault the simulator can play.

    ``kind`` is ``wait`` (the running job holds until cleared), ``pause`` (Epson ``.STP`` until cleared),
    ``fail`` (the running job fails once) or ``reject`` (the next job file is refused once).
    """

    kind: str
    code: str


@dataclass
class SimJob:
    """A job the simulator is working on."""

    ticket: str
    path: Path
    seq: int
    job_id: str = ""
    copies: int = 1
    media: str = "CD"
    priority: int = 4
    prints: bool = False
    keys: dict[str, str] = field(default_factory=dict)
    merge: list[str] = field(default_factory=list)
    robot: str = ""
    since: float = 0.0
    done: int = 0
    bad: int = 0
    disc_started: float | None = None
    error: str = ""
    final: bool = False

    @property
    def ext(self) -> str:
        """Current extension of the job file (upper case)."""
        return self.path.suffix[1:].upper()


def send_control(hotfolder: Path, *commands: str, name: str = "simulator.ctl", timeout: float | None = None) -> bool:
    """Write commands for a simulator watching ``hotfolder`` (possibly in another process).

    Parameters
    ----------
    hotfolder : Path
    *commands : str
        Lines such as ``"fault no_media"``, ``"clear"``, ``"offline"``.
    name : str
        The control file name (``simulator.control_file``).
    timeout : float, optional
        Wait up to this many seconds for the simulator to consume the file.

    Returns
    -------
    bool
        True if the simulator consumed the file (always True without a timeout).
    """
    path = atomic_write(Path(hotfolder), name, "".join(c + "\n" for c in commands).encode("ascii"))
    if timeout is None:
        return True
    return wait_until(lambda: not path.exists(), timeout)


class BridgeSimulator(ABC):
    """What both vendor simulators share: the thread, faults, the control file, media and ink."""

    #: Named faults -> vendor fault.
    FAULTS: ClassVar[Mapping[str, Fault]] = {}

    def __init__(self, config: HotFolderConfig, sim: SimulatorConfig) -> None:
        self.config = config
        self.sim = sim
        self.hotfolder = Path(config.hotfolder)
        self.paths: PathMap = config.path_map()
        self.lock = threading.RLock()
        self.history: list[tuple[str, str]] = []
        self.jobs: dict[str, SimJob] = {}
        self.faults: list[Fault] = []
        self.offline = False
        self.ink: dict[str, float] = {}
        self.bins: dict[str, int] = {}
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_status = 0.0
        self.reset_supplies()

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start watching the hot folder (creating it if needed); jobs left in progress are resumed."""
        if self.running:
            return
        self.hotfolder.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.jobs.clear()
            self._resume()
        self._stop.clear()
        self._last_status = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"{type(self).__name__}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, as if the bridge service were stopped; files stay as they are."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def running(self) -> bool:
        """True while the watcher thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> BridgeSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ control

    def inject(self, name: str) -> None:
        """Play a named fault (see :attr:`FAULTS`), e.g. ``"no_media"``."""
        if name not in self.FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(self.FAULTS))}")
        with self.lock:
            self.faults.append(self.FAULTS[name])

    def inject_code(self, code: str) -> None:
        """Play the fault a vendor code stands for (its family decides wait/pause/fail/reject)."""
        with self.lock:
            self.faults.append(self.fault_for_code(code))

    def clear_faults(self) -> None:
        """Remove every injected fault; waiting and paused jobs go on."""
        with self.lock:
            self.faults.clear()

    def reset_supplies(self, discs: int | None = None, ink: float | None = None) -> None:
        """Fill the input stackers/bins and ink to the configured (or given) levels."""
        with self.lock:
            for key in self.bin_names():
                self.bins[key] = self.sim.discs if discs is None else discs
            if ink is not None or not self.ink:
                for colour in self.ink_names():
                    self.ink[colour] = float(self.sim.ink if ink is None else ink)

    def renames(self, ticket: str) -> list[str]:
        """The extensions the ticket's job file went through, in order (for tests and demos)."""
        with self.lock:
            return [ext for name, ext in self.history if name == ticket]

    def _fault(self, kinds: tuple[str, ...]) -> Fault | None:
        return next((f for f in self.faults if f.kind in kinds), None)

    def _consume(self, fault: Fault) -> None:
        if fault in self.faults:
            self.faults.remove(fault)

    def _read_control(self) -> None:
        path = self.hotfolder / self.sim.control_file
        try:
            text = path.read_text("ascii", errors="replace")
        except FileNotFoundError:
            return
        except OSError as exc:
            LOGGER.warning("simulator: cannot read %s: %s", path, exc)
            return
        for line in text.splitlines():
            words = line.split()
            if not words:
                continue
            try:
                self._command(words[0].lower(), words[1:])
            except (ValueError, IndexError) as exc:
                LOGGER.warning("simulator: bad control line %r: %s", line, exc)
        path.unlink(missing_ok=True)

    def _command(self, verb: str, args: list[str]) -> None:
        if verb == "fault":
            self.inject(args[0])
        elif verb == "code":
            self.inject_code(args[0])
        elif verb == "clear":
            self.clear_faults()
        elif verb == "refill":
            self.reset_supplies(discs=int(args[0]) if args else None)
        elif verb == "ink":
            with self.lock:
                for colour in self.ink:
                    self.ink[colour] = float(args[0])
        elif verb in ("offline", "online"):
            self.offline = verb == "offline"
        else:
            raise ValueError(f"unknown command {verb!r}")

    # ------------------------------------------------------------------------------------------ loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self.lock:
                    self._read_control()
                    if not self.offline:
                        now = time.monotonic()
                        self._tick(now)
                        if now - self._last_status >= self.sim.status_interval or self._last_status == 0.0:
                            self._write_status()
                            self._last_status = now
            except Exception:  # keep the bridge alive like the real service; the log shows the bug
                LOGGER.exception("simulator tick failed")
            self._stop.wait(self.sim.scan_interval)

    def rename(self, job: SimJob, ext: str) -> bool:
        """Move the job file to a new extension, as the bridge does; False if the file has gone."""
        target = job.path.with_name(f"{job.ticket}.{ext}")
        try:
            os.replace(job.path, target)
        except FileNotFoundError:
            return False
        job.path = target
        job.since = time.monotonic()
        self.history.append((job.ticket, ext))
        return True

    def new_job(self, path: Path) -> SimJob:
        """Register a job file found in the hot folder."""
        self._seq += 1
        job = SimJob(ticket=path.name.rpartition(".")[0], path=path, seq=self._seq, since=time.monotonic())
        self.jobs[job.ticket] = job
        return job

    def take_disc(self, media: str) -> bool:
        """Use one blank disc of ``media`` from an input stacker/bin; False if none is left."""
        for name in self.bins_for(media):
            if self.bins[name] > 0:
                self.bins[name] -= 1
                return True
        return False

    def use_ink(self) -> bool:
        """Print one label: use ink; False (no label printed) if a colour is empty."""
        if any(level <= 0 for level in self.ink.values()):
            return False
        for colour in self.ink:
            self.ink[colour] = max(0.0, self.ink[colour] - self.sim.ink_per_disc)
        return True

    def publish_step(self, job: SimJob, now: float, wait: Fault | None) -> bool:
        """Advance a job by one tick of the robot; True once its last copy is done.

        ``wait`` is the vendor's reason to hold the job (no media, ink out...): the
        job then stays where it is with that error code until the cause is gone.
        Otherwise each copy takes ``disc_seconds``, uses a disc and, with a label, ink.
        """
        if wait is not None:
            job.error = wait.code
            job.disc_started = None
            return False
        job.error = ""
        if job.disc_started is None:
            job.disc_started = now
            return False
        if now - job.disc_started < self.sim.disc_seconds:
            return False
        self.take_disc(job.media)
        if job.prints:
            self.use_ink()
        job.done += 1
        job.disc_started = now if job.done < job.copies else None
        return job.done >= job.copies

    def scan(self, ext: str) -> list[Path]:
        """Files with an extension (any case) in the hot folder, oldest first."""
        found = []
        with os.scandir(self.hotfolder) as entries:
            for entry in entries:
                if entry.name.rpartition(".")[2].upper() == ext and entry.is_file() and "." in entry.name:
                    try:
                        found.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path)))
                    except FileNotFoundError:
                        continue
        return [p for _, _, p in sorted(found)]

    def local(self, bridge_path: str) -> Path | None:
        """Where a path written in a job file is on this machine (None: the bridge could not see it)."""
        return self.paths.to_local(bridge_path.strip())

    # ------------------------------------------------------------------------------------------ vendor part

    @abstractmethod
    def fault_for_code(self, code: str) -> Fault:
        """The fault a vendor error code stands for."""

    @abstractmethod
    def bin_names(self) -> tuple[str, ...]:
        """Names of the input stackers/bins."""

    @abstractmethod
    def bins_for(self, media: str) -> tuple[str, ...]:
        """Input stackers/bins that hold ``media``."""

    @abstractmethod
    def ink_names(self) -> tuple[str, ...]:
        """Ink colours."""

    @abstractmethod
    def _resume(self) -> None:
        """Pick up jobs a previous run left in progress."""

    @abstractmethod
    def _tick(self, now: float) -> None:
        """One scan: new job files, cancels, progress."""

    @abstractmethod
    def _write_status(self) -> None:
        """Rewrite the status file(s) in place, as the bridge does."""
