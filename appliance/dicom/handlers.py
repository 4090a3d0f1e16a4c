"""Thin pynetdicom event handlers: parse the event, call the core once, answer with a status.

Each handler's docstring lists every status it may return. Failures are logged
here, at the protocol boundary, with what the caller needs to know.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import Any, cast

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.presentation import build_context

from appliance import codecs
from appliance.core import Appliance
from appliance.dicom import compat, guard, retrieve, status
from appliance.errors import CodecError, NotFound
from appliance.forwarding.search import UID_TAGS
from appliance.query import Answer, find_rows
from appliance.store import Spool

LOGGER = logging.getLogger("appliance.dicom")


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
        return guard.refusal(status.NOT_AUTHORIZED, "calling AE has no store right")
    req = cast(C_STORE, event.request)
    received: Spool | None = None
    try:
        data = req.DataSet
        if isinstance(data, SpooledDataSet):  # the fast path spooled a large data set as it arrived
            dataset: bytes | Spool = data.spool
        elif (path := compat.received_dataset(event)) is not None:
            # pynetdicom wrote the data set to the store's tmp/ as it arrived: stored from there by the kernel.
            received = dataset = Spool.received(path)
        else:
            dataset = data.getvalue()  # type: ignore[union-attr]
        app.store(
            dataset,
            str(event.context.transfer_syntax),
            str(req.AffectedSOPClassUID),
            str(req.AffectedSOPInstanceUID),
            peer,
            called_ae(event),
            assoc_id(event),
        )
    except Exception as exc:
        return guard.failure("C-STORE", exc, peer, str(req.AffectedSOPInstanceUID))
    finally:
        if received is not None:
            received.discard()  # removes pynetdicom's file now, whatever the outcome
    return status.SUCCESS


def handle_find(event: Event, app: Appliance) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """C-FIND (Patient Root and Study Root): :func:`find_answers` with each answer as a data set.

    Yields
    ------
    (status, identifier)
        As :func:`find_answers`.
    """
    for result, answer in find_answers(app, calling_ae(event), lambda: event.identifier, lambda: event.is_cancelled):
        yield result, answer.dataset() if isinstance(answer, Answer) else answer


def find_answers(
    app: Appliance, peer: str, identifier: Callable[[], Dataset], cancelled: Callable[[], bool]
) -> Iterator[tuple[int | Dataset, Answer | Dataset | None]]:
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
        0xFF00 with each answer (plain values: the caller makes a data set or bytes of it; with the
        extended search, the regional server's answers for what is not held here follow as data sets);
        0xFE00 when the peer cancels; 0xA900 when the identifier has no valid QueryRetrieveLevel;
        0xC001 when it cannot be decoded. The final 0x0000 is the protocol layer's.
    """
    try:
        query = identifier()
        level = retrieve.level(query)
        matches = find_rows(app.db.conn, query, level, app.config.dicom.ae_title)
    except Exception as exc:
        yield guard.failure("C-FIND", exc, peer), None
        return
    # [forwarding] extended_search: the regional server is asked now, its answers follow the local ones.
    search = app.extended_search
    regional = search.start(query, level) if search is not None and search.applies(peer) else None
    held: set[str] = set()
    key = next((i for i, f in enumerate(matches.fields) if f.tag == UID_TAGS.get(level)), None)
    charset = charset_text(query.get("SpecificCharacterSet"))
    count = 0
    for values in matches:
        if cancelled():
            LOGGER.info("C-FIND from %s cancelled after %d answers", peer, count)
            yield status.CANCEL, None
            return
        count += 1
        if key is not None:
            held.add(str(values[key] or ""))
        yield status.PENDING, Answer(matches.fields, values, charset)
    # Without the entity's UID among the requested keys, the index says what is held here.
    holds = None if key is not None else lambda uid: app.index.holds(level, uid)
    for extra in regional.extra(held, holds) if regional is not None else ():
        if cancelled():
            yield status.CANCEL, None
            return
        count += 1
        yield status.PENDING, extra
    LOGGER.info("C-FIND %s from %s: %d answer(s)", level, peer, count)


def charset_text(requested: Any) -> str:
    """A request's Specific Character Set value as backslash-separated text ('' when absent)."""
    return "" if not requested else requested if isinstance(requested, str) else "\\".join(requested)


def handle_move(event: Event, app: Appliance) -> Iterator[Any]:
    """C-MOVE through pynetdicom (``[dicom] fast_path = false``; the fast path serves it otherwise).

    The decisions are :mod:`appliance.dicom.retrieve`'s: the contexts proposed to the destination
    (each stored syntax, and Explicit + Implicit VR Little Endian, per SOP class), the syntax each
    instance goes in among those the destination accepted, every UID kept.

    Yields
    ------
    The destination ``(host, port, kwargs)``, or ``(None, None)`` for 0xA801 (not a known node with
    the move right); the number of sub-operations; then ``(0xFF00, dataset)`` per instance, or a
    failure status data set (:mod:`appliance.dicom.guard`) when the request cannot be processed.
    pynetdicom counts the sub-operations and answers 0x0000, 0xB000 (some failed), 0xA702 (all
    failed) or 0xFE00 (cancelled).
    """
    peer = calling_ae(event)
    try:
        node = retrieve.destination(app, str(event.move_destination))
    except NotFound as exc:
        guard.failure("C-MOVE", exc, peer)
        yield None, None
        return
    try:
        identifier = event.identifier
        instances = app.retrieve(identifier, retrieve.level(identifier))
    except Exception as exc:
        yield node.host, node.port, {}
        yield guard.failure("C-MOVE", exc, peer), None
        return
    prefer = retrieve.preferred(node)
    destination: list[Any] = []  # the sub-association, once pynetdicom has made it
    kwargs: dict[str, Any] = {
        "contexts": [build_context(uid, syntaxes) for uid, syntaxes in retrieve.store_contexts(instances, prefer)],
        "evt_handlers": [(evt.EVT_ESTABLISHED, lambda ev: destination.append(ev.assoc))],
    }
    if node.tls:
        kwargs["tls_args"] = app_tls_args(app, node.host)
    yield node.host, node.port, kwargs
    yield len(instances)
    LOGGER.info(
        "C-MOVE from %s: %d instance(s) to %s (%s:%d)", peer, len(instances), node.ae_title, node.host, node.port
    )
    accepted = _accepted(destination[0].accepted_contexts if destination else [], as_scu=None)
    yield from _sub_operations(event, app, instances, accepted, prefer, "C-MOVE")


def app_tls_args(app: Appliance, hostname: str) -> tuple[Any, str]:
    """``(ssl_context, server_hostname)`` for an outgoing TLS association."""
    if app.client_tls is None:
        raise RuntimeError("TLS destinations need the [tls] settings")
    return app.client_tls(), hostname


def _accepted(contexts: list[Any], as_scu: bool | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for cx in contexts:
        if as_scu is None or cx.as_scu:
            out.setdefault(str(cx.abstract_syntax), []).append(str(cx.transfer_syntax[0]))
    return out


def _sub_operations(
    event: Event, app: Appliance, instances: list[Any], accepted: dict[str, list[str]], prefer: str | None, service: str
) -> Iterator[Any]:
    # Conversions run in the budgeted workers, the next ones while this one is sent (appliance.conversion).
    payloads = retrieve.Payloads(app, instances, accepted, prefer)
    try:
        for index, inst in enumerate(instances):
            if event.is_cancelled:
                yield status.CANCEL, None
                return
            try:
                syntax, data = payloads.get(index)
            except CodecError as exc:
                guard.failure("sub-operation", exc, calling_ae(event), f"{service} {inst.sop_uid}")
                yield status.PENDING, _unsendable(inst)
                continue
            yield status.PENDING, codecs.as_dataset(data, syntax)
    finally:
        payloads.close()


#: A transfer syntax no context has: pynetdicom's send_c_store() refuses the data set, and counts the
#: sub-operation as failed with its SOP Instance UID in the Failed SOP Instance UID List.
_NO_SYNTAX = "1.2.826.0.1.3680043.9.7433.0.0"


def _unsendable(inst: Any) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = inst.sop_class_uid
    ds.SOPInstanceUID = inst.sop_uid
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(_NO_SYNTAX)
    return ds


def handle_get(event: Event, app: Appliance) -> Iterator[Any]:
    """C-GET through pynetdicom (``[dicom] fast_path = false``; the fast path serves it otherwise).

    Each instance goes on a storage context the peer accepted with the SCP role, in its stored
    syntax when accepted, else converted (:mod:`appliance.dicom.retrieve`), every UID kept; an
    instance no accepted context can carry is a failed sub-operation.

    Yields
    ------
    The number of sub-operations, then ``(0xFF00, dataset)`` per instance, or a failure status data
    set (:mod:`appliance.dicom.guard`); pynetdicom answers 0x0000, 0xB000, 0xA702 or 0xFE00.
    """
    peer = calling_ae(event)
    try:
        identifier = event.identifier
        instances = app.retrieve(identifier, retrieve.level(identifier))
    except Exception as exc:
        yield 1
        yield guard.failure("C-GET", exc, peer), None
        return
    yield len(instances)
    LOGGER.info("C-GET from %s: %d instance(s)", peer, len(instances))
    accepted = _accepted(event.assoc.accepted_contexts, as_scu=True)
    # A known node's preferred syntax applies to C-GET too, when it proposed (and so accepted) that syntax.
    yield from _sub_operations(event, app, instances, accepted, retrieve.preferred(app.node(peer)), "C-GET")
