"""Exception hierarchy of the appliance core.

Every error the core raises on purpose derives from :class:`ApplianceError`; each
family carries the CLI exit code it maps to, so ``appliance`` commands end with a
meaningful status (in the manner of python-escpos' ``resultcode``).
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base class of every error raised on purpose by the appliance."""

    exit_code = 1


class ConfigError(ApplianceError):
    """The configuration file or a setting in it is wrong."""

    exit_code = 2


class StoreError(ApplianceError):
    """An instance could not be stored."""

    exit_code = 3


class InvalidDataset(StoreError):
    """The received data set cannot be parsed or lacks a required UID."""


class OutOfResources(StoreError):
    """The disk holding the store is below the configured free-space limit."""


class IndexFailure(StoreError):
    """The SQLite index could not record an instance."""


class DatabaseError(ApplianceError):
    """The SQLite database cannot be opened or written (read-only file, folder or disk; locked; damaged)."""

    exit_code = 8


class CodecError(ApplianceError):
    """A stored instance cannot be read, decoded or encoded in the transfer syntax asked for."""


class ListenerError(ApplianceError):
    """A port cannot be opened (another program listens there, or the address is not this machine's)."""

    exit_code = 9

    @classmethod
    def port(cls, service: str, key: str, bind: str, port: int, exc: OSError) -> ListenerError:
        """The one line for a port that cannot be opened: the service, the port and the config key to change."""
        why = (
            "it is already in use (another program, or another appliance, listens there)"
            if exc.errno == 98
            else (exc.strerror or str(exc))
        )
        return cls(f"{service} port {port} on {bind} cannot be opened: {why}; change {key} or stop the other program")


class DataFolderInUse(ApplianceError):
    """Another ``appliance serve`` (or a command that must run alone) is using the data folder."""

    exit_code = 10


class NotFound(ApplianceError):
    """A study, series, instance or job asked for does not exist."""

    exit_code = 4


class NetworkError(ApplianceError):
    """A remote DICOM node could not be reached or refused us."""

    exit_code = 5


class WorklistError(ApplianceError):
    """A worklist order or item cannot be applied; nothing was changed.

    Parameters
    ----------
    message : str
        What is wrong, for the log and the sender.
    attribute : str
        DICOM keyword of the attribute at fault ('' when none applies); the HL7
        front end maps it back to the field it came from.
    """

    exit_code = 6

    def __init__(self, message: str, attribute: str = "") -> None:
        super().__init__(message)
        self.attribute = attribute


class IncompleteItem(WorklistError):
    """A worklist item would lack a value that worklist clients require (a type 1 return key)."""


class InvalidItem(WorklistError):
    """A value of a worklist item is malformed (a date that is no date, an over-long code)."""


class UnknownPatient(WorklistError):
    """The order names a patient ID that was merged into another one (ADT^A40)."""


class PatientMismatch(WorklistError):
    """The order's study already belongs to another patient."""


class StepCompleted(WorklistError):
    """A cancel or discontinue order names a step that is already COMPLETED (``[worklist] cancel_completed``)."""


class InvalidValue(ApplianceError):
    """A value typed by a person (web form, command line) cannot be used; the message says why and what fits."""


class PublishError(ApplianceError):
    """A disc job cannot be authored, submitted or changed; the job says why."""

    exit_code = 7


class InvalidTransition(PublishError):
    """A disc job cannot move from its current state to the one asked for (e.g. cancel a finished job)."""


class AuthoringError(PublishError):
    """The disc content cannot be built (an instance is missing or unreadable, a file-set is invalid)."""


class StagingSpaceError(AuthoringError):
    """The disk holding ``<data_dir>/discs`` has too little free space to stage a disc."""
