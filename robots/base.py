"""The one interface the disc-publishing core uses, with nothing vendor-specific in it.

The core builds a :class:`BurnRequest`, hands it to a :class:`DiscRobot` and keeps the returned ticket (a
plain string it can persist).  It then calls :meth:`DiscRobot.poll` until the :class:`JobProgress` is final.
Every driver keeps its state on the bridge's side (job files and status files), so a ticket stays valid across
a restart of our process.
"""

from __future__ import annotations

import enum
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Media the core may ask for.
MEDIA: tuple[str, ...] = ("CD", "DVD", "DVD-DL", "BD")

#: Job ids must fit both bridges: Epson allows 40 characters of ``[A-Za-z0-9_-]``, Primera 32 ASCII
#: characters, and both use the id as a file name on Windows.
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")


class RobotError(Exception):
    """Base class of every error raised by :mod:`robots`."""


class RobotConfigError(RobotError):
    """The robot's options (the ``[robots.<name>]`` table) are invalid."""


class RequestError(RobotError):
    """A :class:`BurnRequest` cannot be turned into a job for this robot (nothing was written)."""


class HotFolderError(RobotError):
    """The hot folder cannot be read or written (missing share, permissions, disk full)."""


class UnknownTicketError(RobotError):
    """The bridge knows nothing (any more) about this ticket."""


class CancelError(RobotError):
    """The bridge refused to cancel the job, typically because it has already finished."""


@dataclass(frozen=True)
class LabelFiles:
    """What may be printed on the disc.

    Attributes
    ----------
    pdf, jpg, bmp : Path or None
        A finished label rendered by us (the PDF is for preview; robots print JPG or BMP).
    tdd : Path or None
        An EPSON Total Disc Maker template; its merge fields are filled from :attr:`fields`.
    std : Path or None
        A Primera SureThing template; :attr:`fields` become ``MergeField`` lines, in order.
    fields : dict of str to str
        Merge data (field name -> text), in the order the template expects.
    """

    pdf: Path | None = None
    jpg: Path | None = None
    bmp: Path | None = None
    tdd: Path | None = None
    std: Path | None = None
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BurnRequest:
    """One disc job as the core asks for it.

    Attributes
    ----------
    job_id : str
        1-32 characters from ``A-Z a-z 0-9 _ -``; becomes the job file name and the bridge's job id.
    copies : int
        Number of identical discs, at least 1.
    media : str
        One of :data:`MEDIA`.
    volume_label : str
        Volume name for data jobs (an ISO image carries its own).
    image_path : Path or None
        A ready-made ISO image.  Exactly one of ``image_path`` and ``data_paths`` is given.
    data_paths : tuple of Path
        Folders (their contents) and files, all burned to the disc root.
    label : LabelFiles
        What to print on the disc; empty means no printing.
    verify : bool
        Compare the disc with the source after writing.
    priority : bool
        Run before routine jobs that have not started yet.
    """

    job_id: str
    copies: int
    media: str
    volume_label: str
    image_path: Path | None = None
    data_paths: tuple[Path, ...] = ()
    label: LabelFiles = field(default_factory=LabelFiles)
    verify: bool = True
    priority: bool = False

    def __post_init__(self) -> None:
        if not JOB_ID_PATTERN.fullmatch(self.job_id):
            raise RequestError(f"job id {self.job_id!r}: use 1-32 characters from A-Z a-z 0-9 _ -")
        if isinstance(self.copies, bool) or not isinstance(self.copies, int) or self.copies < 1:
            raise RequestError(f"copies must be a whole number of at least 1, not {self.copies!r}")
        if self.media not in MEDIA:
            raise RequestError(f"media {self.media!r}: use one of {', '.join(MEDIA)}")
        if (self.image_path is None) == (not self.data_paths):
            raise RequestError("give either image_path (an ISO file) or data_paths, not both and not neither")
        # Accept lists from callers, but store a tuple so the request stays immutable.
        object.__setattr__(self, "data_paths", tuple(Path(p) for p in self.data_paths))


class JobState(enum.StrEnum):
    """Normalised job state, the same for every vendor."""

    PENDING = "pending"
    """Written to the hot folder; the bridge has not picked it up yet."""
    ACCEPTED = "accepted"
    """The bridge has read the job and queued it."""
    BURNING = "burning"
    """Discs are being written or printed."""
    PAUSED = "paused"
    """The bridge paused the job (cover open, bad media); it resumes when the cause is removed."""
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BRIDGE_OFFLINE = "bridge_offline"
    """The bridge software does not answer; the job file stays and the job goes on when it is back."""

    @property
    def final(self) -> bool:
        """True for states that never change again."""
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobProgress:
    """What :meth:`DiscRobot.poll` reports about one job.

    Attributes
    ----------
    state : JobState
    reason : str
        One readable English sentence for staff ("publishing copy 2 of 3", "input stacker empty: ...").
    error_code : str or None
        The vendor's code (``"RTN000"``, ``"job-18"``) when there is one.
    retry_possible : bool
        Submitting the same request again can succeed (possibly after staff fixed the cause).
    needs_staff : bool
        Someone has to act at the robot or the bridge PC (load discs, change ink, close a cover, setup).
    copies_done, copies_failed : int
        Discs finished well / rejected so far, when the bridge reports them.
    raw : dict
        The vendor's status fields for this job, for logs and support.
    notes : tuple of str
        Facts staff should know even when the job goes well ("no label printed (no template configured)").
    """

    state: JobState
    reason: str = ""
    error_code: str | None = None
    retry_possible: bool = False
    needs_staff: bool = False
    copies_done: int = 0
    copies_failed: int = 0
    raw: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


class RobotState(enum.StrEnum):
    """Normalised state of a robot."""

    IDLE = "idle"
    BUSY = "busy"
    ERROR = "error"
    OFFLINE = "offline"


@dataclass(frozen=True)
class DriveStatus:
    """One recorder in the robot."""

    name: str
    state: str
    percent: int | None = None


@dataclass(frozen=True)
class RobotStatus:
    """What :meth:`DiscRobot.status` reports about the robot and its bridge.

    Attributes
    ----------
    online : bool
        The bridge answers (its status file is fresh).
    state : RobotState
    reason : str
        Readable summary of the state ("2 jobs active", "bridge offline: ...").
    ink : dict of str to int
        Colour -> percent remaining.
    media : dict of str to int
        Input stacker or bin -> level; see :attr:`media_unit`.
    media_unit : str
        ``"%"`` (Epson reports stacker fill in percent) or ``"discs"`` (Primera counts discs).
    drives : tuple of DriveStatus
    errors : tuple of str
        Readable current and recent errors, newest first.
    bridge : str
        The bridge software and version, when known.
    raw : dict
        The status file's sections (section -> key -> value).
    """

    online: bool
    state: RobotState
    reason: str = ""
    ink: Mapping[str, int] = field(default_factory=dict)
    media: Mapping[str, int] = field(default_factory=dict)
    media_unit: str = "%"
    drives: tuple[DriveStatus, ...] = ()
    errors: tuple[str, ...] = ()
    bridge: str = ""
    raw: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


class DiscRobot(ABC):
    """A disc publisher as the core sees it.

    Implementations must be safe to call from several threads and must not keep job state that a restart of
    our process would lose: a ticket returned by :meth:`submit` can be polled by a new instance.
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """The configured name (the ``[robots.<name>]`` table)."""

    @property
    @abstractmethod
    def vendor(self) -> str:
        """Readable vendor and bridge, e.g. ``"Epson (TD Bridge)"``."""

    @property
    def location(self) -> str:
        """Where the robot is reached (hot folder path); for reports only."""
        return ""

    def setup_warnings(self) -> tuple[str, ...]:
        """Configuration problems that do not stop the robot but change what it produces.

        Shown at start, by ``appliance robots`` and on the staff robots page (e.g. an Epson robot without a label
        template burns its discs unprinted).
        """
        return ()

    @abstractmethod
    def render(self, req: BurnRequest, ticket: str | None = None) -> dict[str, bytes]:
        """Return the files :meth:`submit` would write, as file name -> exact bytes.

        Parameters
        ----------
        req : BurnRequest
        ticket : str, optional
            The job file's base name; defaults to ``req.job_id``.

        Raises
        ------
        RequestError
            The request cannot be expressed for this robot.
        """

    @abstractmethod
    def submit(self, req: BurnRequest) -> str:
        """Hand a job to the robot and return its ticket.

        Returns at once: a bridge that is not running only means the job waits (see
        :attr:`JobState.BRIDGE_OFFLINE`).

        Raises
        ------
        RequestError
            Nothing was written because the request does not fit this robot.
        HotFolderError
            The hot folder cannot be written.
        """

    @abstractmethod
    def poll(self, ticket: str) -> JobProgress:
        """Report the job's current progress.

        Raises
        ------
        UnknownTicketError
            Neither a job file nor a status entry exists for the ticket.
        """

    @abstractmethod
    def cancel(self, ticket: str) -> None:
        """Ask the bridge to cancel the job; a job not yet picked up is withdrawn at once.

        Raises
        ------
        CancelError
            The bridge refused (the job has finished or is past the point of no return).
        UnknownTicketError
            Nothing is known about the ticket.
        """

    @abstractmethod
    def status(self) -> RobotStatus:
        """Report the robot's and the bridge's state; never raises for an offline bridge."""
