"""One association served on the raw socket: negotiation, the PDU loop, C-STORE and C-ECHO answers."""

from __future__ import annotations

import contextlib
import io
import logging
import select
import socket
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom import sop_class as SOP_CLASS_MODULE
from pynetdicom.dimse_messages import C_ECHO_RSP, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor, negotiate_unrestricted
from pynetdicom.service_class import ServiceClass, StorageServiceClass, VerificationServiceClass
from pynetdicom.sop_class import uid_to_service_class

from appliance.dicom import compat
from appliance.dicom.fast import find as fast_find
from appliance.dicom.fast import retrieve as fast_retrieve
from appliance.dicom.fast.dimse import (
    C_GET_RQ,
    C_MOVE_RQ,
    NO_DATA_SET,
    CommandReader,
    decode_command,
    encode_response,
    encode_store_request,
    pdata_pdus,
    pdv_buffers,
    simple_status,
)
from appliance.dicom.fast.dimse import C_STORE_RSP as STORE_RSP_FIELD
from appliance.dicom.fast.wire import RELEASE_RP, abort_pdu, close, recv_exact, send_buffers
from appliance.dicom.handlers import SpooledDataSet
from appliance.store import Spool

if TYPE_CHECKING:
    from pynetdicom.association import Association

    from appliance.dicom.server import ApplianceServer

LOGGER = logging.getLogger("appliance.dicom")

VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

_STORAGE_UIDS = compat.STORAGE_CLASS_UIDS
_PLAIN_USER_ITEMS = (
    MaximumLengthNotification,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
_C_STORE_RQ, _C_FIND_RQ, _C_ECHO_RQ, _C_CANCEL_RQ = 0x0001, 0x0020, 0x0030, 0x0FFF
#: A C-STORE data set beyond this many bytes is written to a temporary file as it arrives (see _Message).
SPOOL_AT = 8 * 1024 * 1024
#: A command set is a few hundred bytes; one beyond this is a protocol error.
MAX_COMMAND = 64 * 1024
#: PDV item length and header bytes of a P-DATA-TF: a maximum length up to this leaves no room for a fragment.
_PDV_OVERHEAD = 6
#: C-FIND SOP classes served here (Patient Root, Study Root, Modality Worklist) when the C-FIND handler is ours.
FIND_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.31"})
#: A-ASSOCIATE-RQs whose decoding and negotiation an AE keeps (see :class:`Request`).
RECENT_REQUESTS = 16


class Request:
    """One A-ASSOCIATE-RQ's bytes decoded, and the negotiations already run for them.

    Why kept: decoding a request and negotiating its contexts with pynetdicom's classes checks every
    UID through pydicom, ~25 ms for the ~120 storage contexts with role selection that ``getscu``
    proposes: more than the rest of a C-GET of a small study. A modality or workstation sends the
    same bytes each time, and the same bytes decode the same way; a negotiation is also keyed by
    what else it depends on (see :meth:`FastAssociation.negotiate`). Read only once made.
    """

    def __init__(self, pdu: A_ASSOCIATE_RQ) -> None:
        self.pdu = pdu
        #: ``pdu.to_primitive()``, made by the first negotiation (what it raises is that negotiation's).
        self.primitive: A_ASSOCIATE | None = None
        #: Negotiation key -> (accepted contexts, rejected contexts, role items, A-ASSOCIATE-AC bytes).
        self.outcomes: dict[
            tuple[Any, ...], tuple[list[PresentationContext], list[PresentationContext], list[Any], bytes]
        ] = {}


class Registry:
    """Open fast-path associations of one AE, counted with pynetdicom's against the association limit, and the
    AE's last :data:`RECENT_REQUESTS` A-ASSOCIATE-RQs (:class:`Request`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[FastAssociation] = []
        self._requests: OrderedDict[bytes, Request] = OrderedDict()

    def request(self, raw: bytes, pdu: A_ASSOCIATE_RQ | None = None) -> Request:
        """The A-ASSOCIATE-RQ ``raw`` decoded (``pdu`` when given), from the recent ones when the same bytes came.

        Raises
        ------
        Exception
            Whatever pynetdicom raises for bytes it cannot decode (nothing is kept then).
        """
        with self._lock:
            known = self._requests.get(raw)
            if known is not None:
                self._requests.move_to_end(raw)
                return known
        if pdu is None:
            pdu = A_ASSOCIATE_RQ()
            pdu.decode(raw)
        made = Request(pdu)
        with self._lock:
            self._requests[raw] = made
            while len(self._requests) > RECENT_REQUESTS:
                self._requests.popitem(last=False)
        return made

    def admit(self, assoc: FastAssociation, others: int, limit: int) -> bool:
        """Register ``assoc`` unless it would make more than ``limit`` associations with ``others``."""
        with self._lock:
            if len(self._open) + others + 1 > limit:
                return False
            self._open.append(assoc)
            return True

    def remove(self, assoc: FastAssociation) -> None:
        """Forget an association that has ended."""
        with self._lock:
            if assoc in self._open:
                self._open.remove(assoc)

    def active(self) -> list[FastAssociation]:
        """The open associations."""
        with self._lock:
            return list(self._open)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


def _served(uid: UID) -> bool:
    """Whether associations proposing ``uid`` may be served here (verification, storage, C-FIND, C-MOVE, C-GET)."""
    return uid == VERIFICATION or uid in FIND_CLASSES or uid in fast_retrieve.RETRIEVE_CLASSES or _is_storage(uid)


def _is_storage(uid: UID) -> bool:
    """pynetdicom's unrestricted storage test (``negotiate_unrestricted``), less the classes it serves otherwise.

    pydicom and pynetdicom name MWL Find (and the Color Palette Q/R classes) differently, so the keyword test
    calls them storage; pynetdicom still dispatches their C-FIND to the worklist service class.
    """
    if uid_to_service_class(uid) not in (StorageServiceClass, ServiceClass):
        return False
    return bool(uid.is_private or uid in _STORAGE_UIDS or not hasattr(SOP_CLASS_MODULE, uid.keyword))


def _negotiate(
    server: ApplianceServer, rq: A_ASSOCIATE, denied: set[str], negotiate: Callable[..., Any]
) -> tuple[list[PresentationContext], list[PresentationContext], list[Any], bytes]:
    """The negotiation the pynetdicom path runs for ``rq``: the same supported contexts less the services the calling
    AE has no right to (``denied``), then the contexts of those services accepted as storage-like refused.

    Returns
    -------
    (list, list, list, bytes)
        The accepted contexts (by ID), the rejected ones, the role selection items, the A-ASSOCIATE-AC PDU.
    """
    proposed = rq.presentation_context_definition_list
    supported = [cx for cx in server.contexts if str(cx.abstract_syntax) not in denied]
    rq_roles = {
        UID(str(item.sop_class_uid)): (item.scu_role, item.scp_role)
        for item in rq.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
    }
    result, roles = negotiate(proposed, supported, rq_roles)
    by_id = {cast(int, cx.context_id): cx for cx in result if cx.result == 0x00}
    rejected = [cx for cx in result if cx.result != 0x00]
    for cx_id, cx in list(by_id.items()):
        if str(cx.abstract_syntax) in denied:
            cx.result = 0x01  # user rejection
            rejected.append(by_id.pop(cx_id))
    accepted = sorted(by_id.values(), key=lambda cx: cast(int, cx.context_id))
    ae = server.ae
    ac = A_ASSOCIATE()
    ac.application_context_name = APPLICATION_CONTEXT_NAME
    ac.calling_ae_title = rq.calling_ae_title
    ac.called_ae_title = rq.called_ae_title
    ac.result = 0x00
    ac.result_source = 0x01
    ac.presentation_context_definition_results_list = accepted + rejected
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = ae.maximum_pdu_size
    class_uid = ImplementationClassUIDNotification()
    class_uid.implementation_class_uid = ae.implementation_class_uid
    user: list[Any] = [max_length, class_uid]
    if ae.implementation_version_name:
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = ae.implementation_version_name
        user.append(version)
    ac.user_information = user + list(roles)
    ac_pdu = A_ASSOCIATE_AC()
    ac_pdu.from_primitive(ac)
    return accepted, rejected, list(roles), cast(bytes, ac_pdu.encode())


class _User:
    """The parts of pynetdicom's ``ServiceUser`` that handlers and the server read."""

    def __init__(self, ae_title: str, address: str, port: int, maximum_length: int) -> None:
        self.ae_title = ae_title
        self.address = address
        self.port = port
        self.maximum_length = maximum_length


class FastAssociation:
    """One storage/verification/C-FIND association served on the raw socket (see the module docstring).

    It offers what our event handlers and :class:`~appliance.dicom.server.DicomNode` use of a
    pynetdicom ``Association``: ``name``, ``requestor``/``acceptor`` (AE title, address, port),
    ``accepted_contexts``, ``is_acceptor``, ``is_alive()``, ``abort()`` and ``get_handlers()``.
    Build it with :meth:`negotiate`.
    """

    is_acceptor = True

    def __init__(
        self,
        server: ApplianceServer,
        sock: socket.socket,
        rq: A_ASSOCIATE,
        accepted: list[PresentationContext],
        ac_pdu: bytes,
        requestor: _User,
        acceptor: _User,
    ) -> None:
        self.server = server
        self.sock = sock
        self.name = f"Acceptor@{datetime.now():%Y%m%d%H%M%S}"
        self.requestor = requestor
        self.acceptor = acceptor
        self.primitive = rq
        self._contexts = {cast(int, cx.context_id): cx for cx in accepted}
        self._ac_pdu = ac_pdu
        self._send_lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.is_established = False
        self.is_released = False
        self.is_aborted = False
        # pynetdicom's trigger() swaps these around handler calls; both abort at once here.
        self._abort_nonblocking: Callable[[], None] = self.abort
        self._abort_blocking: Callable[[], None] = self.abort
        cfg = server.app.config.dicom
        self._acse_timeout = cfg.acse_timeout
        self._network_timeout = cfg.network_timeout
        # PDUs read while a C-FIND was answered, acted on after it.
        self._deferred: deque[tuple[int, bytearray]] = deque()
        self._poller: select.poll | None = None
        self._finds = fast_find.handler_is_ours(server)
        self._retrieves = fast_retrieve.handlers_are_ours(server)
        #: The DIMSE message being received (its spool, if any, is removed when the association ends).
        self._message = _Message()

    # -- negotiation ------------------------------------------------------------------------------

    @classmethod
    def negotiate(
        cls,
        server: ApplianceServer,
        sock: socket.socket,
        address: tuple[str, int],
        raw: bytes,
        pdu: A_ASSOCIATE_RQ | None = None,
    ) -> FastAssociation | None:
        """Examine an A-ASSOCIATE-RQ; return the association to serve here, or None for pynetdicom.

        Parameters
        ----------
        server : ApplianceServer
            The listener (its AE, contexts, handlers and appliance).
        sock : socket.socket
            The connection.
        address : tuple
            The peer's address.
        raw : bytes
            The whole A-ASSOCIATE-RQ PDU.
        pdu : A_ASSOCIATE_RQ, optional
            ``raw`` already decoded.
        """
        request = server.fast.request(raw, pdu)
        if request.pdu.protocol_version != 0x0001:
            return None  # pynetdicom rejects it (1, 2, 2)
        if request.primitive is None:
            request.primitive = request.pdu.to_primitive()
        rq = request.primitive
        if any(not isinstance(item, _PLAIN_USER_ITEMS) for item in rq.user_information):
            return None
        if 0 < int(rq.maximum_length_received or 0) <= _PDV_OVERHEAD:
            return None  # no P-DATA-TF fits the peer's limit: pynetdicom accepts, then aborts at the first answer
        proposed = rq.presentation_context_definition_list
        if not proposed or not all(_served(cast(UID, cx.abstract_syntax)) for cx in proposed):
            return None
        if any(cx.abstract_syntax in FIND_CLASSES for cx in proposed) and not fast_find.handler_is_ours(server):
            return None  # another C-FIND handler is bound: pynetdicom calls it
        if any(
            cx.abstract_syntax in fast_retrieve.RETRIEVE_CLASSES for cx in proposed
        ) and not fast_retrieve.handlers_are_ours(server):
            return None  # another C-MOVE/C-GET handler is bound: pynetdicom calls it
        calling = str(rq.calling_ae_title).strip()
        called = str(rq.called_ae_title).strip()
        if server.policy.refusal(calling, called) is not None:
            return None  # the pynetdicom path rejects it with the same policy's reason and log line
        # The negotiation the pynetdicom path runs (see _negotiate): run once per request bytes and what it depends on.
        denied = server.policy.denied(calling)
        negotiate = negotiate_unrestricted if compat.unrestricted_storage() else negotiate_as_acceptor
        ae = server.ae
        key = (
            frozenset(denied),
            negotiate,
            ae.maximum_pdu_size,
            ae.implementation_class_uid,
            ae.implementation_version_name,
        )
        outcome = request.outcomes.get(key)
        if outcome is None:
            outcome = request.outcomes.setdefault(key, _negotiate(server, rq, denied, negotiate))
        accepted, _, _, ac_bytes = outcome
        local = server.server_address
        requestor = _User(calling, address[0], int(address[1]), int(rq.maximum_length_received or 0))
        acceptor = _User(called, str(local[0]), int(local[1]), ae.maximum_pdu_size)
        assoc = cls(server, sock, rq, accepted, ac_bytes, requestor, acceptor)
        if not server.fast.admit(assoc, compat.pynetdicom_acceptors(server), ae.maximum_associations):
            return None  # the pynetdicom path rejects it: local limit exceeded (2, 3, 2)
        server.policy.log_denied(calling, denied)
        return assoc

    # -- what handlers and the server use ---------------------------------------------------------

    @property
    def accepted_contexts(self) -> list[PresentationContext]:
        """The accepted presentation contexts, by context ID."""
        return list(self._contexts.values())

    def get_handlers(self, event: evt.EventType) -> Any:
        """The handlers bound to ``event`` (the server's, as pynetdicom copies them to each association)."""
        return self.server.get_handlers(event)

    def is_alive(self) -> bool:
        """Whether the association is still open."""
        return not self._closed

    def abort(self) -> None:
        """Send an A-ABORT and close the connection; wait (a few seconds) until its thread has ended."""
        self._abort(0x00, 0x00)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def _abort(self, source: int, reason: int) -> None:
        self.is_aborted = True
        with self._send_lock:
            if self._closed:
                return
            with contextlib.suppress(OSError):
                self.sock.sendall(abort_pdu(source, reason))
            self._closed = True
        close(self.sock)

    def _send(self, data: bytes | memoryview) -> None:
        with self._send_lock:
            if self._closed:
                raise ConnectionAbortedError("association closed")
            self.sock.sendall(data)

    # -- the association --------------------------------------------------------------------------

    def run(self) -> None:
        """Accept the association and serve it until it is released, aborted or closed."""
        self._thread = threading.current_thread()
        try:
            evt.trigger(
                cast("Association", self), evt.EVT_CONN_OPEN, {"address": (self.requestor.address, self.requestor.port)}
            )
            self._send(self._ac_pdu)
            self.is_established = True
            evt.trigger(cast("Association", self), evt.EVT_ACCEPTED, {})
            evt.trigger(cast("Association", self), evt.EVT_ESTABLISHED, {})
            self._serve()
        except Exception:
            LOGGER.exception("fast path: association from %s failed; aborting it", self.requestor.ae_title)
            self._abort(0x02, 0x00)
            self._ended(released=False)
        finally:
            self._message.discard()
            self.server.fast.remove(self)
            with self._send_lock:
                self._closed = True
            close(self.sock)
            evt.trigger(cast("Association", self), evt.EVT_CONN_CLOSE, {})

    def _ended(self, released: bool) -> None:
        if not self.is_established:
            return
        self.is_established = False
        if released:
            self.is_released = True
            evt.trigger(cast("Association", self), evt.EVT_RELEASED, {})
        else:
            self.is_aborted = True
            evt.trigger(cast("Association", self), evt.EVT_ABORTED, {})

    def _serve(self) -> None:
        message = self._message
        while True:
            pdu = self._deferred.popleft() if self._deferred else self._read_pdu()
            if pdu is None or not self._on_pdu(pdu[0], pdu[1], message):
                return

    def _read_pdu(self) -> tuple[int, bytearray] | None:
        """The next PDU (type, body); None when the association has ended (closed, reset, network timeout)."""
        sock = self.sock
        try:
            if sock.gettimeout() != self._network_timeout:  # settimeout() is a system call each time
                sock.settimeout(self._network_timeout)
            header = recv_exact(sock, 6)
            if len(header) < 6:
                self._ended(released=False)  # connection closed: A-P-ABORT
                return None
            length = int.from_bytes(header[2:6], "big")
            limit = self.acceptor.maximum_length
            if limit and length > limit:
                # Longer than the maximum we advertised: refused before anything is allocated for it.
                LOGGER.error(
                    "fast path: association from %s aborted: PDU of %d bytes, more than the %d we accept",
                    self.requestor.ae_title,
                    length,
                    limit,
                )
                self._abort(0x02, 0x06)
                self._ended(released=False)
                return None
            # The rest of a PDU must follow within network_timeout of its header, however it trickles.
            body = recv_exact(sock, length, time.monotonic() + self._network_timeout)
        except TimeoutError:
            LOGGER.error("Network timeout reached")
            self._abort(0x00, 0x00)
            self._ended(released=False)
            return None
        except OSError:
            self._ended(released=False)
            return None
        if len(body) < length:
            self._ended(released=False)
            return None
        return header[0], body

    def _on_pdu(self, pdu_type: int, body: bytearray, message: _Message) -> bool:
        """Act on one PDU; False when the association has ended."""
        if pdu_type == 0x04:
            if not self._p_data(body, message):
                self._ended(released=False)
                return False
            return True
        if pdu_type == 0x05:
            self._release()
        elif pdu_type == 0x07:
            self._ended(released=False)
        else:
            # Another A-ASSOCIATE or release PDU is unexpected (0x02), any other type unrecognised (0x01).
            self._abort(0x02, 0x02 if 0x01 <= pdu_type <= 0x06 else 0x01)
            self._ended(released=False)
        return False

    # -- what a C-FIND being answered uses (appliance.dicom.fast.find) ------------------------------

    def poll(self, message_id: int) -> str | None:
        """Look, without waiting, for what the peer sent while a C-FIND is being answered.

        A C-CANCEL-RQ for ``message_id`` is taken; other P-DATA-TF and an A-RELEASE-RQ are kept and
        acted on after the C-FIND, in order, as pynetdicom queues them.

        Returns
        -------
        str or None
            "cancel"; "release" (an A-RELEASE-RQ is waiting); "ended" (A-ABORT, closed, protocol
            error: the association has ended); None otherwise.
        """
        sock = self.sock
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0  # TLS: bytes already decrypted
        if not pending:
            if self._poller is None:
                self._poller = select.poll()
                self._poller.register(sock, select.POLLIN)
            if not self._poller.poll(0):
                return None
        pdu = self._read_pdu()
        if pdu is None:
            return "ended"
        pdu_type, body = pdu
        if pdu_type == 0x04 and _is_cancel(body, message_id):
            return "cancel"
        if pdu_type in (0x04, 0x05):
            self._deferred.append(pdu)
            return "release" if pdu_type == 0x05 else None
        self._on_pdu(pdu_type, body, _Message())  # A-ABORT, or a protocol error that aborts
        return "ended"

    def send_or_end(self, data: bytes) -> bool:
        """Send PDUs; False when the peer has gone or stopped reading (the association has then ended)."""
        try:
            self._send(data)
        except TimeoutError:
            LOGGER.error("Network timeout reached")
            self._abort(0x00, 0x00)
            self._ended(released=False)
            return False
        except OSError as exc:  # reset, closed, or aborted by DicomNode.stop()
            LOGGER.info(
                "fast path: association from %s ended while it was being answered: %s", self.requestor.ae_title, exc
            )
            self._abort(0x00, 0x00)
            self._ended(released=False)
            return False
        return True

    def store_to_peer(
        self,
        message_id: int,
        sop_class: str,
        sop_uid: str,
        context_id: int,
        data: bytes | memoryview,
        get_message_id: int,
    ) -> tuple[int | None, str, bool]:
        """A C-GET sub-operation: send a C-STORE-RQ on this association and wait for its response.

        A C-CANCEL-RQ for the C-GET (``get_message_id``) that arrives meanwhile is noted; other
        requests are kept for after the C-GET, as pynetdicom queues them.

        Returns
        -------
        (int or None, str, bool)
            The response's Status and Error Comment, and whether a C-CANCEL-RQ arrived; Status None
            when the association ended (closed, aborted, network timeout) before the response.
        """
        if not self.send_store(message_id, sop_class, sop_uid, context_id, data):
            return None, "", False
        return self.store_response(message_id, get_message_id)

    def send_store(
        self,
        message_id: int,
        sop_class: str,
        sop_uid: str,
        context_id: int,
        data: bytes | memoryview,
        before: bytes = b"",
    ) -> bool:
        """Send a C-STORE-RQ of a C-GET on this association, after the PDUs ``before`` (in the same system call).

        Returns
        -------
        bool
            False when the association has ended (it is then aborted); :meth:`store_response` waits for the answer.
        """
        try:
            command = pdata_pdus(
                encode_store_request(message_id, sop_class, sop_uid), context_id, self.requestor.maximum_length
            )
            with self._send_lock:
                if self._closed:
                    raise ConnectionAbortedError("association closed")
                send_buffers(
                    self.sock, [before, command, *pdv_buffers(data, context_id, self.requestor.maximum_length)]
                )
        except OSError as exc:
            LOGGER.info("fast path: association from %s ended during a C-GET: %s", self.requestor.ae_title, exc)
            self._abort(0x00, 0x00)
            self._ended(released=False)
            return False
        return True

    def store_response(self, message_id: int, get_message_id: int) -> tuple[int | None, str, bool]:
        """Wait for the response to the C-STORE-RQ :meth:`send_store` sent; see :meth:`store_to_peer`."""
        cancelled = False
        reader = CommandReader()
        while True:
            pdu = self._read_pdu()
            if pdu is None:
                return None, "", cancelled
            pdu_type, body = pdu
            if pdu_type == 0x05:  # A-RELEASE-RQ while a C-GET runs: answered after it
                self._deferred.append(pdu)
                continue
            if pdu_type != 0x04:
                self._on_pdu(pdu_type, body, _Message())  # A-ABORT, or a protocol error that aborts
                return None, "", cancelled
            if _is_cancel(body, get_message_id):
                cancelled = True
                continue
            try:
                commands = reader.feed(body)
            except ValueError as exc:
                self._protocol_error(str(exc))
                self._ended(released=False)
                return None, "", cancelled
            for fields in commands:
                if fields.get(0x0100) == STORE_RSP_FIELD and fields.get(0x0120) == message_id:
                    return int(fields.get(0x0900, 0xFFFF)), str(fields.get(0x0902, "")), cancelled
                LOGGER.warning(
                    "fast path: unexpected message from %s during a C-GET (Command Field 0x%04X)",
                    self.requestor.ae_title,
                    fields.get(0x0100, 0),
                )

    def storage_contexts(self) -> dict[str, list[tuple[int, str]]]:
        """Accepted storage contexts on which we may send C-STORE (the requestor took the SCP role)."""
        out: dict[str, list[tuple[int, str]]] = {}
        for cx_id, cx in self._contexts.items():
            if cx.as_scu and _is_storage(cast(UID, cx.abstract_syntax)):
                out.setdefault(str(cx.abstract_syntax), []).append((cx_id, str(cx.transfer_syntax[0])))
        return out

    def _release(self) -> None:
        with contextlib.suppress(OSError, ConnectionAbortedError):
            self._send(RELEASE_RP)
        self._ended(released=True)
        # Like pynetdicom, wait for the requestor to close (ARTIM), so the A-RELEASE-RP is not cut off.
        deadline = time.monotonic() + self._acse_timeout
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                if not self.sock.recv(4096):
                    break

    def _p_data(self, body: bytearray, message: _Message) -> bool:
        """Take the PDVs of one P-DATA-TF; False when the association was aborted."""
        view = memoryview(body)
        pos, end = 0, len(body)
        while pos < end:
            if pos + 6 > end:
                return self._protocol_error("PDV header cut off")
            item_length = int.from_bytes(view[pos : pos + 4], "big")
            if item_length < 2 or pos + 4 + item_length > end:
                return self._protocol_error("PDV length runs past the PDU")
            context_id = view[pos + 4]
            control = view[pos + 5]
            fragment = view[pos + 6 : pos + 4 + item_length]
            pos += 4 + item_length
            if control & 0x01:
                if message.command_done:
                    return self._protocol_error("command fragment inside a data set")
                message.command.append(bytes(fragment))
                if sum(len(part) for part in message.command) > MAX_COMMAND:
                    return self._protocol_error(f"command set larger than {MAX_COMMAND} bytes")
                if control & 0x02:
                    try:
                        message.finish_command(context_id)
                    except ValueError as exc:  # pynetdicom: invalid DIMSE message -> A-P-ABORT
                        return self._protocol_error(str(exc))
                    if not message.expects_data and not self._dispatch(message):
                        return False
            else:
                if not message.command_done or not message.expects_data:
                    return self._protocol_error("data set fragment without a command")
                if not message.add_data(fragment, self.server.app.store_area.spool):
                    return self._protocol_error(
                        f"data set of a command 0x{message.fields.get(0x0100, 0):04X} larger"
                        f" than {SPOOL_AT // (1024 * 1024)} MB"
                    )
                if control & 0x02 and not self._dispatch(message):
                    return False
        return True

    def _protocol_error(self, what: str) -> bool:
        LOGGER.error("fast path: association from %s aborted: %s", self.requestor.ae_title, what)
        self._abort(0x02, 0x06)
        return False

    def _dispatch(self, message: _Message) -> bool:
        """Answer one complete DIMSE message; False when the association was aborted."""
        command = message.fields
        context_id = message.context_id
        data = message.take_data()
        field = command.get(0x0100)
        context = self._contexts.get(context_id)
        if field is None:
            return self._protocol_error("command set without Command Field")
        if field & 0x8000:  # a response: pynetdicom logs and ignores it
            LOGGER.warning("Received unexpected response service message (Command Field 0x%04X)", field)
            return True
        if field == _C_CANCEL_RQ:
            return True
        # A request missing a parameter (Message ID, Affected SOP Class/Instance UID, Priority) is ignored, as
        # pynetdicom ignores it, before its context is looked at; the association goes on.
        if field == _C_STORE_RQ and not {0x0110, 0x0002, 0x1000, 0x0700} <= command.keys():
            LOGGER.warning("Received unexpected C-STORE service message")
            return True
        if field == _C_ECHO_RQ and not {0x0110, 0x0002} <= command.keys():
            LOGGER.warning("Received unexpected C-ECHO service message")
            return True
        if context is None:
            LOGGER.info("Received DIMSE message with invalid or rejected context ID: %s", context_id)
            self._abort(0x00, 0x00)
            return False
        if field == _C_STORE_RQ:
            self._send(self._store(command, data, context))
            return True
        if field == _C_ECHO_RQ and command[0x0002] == VERIFICATION:
            self._send(self._echo(command, context))
            return True
        if field == _C_FIND_RQ and self._finds:
            # Only a C-STORE's data set is spooled (or fails to be): an identifier is bytes.
            return fast_find.serve_find(self, command, data if isinstance(data, bytes) else None, context)
        if field in (C_MOVE_RQ, C_GET_RQ) and self._retrieves:
            return fast_retrieve.serve_retrieve(self, command, data if isinstance(data, bytes) else None, context)
        LOGGER.error(
            "fast path: association from %s aborted: command 0x%04X is not served on a storage association",
            self.requestor.ae_title,
            field,
        )
        self._abort(0x00, 0x00)
        return False

    def _store(
        self, command: dict[int, Any], data: bytes | Spool | OSError | None, context: PresentationContext
    ) -> bytes:
        req = C_STORE()
        req.MessageID = command.get(0x0110)
        req.AffectedSOPClassUID = command.get(0x0002)
        req.AffectedSOPInstanceUID = command.get(0x1000)
        req.Priority = command.get(0x0700, 0)
        if 0x1030 in command:
            req.MoveOriginatorApplicationEntityTitle = command[0x1030]
        if 0x1031 in command:
            req.MoveOriginatorMessageID = command[0x1031]
        if isinstance(data, OSError):
            LOGGER.error(
                "C-STORE %s from %s refused, nothing stored: spooling the data set failed: %s",
                command.get(0x1000),
                self.requestor.ae_title,
                data.strerror or data,
            )
            return self._response(0x8001, command, 0xA700, context)  # out of resources
        # BytesIO shares the bytes object: the handler's getvalue() returns it without a copy. A large data
        # set arrives as the Spool it was written to (appliance.dicom.handlers.handle_store takes either).
        if isinstance(data, Spool):
            req.DataSet = SpooledDataSet(data)
        else:
            # No data set (Command Data Set Type 0x0101): an empty one, as pynetdicom hands it to the handler.
            req.DataSet = io.BytesIO(data if data is not None else b"")
        try:
            result = evt.trigger(
                cast("Association", self), evt.EVT_C_STORE, {"request": req, "context": context.as_tuple}
            )
        except Exception as exc:  # pynetdicom's attempt(): 0xC211 for an exception in the handler
            LOGGER.error("Exception in handler bound to 'evt.EVT_C_STORE'")
            LOGGER.exception(exc)
            result = 0xC211
        finally:
            if isinstance(data, Spool):
                data.discard()
        return self._response(0x8001, command, result, context)

    def _echo(self, command: dict[int, Any], context: PresentationContext) -> bytes:
        req = C_ECHO()
        req.MessageID = command.get(0x0110)
        req.AffectedSOPClassUID = command.get(0x0002)
        try:
            result = evt.trigger(
                cast("Association", self), evt.EVT_C_ECHO, {"request": req, "context": context.as_tuple}
            )
        except Exception as exc:  # pynetdicom answers Success when the echo handler fails
            LOGGER.exception(exc)
            result = 0x0000
        return self._response(0x8030, command, result, context)

    def _response(
        self, command_field: int, request: dict[int, Any], result: Any, context: PresentationContext
    ) -> bytes:
        """The P-DATA-TF PDU(s) answering a request with a handler's result.

        The usual result (a status, maybe with an error comment) is encoded by hand: pynetdicom's
        response primitive and DIMSE message classes cost ~0.1 ms per C-STORE, mostly in building
        pydicom data sets and validating UIDs whose values came from the request.
        """
        context_id = cast(int, context.context_id)
        store = command_field == 0x8001
        status, comment = simple_status(result)
        if status is not None:
            command = encode_response(
                command_field, request[0x0110], request[0x0002], status, comment, request[0x1000] if store else None
            )
            return pdata_pdus(command, context_id, self.requestor.maximum_length)
        # Anything else (a status data set with other elements, an invalid value): pynetdicom's own
        # status check and encoder, exactly as its service class would answer.
        rsp: C_STORE | C_ECHO = C_STORE() if store else C_ECHO()
        rsp.MessageIDBeingRespondedTo = request[0x0110]
        rsp.AffectedSOPClassUID = request[0x0002]
        if isinstance(rsp, C_STORE):
            rsp.AffectedSOPInstanceUID = request[0x1000]
        service = StorageServiceClass if store else VerificationServiceClass
        rsp = service(cast("Association", self)).validate_status(result, rsp)
        message: DIMSEMessage = C_STORE_RSP() if store else C_ECHO_RSP()
        message.primitive_to_message(rsp)
        out = []
        for pdata in message.encode_msg(context_id, self.requestor.maximum_length):
            pdu = P_DATA_TF()
            pdu.from_primitive(pdata)
            out.append(pdu.encode())
        return b"".join(out)


#: Command Field (0000,0100) = C-CANCEL-RQ, as every command set encodes it (implicit VR little endian).
_CANCEL_FIELD = b"\x00\x00\x00\x01\x02\x00\x00\x00\xff\x0f"


def _is_cancel(body: bytearray, message_id: int) -> bool:
    """Whether a P-DATA-TF body is exactly one C-CANCEL-RQ command for ``message_id``."""
    if len(body) < 6:
        return False
    length = int.from_bytes(body[0:4], "big")
    if length + 4 != len(body) or body[5] & 0x03 != 0x03:
        return False
    if _CANCEL_FIELD not in body:  # most often a C-STORE-RSP: not decoded twice
        return False
    try:
        fields = decode_command(bytes(body[6:]))
    except ValueError:
        return False
    return fields.get(0x0100) == _C_CANCEL_RQ and fields.get(0x0120) == message_id


class _Message:
    """The DIMSE message being received: command fragments, then data set fragments.

    A C-STORE data set larger than :data:`SPOOL_AT` goes to a :class:`~appliance.store.Spool` as it
    arrives, so an association holds at most that much (plus one PDU) in memory, whatever the
    instance's size; other commands' data sets (C-FIND identifiers) are refused beyond it.
    """

    def __init__(self) -> None:
        self.command: list[bytes] = []
        self.data: list[memoryview] = []
        self.size = 0
        self.spool: Spool | None = None
        #: Writing the spool failed (disk full...): the rest is dropped, the C-STORE refused.
        self.spool_error: OSError | None = None
        self.fields: dict[int, Any] = {}
        self.context_id = 0
        self.command_done = False
        self.expects_data = False

    def finish_command(self, context_id: int) -> None:
        self.fields = decode_command(b"".join(self.command))
        if 0x0800 not in self.fields:  # pynetdicom cannot tell whether a data set follows: it aborts
            raise ValueError("command set without Command Data Set Type")
        self.context_id = context_id
        self.command_done = True
        self.expects_data = self.fields.get(0x0800, NO_DATA_SET) != NO_DATA_SET

    def add_data(self, fragment: memoryview, spool: Callable[[], Spool]) -> bool:
        """Take a data set fragment; False when a data set other than a C-STORE's grows too large."""
        self.size += len(fragment)
        if self.spool_error is not None:
            return True
        try:
            if self.spool is not None:
                self.spool.write(fragment)
                return True
            self.data.append(fragment)
            if self.size <= SPOOL_AT:
                return True
            if self.fields.get(0x0100) != _C_STORE_RQ:
                return False
            self.spool = spool()
            for part in self.data:
                self.spool.write(part)
        except OSError as exc:
            self.spool_error = exc
            if self.spool is not None:
                with contextlib.suppress(OSError):
                    self.spool.discard()
                self.spool = None
        self.data = []
        return True

    def take_data(self) -> bytes | Spool | OSError | None:
        """The data set (None when the command has none; a Spool when large; the error when spooling
        failed), and reset for the next message."""
        data: bytes | Spool | OSError | None = None
        if self.spool_error is not None:
            data = self.spool_error
        elif self.spool is not None:
            data = self.spool
        elif self.expects_data:
            data = b"".join(self.data)
        self.command, self.data = [], []
        self.size = 0
        self.spool = self.spool_error = None
        self.fields = {}
        self.command_done = self.expects_data = False
        return data

    def discard(self) -> None:
        """Remove the spool of a message the association's end cut off."""
        if self.spool is not None:
            with contextlib.suppress(OSError):
                self.spool.discard()
            self.spool = None
