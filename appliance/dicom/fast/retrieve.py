"""C-MOVE and C-GET on the fast path: sub-operations sent on the raw socket.

Why: through pynetdicom a C-MOVE sub-operation cost ~26 ms (Nagle on its requestor socket, DUL and
DIMSE threads polling their queues) and a C-GET one ~7 ms, 6-18x slower than Orthanc on the same
study. Here a C-MOVE's sub-association is a :class:`~appliance.dicom.fast.scu.StoreSCU`, a C-GET's
C-STORE-RQs go out on the association itself, stored bytes are sent as they are when the receiver
accepted the stored syntax, and the decisions are :mod:`appliance.dicom.retrieve`'s (also used by
the pynetdicom handlers).

Kept as pynetdicom's ``QueryRetrieveServiceClass`` does it: one pending response per sub-operation
with the counts, a final response with the counts (and the Failed SOP Instance UID List when some
failed), a C-CANCEL-RQ seen between sub-operations answered with 0xFE00, the C-STORE-RQs of a C-MOVE
carrying the Move Originator AE Title and Message ID.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from io import BytesIO
from typing import TYPE_CHECKING, Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.dsutils import decode, encode

from appliance.dicom import guard, handlers, retrieve, status
from appliance.dicom.fast.dimse import C_GET_RSP, C_MOVE_RQ, C_MOVE_RSP, encode_retrieve_response, pdata_pdus
from appliance.dicom.fast.scu import AssociationFailed, AssociationLost, Identity, StoreSCU, Timeouts
from appliance.errors import CodecError

if TYPE_CHECKING:
    from pynetdicom.presentation import PresentationContext

    from appliance.core import Appliance
    from appliance.dicom.fast.association import FastAssociation
    from appliance.dicom.server import ApplianceServer

LOGGER = logging.getLogger("appliance.dicom")

#: Patient Root and Study Root MOVE and GET.
MOVE_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.2.2"})
GET_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.2.1.3", "1.2.840.10008.5.1.4.1.2.2.3"})
RETRIEVE_CLASSES = MOVE_CLASSES | GET_CLASSES


def handlers_are_ours(server: ApplianceServer) -> bool:
    """Whether the listener's C-MOVE and C-GET handlers are the appliance's own (else pynetdicom serves them)."""
    move = server.get_handlers(evt.EVT_C_MOVE)
    get = server.get_handlers(evt.EVT_C_GET)
    return bool(move) and move[0] is handlers.handle_move and bool(get) and get[0] is handlers.handle_get


class _Responder:
    """Writes the C-MOVE-RSP / C-GET-RSP messages of one request."""

    def __init__(
        self, assoc: FastAssociation, field: int, message_id: int, sop_class: str, context_id: int, syntax: UID
    ) -> None:
        self.assoc = assoc
        self.field = C_MOVE_RSP if field == C_MOVE_RQ else C_GET_RSP
        self.message_id = message_id
        self.sop_class = sop_class
        self.context_id = context_id
        self.syntax = syntax

    def send(
        self,
        code: int,
        counts: tuple[int | None, int, int, int],
        comment: str | None = None,
        identifier: Dataset | None = None,
        before: bytes = b"",
    ) -> bool:
        """Send one response (after the PDUs ``before``, in the same system call); False when the association
        has ended."""
        return self.assoc.send_or_end(before + self.encode(code, counts, comment, identifier))

    def encode(
        self,
        code: int,
        counts: tuple[int | None, int, int, int],
        comment: str | None = None,
        identifier: Dataset | None = None,
    ) -> bytes:
        """The P-DATA-TF PDU(s) of one response."""
        data = None
        if identifier is not None:
            data = encode(identifier, self.syntax.is_implicit_VR, self.syntax.is_little_endian, self.syntax.is_deflated)
        command = encode_retrieve_response(
            self.field, self.message_id, self.sop_class, code, counts, comment, data_set=data is not None
        )
        out = pdata_pdus(command, self.context_id, self.assoc.requestor.maximum_length)
        if data is not None:
            out += pdata_pdus(data, self.context_id, self.assoc.requestor.maximum_length, data_set=True)
        return out


def serve_retrieve(
    assoc: FastAssociation, command: dict[int, Any], data: bytes | None, context: PresentationContext
) -> bool:
    """Answer one C-MOVE-RQ or C-GET-RQ: its sub-operations, pending responses and final response.

    Returns
    -------
    bool
        False when the association has ended meanwhile.
    """
    field = cast(int, command.get(0x0100))
    message_id, sop_class = command.get(0x0110), command.get(0x0002)
    service = "C-MOVE" if field == C_MOVE_RQ else "C-GET"
    classes = MOVE_CLASSES if field == C_MOVE_RQ else GET_CLASSES
    if (
        message_id is None
        or sop_class is None
        or 0x0700 not in command
        or (field == C_MOVE_RQ and 0x0600 not in command)
    ):
        LOGGER.warning("Received unexpected %s service message", service)  # pynetdicom ignores it too
        return True
    if sop_class not in classes or str(context.abstract_syntax) != sop_class:
        LOGGER.error(
            "fast path: association from %s aborted: %s for %s on a %s context",
            assoc.requestor.ae_title,
            service,
            sop_class,
            context.abstract_syntax,
        )
        assoc.abort()
        return False
    syntax = cast(UID, context.transfer_syntax[0])
    out = _Responder(assoc, field, message_id, sop_class, cast(int, context.context_id), syntax)
    app: Appliance = assoc.server.app
    peer = assoc.requestor.ae_title
    try:
        if not data:
            raise ValueError("the request has no identifier")
        identifier = decode(BytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
        node = retrieve.destination(app, str(command[0x0600])) if field == C_MOVE_RQ else None
        instances = app.retrieve(identifier, retrieve.level(identifier))
    except Exception as exc:
        failed = guard.failure(service, exc, peer)
        return out.send(int(failed.Status), (None, 0, 0, 0), str(failed.ErrorComment))
    ops = retrieve.SubOperations(len(instances))
    started = time.monotonic()
    if not instances:
        LOGGER.info("%s from %s: nothing matches", service, peer)
        return out.send(status.SUCCESS, (None, 0, 0, 0))
    if node is not None:
        return _move(assoc, out, app, node, instances, ops, started)
    return _get(assoc, out, app, instances, ops, started)


def _move(
    assoc: FastAssociation,
    out: _Responder,
    app: Appliance,
    node: Any,
    instances: list[Any],
    ops: retrieve.SubOperations,
    started: float,
) -> bool:
    peer = assoc.requestor.ae_title
    prefer = retrieve.preferred(node)
    cfg = app.config.dicom
    sender = StoreSCU(
        node.host,
        node.port,
        node.ae_title,
        Identity(
            cfg.ae_title,
            assoc.server.ae.implementation_class_uid,
            assoc.server.ae.implementation_version_name or "",
            cfg.max_pdu,
        ),
        retrieve.store_contexts(instances, prefer),
        Timeouts(connect=min(cfg.acse_timeout, 30.0), acse=cfg.acse_timeout, dimse=cfg.dimse_timeout),
        app.client_tls() if node.tls and app.client_tls is not None else None,
    )
    try:
        sender.open()
    except AssociationFailed as exc:
        LOGGER.error(
            "C-MOVE from %s to %s failed, %d sub-operation(s) not done: %s", peer, node.ae_title, len(instances), exc
        )
        ops.fail_rest(inst.sop_uid for inst in instances)
        return out.send(
            ops.final_status(),
            (None, ops.completed, ops.failed, ops.warning),
            guard.error_comment(str(exc)),
            ops.failed_list(),
        )
    LOGGER.info(
        "C-MOVE from %s: %d instance(s) to %s (%s:%d)", peer, len(instances), node.ae_title, node.host, node.port
    )
    accepted = sender.accepted
    originator = (peer, out.message_id)

    def send(inst: Any, context_id: int, data: bytes | memoryview, msg_id: int, pending: bytes) -> bool | None:
        try:
            sender.send(msg_id, inst.sop_class_uid, inst.sop_uid, context_id, data, originator)
        except AssociationLost as exc:
            LOGGER.error("C-MOVE from %s to %s: %s", peer, node.ae_title, exc)
            return None if not pending or assoc.send_or_end(pending) else False
        # The pending response goes to the requestor while the receiver takes the instance.
        return not pending or assoc.send_or_end(pending)

    def result(msg_id: int) -> tuple[int | None, str, bool]:
        try:
            code, comment = sender.response(msg_id)
        except AssociationLost as exc:
            LOGGER.error("C-MOVE from %s to %s: %s", peer, node.ae_title, exc)
            return None, str(exc), False
        return code, comment, False  # a C-CANCEL-RQ is looked for before the next sub-operation

    try:
        return _run(assoc, out, app, instances, ops, accepted, prefer, _Link(send, result), "C-MOVE", started)
    finally:
        sender.release()


def _get(
    assoc: FastAssociation,
    out: _Responder,
    app: Appliance,
    instances: list[Any],
    ops: retrieve.SubOperations,
    started: float,
) -> bool:
    accepted = assoc.storage_contexts()
    LOGGER.info("C-GET from %s: %d instance(s)", assoc.requestor.ae_title, len(instances))

    def send(inst: Any, context_id: int, data: bytes | memoryview, msg_id: int, pending: bytes) -> bool | None:
        # The pending response of the sub-operation before goes in the same system call as this C-STORE-RQ.
        return assoc.send_store(msg_id, inst.sop_class_uid, inst.sop_uid, context_id, data, pending) or None

    def result(msg_id: int) -> tuple[int | None, str, bool]:
        return assoc.store_response(msg_id, out.message_id)

    # A known node's preferred syntax applies to C-GET too, when it proposed (and so accepted) that syntax.
    prefer = retrieve.preferred(app.node(assoc.requestor.ae_title))
    return _run(assoc, out, app, instances, ops, accepted, prefer, _Link(send, result), "C-GET", started)


class _Link:
    """How a C-MOVE or a C-GET sends its sub-operations' C-STORE-RQs and awaits their responses.

    ``send(inst, context_id, data, message_id, pending)`` sends one C-STORE-RQ and ``pending`` (the
    pending response of the sub-operation before, or b""): True when sent, None when the C-STORE
    could not be sent (the rest cannot be), False when the requestor's association has ended.
    ``result(message_id)`` waits for its response: (Status or None when the association was lost,
    Error Comment, whether a C-CANCEL-RQ arrived meanwhile).
    """

    def __init__(
        self,
        send: Callable[[Any, int, bytes | memoryview, int, bytes], bool | None],
        result: Callable[[int], tuple[int | None, str, bool]],
    ) -> None:
        self.send = send
        self.result = result


def _prepare(
    payloads: retrieve.Payloads, index: int, accepted: dict[str, list[tuple[int, str]]]
) -> tuple[int, bytes | memoryview] | CodecError:
    """The context ID and data set bytes to send instance ``index`` with, or why it cannot be sent (the one place
    instances are read and converted)."""
    contexts = accepted.get(payloads.instances[index].sop_class_uid, [])
    try:
        syntax, data = payloads.get(index)
    except CodecError as exc:
        return exc
    return next(cx for cx, ts in contexts if ts == syntax), data


def _run(
    assoc: FastAssociation,
    out: _Responder,
    app: Appliance,
    instances: list[Any],
    ops: retrieve.SubOperations,
    accepted: dict[str, list[tuple[int, str]]],
    prefer: str | None,
    link: _Link,
    service: str,
    started: float,
) -> bool:
    """The sub-operations, one at a time as PS3.7 has them without asynchronous operations negotiated.

    Each instance is read (and converted) while the receiver takes the one before, and each pending
    response goes out with the next message (see :class:`_Link`): the same messages in the same order
    on each association as one after the other, in fewer system calls and wake-ups.
    """
    peer = assoc.requestor.ae_title
    pending = b""  # the last sub-operation's pending response, not sent yet
    # Conversions run in the budgeted workers (appliance.conversion), the next ones while this one is sent; at
    # most one per worker is left running when the loop ends early.
    payloads = retrieve.Payloads(
        app, instances, {sop_class: [ts for _, ts in contexts] for sop_class, contexts in accepted.items()}, prefer
    )
    ready = _prepare(payloads, 0, accepted)
    for index, inst in enumerate(instances):
        if index and assoc.poll(out.message_id) == "cancel":
            if pending and not assoc.send_or_end(pending):
                return False
            return _cancelled(out, ops, service, peer, instances[index:])
        current = ready
        following = index + 1 if index + 1 < len(instances) else None
        if isinstance(current, CodecError):
            guard.failure("sub-operation", current, peer, f"{service} {inst.sop_uid}")
            ops.record(inst.sop_uid, None)
            if pending and not assoc.send_or_end(pending):
                return False
            if following is not None:
                ready = _prepare(payloads, following, accepted)
        else:
            context_id, data = current
            del current  # at most two data sets held: this one until sent, the next one being made
            msg_id = (out.message_id + index + 1) % 65536
            sent = link.send(inst, context_id, data, msg_id, pending)
            del data
            pending = b""
            if sent is False:
                return False
            if sent and following is not None:
                ready = _prepare(payloads, following, accepted)  # while the receiver takes this one
            code, comment, cancelled = link.result(msg_id) if sent else (None, "", False)
            if code is None:  # association lost: the rest cannot be sent
                ops.record(inst.sop_uid, None)
                ops.fail_rest(i.sop_uid for i in instances[index + 1 :])
                break
            if code not in (0x0000, 0xB000, 0xB006, 0xB007):
                LOGGER.error(
                    "%s from %s: %s refused by the receiver: 0x%04X %s", service, peer, inst.sop_uid, code, comment
                )
            ops.record(inst.sop_uid, code)
            if cancelled:
                return _cancelled(out, ops, service, peer, instances[index + 1 :])
        pending = out.encode(status.PENDING, (ops.remaining, ops.completed, ops.failed, ops.warning))
    if not assoc.is_alive():
        return False
    final = ops.final_status()
    LOGGER.info("%s from %s done in %.2f s: %s", service, peer, time.monotonic() - started, ops.summary())
    return out.send(final, (None, ops.completed, ops.failed, ops.warning), None, ops.failed_list(), pending)


def _cancelled(out: _Responder, ops: retrieve.SubOperations, service: str, peer: str, rest: list[Any]) -> bool:
    LOGGER.info("%s from %s cancelled: %s, %d not done", service, peer, ops.summary(), len(rest))
    identifier = Dataset()
    identifier.FailedSOPInstanceUIDList = ops.failed_uids
    return out.send(status.CANCEL, (ops.remaining, ops.completed, ops.failed, ops.warning), None, identifier)
