"""The one DICOM failure guard: the core's errors -> a DIMSE status, an error comment and one log line.

Every service, on pynetdicom's path and on the fast path, answers a failure through
:func:`failure`, so the same error gets the same status wherever it happens, and no handler turns
an exception into Success. The table follows PS3.4 (C.4.1-C.4.3 Q/R, B.2.3 storage, F.7-F.8 MPPS,
J.3 storage commitment) and PS3.7 C.
"""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset

from appliance.dicom import status
from appliance.errors import (
    CodecError,
    DatabaseError,
    IndexFailure,
    InvalidDataset,
    NotFound,
    OutOfResources,
)
from appliance.query import QueryError
from appliance.worklist.mpps import MppsDuplicate, MppsError, MppsFinal, MppsInvalidValue, MppsMissing, MppsUnknown

LOGGER = logging.getLogger("appliance.dicom")

#: Per service, the first matching error type gives the status; ``Exception`` is the last resort.
TABLE: dict[str, list[tuple[type[BaseException], int]]] = {
    "C-STORE": [
        (InvalidDataset, status.CANNOT_UNDERSTAND),  # 0xC000
        (OutOfResources, status.OUT_OF_RESOURCES),  # 0xA700
        (IndexFailure, status.PROCESSING_FAILURE),
        (DatabaseError, status.PROCESSING_FAILURE),
        (OSError, status.PROCESSING_FAILURE),
        (Exception, status.PROCESSING_FAILURE),
    ],
    "C-FIND": [
        (QueryError, status.IDENTIFIER_MISMATCH),  # 0xA900
        (DatabaseError, 0xA700),  # Refused: out of resources
        (Exception, status.UNABLE_TO_PROCESS),  # 0xC001
    ],
    "MWL": [
        (QueryError, status.IDENTIFIER_MISMATCH),
        (DatabaseError, 0xA700),
        (Exception, status.UNABLE_TO_PROCESS),
    ],
    "C-MOVE": [
        (QueryError, status.IDENTIFIER_MISMATCH),
        (NotFound, status.MOVE_DESTINATION_UNKNOWN),  # 0xA801
        (DatabaseError, 0xA701),  # Refused: out of resources, unable to calculate number of matches
        (Exception, 0xC000),  # Failed: unable to process
    ],
    "C-GET": [
        (QueryError, status.IDENTIFIER_MISMATCH),
        (DatabaseError, 0xA701),
        (Exception, 0xC000),
    ],
    "MPPS": [
        (MppsDuplicate, 0x0111),  # Duplicate SOP Instance
        (MppsUnknown, 0x0112),  # No such SOP Instance
        (MppsMissing, 0x0120),  # Missing attribute
        (MppsInvalidValue, 0x0106),  # Invalid attribute value
        (MppsFinal, status.PROCESSING_FAILURE),  # error ID A710: may no longer be updated
        (Exception, status.PROCESSING_FAILURE),
    ],
    "N-ACTION": [
        (Exception, status.PROCESSING_FAILURE),
    ],
    "sub-operation": [
        (CodecError, status.PROCESSING_FAILURE),
        (OSError, status.PROCESSING_FAILURE),
        (Exception, status.PROCESSING_FAILURE),
    ],
}

#: Errors the core raises on purpose: logged as one line; anything else is a bug, logged with its traceback.
_EXPECTED = (
    InvalidDataset,
    OutOfResources,
    IndexFailure,
    DatabaseError,
    OSError,
    QueryError,
    NotFound,
    MppsError,
    CodecError,
)


def status_of(service: str, exc: BaseException) -> int:
    """The DIMSE status ``service`` answers ``exc`` with."""
    for kind, code in TABLE[service]:
        if isinstance(exc, kind):
            return code
    return status.PROCESSING_FAILURE


def failure(service: str, exc: BaseException, peer: str, what: str = "") -> Dataset:
    """Answer a failure: the status data set (Status, Error Comment) and one log line.

    Parameters
    ----------
    service : str
        A key of :data:`TABLE` ("C-STORE", "C-FIND", "MWL", "C-MOVE", "C-GET", "MPPS", "N-ACTION").
    exc : BaseException
        What went wrong.
    peer : str
        The calling AE title (for the log).
    what : str
        The object concerned (a SOP Instance UID, "N-SET"...), for the log.
    """
    code = status_of(service, exc)
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, OSError):  # the disk's own error (the core's errors are no OSErrors): say where
        reason = f"{'store disk' if service == 'C-STORE' else 'disk'} error: {exc.strerror or exc}"
    subject = f"{service} {what}".strip()
    # The store is atomic: a refused C-STORE left nothing behind, and the administrator reading the log needs that.
    outcome = "failed, nothing stored" if service == "C-STORE" else "failed"
    if isinstance(exc, _EXPECTED):
        LOGGER.error("%s from %s %s (0x%04X): %s", subject, peer, outcome, code, reason)
    else:
        LOGGER.error(
            "%s from %s %s (0x%04X): unexpected %s: %s",
            subject,
            peer,
            outcome,
            code,
            type(exc).__name__,
            reason,
            exc_info=exc,
        )
        reason = "internal error (see the appliance log)"
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = error_comment(reason)
    if isinstance(exc, MppsFinal):
        ds.ErrorID = 0xA710
    return ds


def refusal(code: int, comment: str) -> Dataset:
    """A status data set for a refusal decided by a handler (no exception), e.g. a missing right."""
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = error_comment(comment)
    return ds


def error_comment(text: str) -> str:
    """``text`` as an Error Comment (LO: at most 64 characters, no backslash or control characters)."""
    clean = "".join(c if c.isprintable() and c != "\\" else " " for c in text)
    return clean.encode("ascii", "replace").decode("ascii")[:64]
