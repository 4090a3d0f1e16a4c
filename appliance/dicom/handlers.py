"""Thin pynetdicom event handlers: parse the event, call the core once, answer with a status.

Each handler's docstring lists every status it may return. Failures are logged
here, at the protocol boundary, with what the caller needs to know.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import Any, cast

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from appliance.core import Appliance
from appliance.dicom import status
from appliance.errors import IndexFailure, InvalidDataset, OutOfResources
from appliance.query import Answer, QueryError, find_rows
from appliance.store import Spool
from appliance.validate import check_file

LOGGER = logging.getLogger("appliance.dicom")


def _failure(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


def assoc_id(event: Event) -> str:
    """A stable identifier of the event's association."""
    return f"{event.assoc.name}-{id(event.assoc):x}"


def called_ae(event: Event) -> str:
    """The AE title the peer called (one of ours, burn suffixes included)."""
    return str(event.assoc.acceptor.ae_title).strip()


def calling_ae(event: Event) -> str:
    """The peer's AE title."""
    return str(event.assoc.requestor.ae_title).strip()


def handle_echo(event: Event) -> int:
    """C-ECHO: always 0x0000 Success."""
    return status.SUCCESS


class SpooledDataSet(io.BytesIO):
    """A C-STORE's data set that the fast path wrote to a :class:`~appliance.store.Spool` as it arrived.

    pynetdicom's ``C_STORE.DataSet`` must be a BytesIO; this one is empty and carries the spool.
    """

    def __init__(self, spool: Spool) -> None:
        super().__init__()
        self.spool = spool


def handle_store(event: Event, app: Appliance) -> int | Dataset:
    """C-STORE: store the instance durably, then answer.

    Returns
    -------
    int or Dataset
        0x0000 stored (or a duplicate ignored); 0x0124 calling AE may not store;
        0xA700 out of resources (free-space limit, disk full); 0xC000 data set cannot
        be parsed or lacks a UID; 0x0110 the index failed or the disk reported an error.
    """
    peer = calling_ae(event)
    if not app.may(peer, "store"):
        LOGGER.error("C-STORE from %s refused: node has no store right", peer)
        return _failure(status.NOT_AUTHORIZED, "calling AE has no store right")
    req = cast(C_STORE, event.request)
    try:
        data = req.DataSet
        app.store(
            # A BytesIO from pynetdicom; from the fast path, a large data set as the Spool it was written to.
            data.spool if isinstance(data, SpooledDataSet) else data.getvalue(),  # type: ignore[union-attr]
            str(event.context.transfer_syntax),
            str(req.AffectedSOPClassUID),
            str(req.AffectedSOPInstanceUID),
            peer,
            called_ae(event),
            assoc_id(event),
        )
    except InvalidDataset as exc:
        LOGGER.error("C-STORE %s from %s refused, nothing stored: %s", req.AffectedSOPInstanceUID, peer, exc)
        return _failure(status.CANNOT_UNDERSTAND, str(exc))
    except OutOfResources as exc:
        LOGGER.error("C-STORE %s from %s refused: %s", req.AffectedSOPInstanceUID, peer, exc)
        return _failure(status.OUT_OF_RESOURCES, str(exc))
    except IndexFailure as exc:
        LOGGER.error("C-STORE %s from %s failed: %s", req.AffectedSOPInstanceUID, peer, exc)
        return _failure(status.PROCESSING_FAILURE, "index failure")
    except OSError as exc:  # any other disk error (I/O error...): refuse, say why, keep serving
        LOGGER.error("C-STORE %s from %s failed, nothing stored: store disk error: %s", req.AffectedSOPInstanceUID,
                     peer, exc)
        return _failure(status.PROCESSING_FAILURE, "store disk error")
    return status.SUCCESS


def _level(identifier: Dataset) -> str:
    return str(identifier.get("QueryRetrieveLevel", "")).strip().upper()


def handle_find(event: Event, app: Appliance) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """C-FIND (Patient Root and Study Root): :func:`find_answers` with each answer as a data set.

    Yields
    ------
    (status, identifier)
        As :func:`find_answers`.
    """
    for result, answer in find_answers(app, calling_ae(event), lambda: event.identifier,
                                       lambda: event.is_cancelled):
        yield result, None if answer is None else answer.dataset()


def find_answers(app: Appliance, peer: str, identifier: Callable[[], Dataset],
                 cancelled: Callable[[], bool]) -> Iterator[tuple[int | Dataset, Answer | None]]:
    """C-FIND (Patient Root and Study Root) decisions, for pynetdicom's handler and the fast path alike.

    Parameters
    ----------
    app : Appliance
        The core that answers.
    peer : str
        The calling AE title (for the log).
    identifier : callable
        Returns the decoded request identifier; may raise when it cannot be decoded.
    cancelled : callable
        Whether the peer has cancelled the request (asked before each answer).

    Yields
    ------
    (status, answer)
        0xFF00 with each answer (plain values: the caller makes a data set or bytes of it);
        0xFE00 when the peer cancels; 0xA900 when the identifier has no valid QueryRetrieveLevel;
        0xC001 when it cannot be decoded. The final 0x0000 is the protocol layer's.
    """
    try:
        query = identifier()
        level = _level(query)
        matches = find_rows(app.db.conn, query, level, app.config.dicom.ae_title)
    except QueryError as exc:
        LOGGER.error("C-FIND from %s refused: %s", peer, exc)
        yield _failure(status.IDENTIFIER_MISMATCH, str(exc)), None
        return
    except Exception as exc:
        LOGGER.error("C-FIND from %s cannot be processed: %s", peer, exc)
        yield _failure(status.UNABLE_TO_PROCESS, "identifier cannot be decoded"), None
        return
    charset = charset_text(query.get("SpecificCharacterSet"))
    count = 0
    for values in matches:
        if cancelled():
            LOGGER.info("C-FIND from %s cancelled after %d answers", peer, count)
            yield status.CANCEL, None
            return
        count += 1
        yield status.PENDING, Answer(matches.fields, values, charset)
    LOGGER.info("C-FIND %s from %s: %d answer(s)", level, peer, count)


def charset_text(requested: Any) -> str:
    """A request's Specific Character Set value as backslash-separated text ('' when absent)."""
    return "" if not requested else requested if isinstance(requested, str) else "\\".join(requested)


def handle_move(event: Event, app: Appliance) -> Iterator[Any]:
    """C-MOVE: send the matching instances to a known node.

    Yields
    ------
    The destination ``(host, port, kwargs)`` or ``(None, None)`` (0xA801 unknown
    destination), the number of sub-operations, then ``(0xFF00, dataset)`` per
    instance; pynetdicom counts completed/failed sub-operations and answers 0x0000,
    0xB000 (some failed) or 0xA702 (all failed); 0xFE00 when cancelled.
    """
    destination = str(event.move_destination).strip()
    node = app.node(destination)
    peer = calling_ae(event)
    if node is None or not node.move:
        LOGGER.error("C-MOVE from %s to %r refused: destination is not a known node with the move right",
                     peer, destination)
        yield None, None
        return
    identifier = event.identifier
    try:
        instances = app.retrieve(identifier, _level(identifier))
    except Exception as exc:
        LOGGER.error("C-MOVE from %s cannot be processed: %s", peer, exc)
        instances = []
    contexts = _store_contexts(instances)
    kwargs: dict[str, Any] = {"contexts": contexts}
    if node.tls:
        kwargs["tls_args"] = app_tls_args(app, node.host)
    yield node.host, node.port, kwargs
    yield len(instances)
    LOGGER.info("C-MOVE from %s: %d instance(s) to %s (%s:%d)", peer, len(instances), destination, node.host,
                node.port)
    for inst in instances:
        if event.is_cancelled:
            yield status.CANCEL, None
            return
        ds = _read_stored(app, inst)
        # Not a Dataset: pynetdicom counts the sub-operation as failed and goes on with the next one.
        yield status.PENDING, ds if ds is not None else "unreadable"


def _read_stored(app: Appliance, inst: Any) -> Dataset | None:
    """A stored instance read whole for sending, or None (logged) when its structure is refused."""
    path = app.file_path(inst)
    try:
        check_file(path)  # before pydicom's recursive reader: see appliance.validate.check_file
    except InvalidDataset as exc:
        LOGGER.error("instance %s cannot be sent: %s", inst.sop_uid, exc)
        return None
    return dcmread(path)


def app_tls_args(app: Appliance, hostname: str) -> tuple[Any, str]:
    """``(ssl_context, server_hostname)`` for an outgoing TLS association."""
    if app.client_tls is None:
        raise RuntimeError("TLS destinations need the [tls] settings")
    return app.client_tls(), hostname


def _store_contexts(instances: list[Any]) -> list[Any]:
    from pynetdicom.presentation import build_context

    pairs: dict[str, set[str]] = {}
    for inst in instances:
        pairs.setdefault(inst.sop_class_uid, set()).add(inst.transfer_syntax)
    contexts = []
    for sop_class, syntaxes in list(pairs.items())[:120]:  # 128 contexts at most per association
        tss = sorted(syntaxes | {ExplicitVRLittleEndian, ImplicitVRLittleEndian})
        contexts.append(build_context(sop_class, tss))
    return contexts


def handle_get(event: Event, app: Appliance) -> Iterator[Any]:
    """C-GET: send the matching instances back over the same association.

    An instance whose transfer syntax the peer did not accept is decompressed to
    Explicit VR Little Endian when it can be; otherwise its sub-operation fails.

    Yields
    ------
    The number of sub-operations, then ``(0xFF00, dataset)`` per instance;
    pynetdicom answers 0x0000, 0xB000 or 0xA702 from the sub-operation results;
    0xFE00 when cancelled.
    """
    identifier = event.identifier
    try:
        instances = app.retrieve(identifier, _level(identifier))
    except Exception as exc:
        LOGGER.error("C-GET from %s cannot be processed: %s", calling_ae(event), exc)
        instances = []
    yield len(instances)
    LOGGER.info("C-GET from %s: %d instance(s)", calling_ae(event), len(instances))
    accepted: dict[str, set[str]] = {}
    for cx in event.assoc.accepted_contexts:
        accepted.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
    for inst in instances:
        if event.is_cancelled:
            yield status.CANCEL, None
            return
        ds = _read_stored(app, inst)
        if ds is None:
            yield status.PENDING, "unreadable"  # a failed sub-operation, as above
            continue
        syntaxes = accepted.get(inst.sop_class_uid, set())
        if inst.transfer_syntax not in syntaxes and ds.file_meta.TransferSyntaxUID.is_compressed and (
                ExplicitVRLittleEndian in syntaxes or ImplicitVRLittleEndian in syntaxes):
            try:
                ds.decompress()
            except Exception as exc:
                LOGGER.warning("C-GET: %s cannot be decompressed for the peer: %s", inst.sop_uid, exc)
        yield status.PENDING, ds
