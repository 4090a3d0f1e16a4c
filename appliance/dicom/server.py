"""The DICOM Application Entity: presentation contexts, association policy, listeners.

pynetdicom provides the protocol machine; this module adapts it in four places,
each for a reason found by measurement or by reading its source (the adaptations that
need pynetdicom's private names live in :mod:`appliance.dicom.compat`):

* **Association policy.** One :class:`~appliance.dicom.policy.AssociationPolicy` per node,
  applied by pynetdicom's acceptor and by the fast path (:mod:`appliance.dicom.fast`).
* **TLS handshake off the accept loop.** pynetdicom wraps the socket in the
  accept loop, so one silent client on the TLS port blocks every other TLS
  association; the handshake runs in the connection's own thread here.
* **Receive path.** Reads whole PDUs with ``recv_into`` instead of 4 KiB
  ``recv`` calls, re-arms ``TCP_QUICKACK`` so a Nagle-enabled sender (DCMTK's
  default) is not stalled by delayed ACKs, and sets ``TCP_NODELAY``.
* **Shutdown.** Stop accepting, let open associations finish for a grace period,
  then abort the rest; the store is atomic so an abort leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import time
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

import tls
from appliance.core import IMPLEMENTATION_VERSION, Appliance
from appliance.dicom import commitment, compat, fast, find_handlers, forward, handlers
from appliance.dicom.fast.accept import Unassociated, blocking_handlers
from appliance.dicom.policy import RIGHTS, STORAGE_COMMITMENT, AssociationPolicy
from appliance.errors import ListenerError

LOGGER = logging.getLogger("appliance.dicom")

#: Transfer syntaxes accepted for storage: received files are kept as they came.
STORAGE_SYNTAXES: list[str | bytes | UID] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
]
QUERY_SYNTAXES: list[str | bytes | UID] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


class FastSocket(AssociationSocket):
    """AssociationSocket that reads whole PDUs at once and keeps ACKs prompt."""

    def __init__(self, assoc: Association, client_socket: socket.socket) -> None:
        # A connection the fast path handed over comes with its A-ASSOCIATE-RQ already read: replay it first.
        client_socket, self._replay = fast.take_prefix(client_socket)
        super().__init__(assoc, client_socket=client_socket)
        #: pynetdicom reads a PDU as recv(6), then recv(its length): whether the next read is a PDU's rest.
        self._in_pdu = False
        self._deadline = 0.0
        # Sends are bounded too: a peer that stops reading cannot hold the thread in sendall().
        client_socket.settimeout(assoc.ae.network_timeout)

    @property
    def ready(self) -> bool:
        return bool(self._replay) or bool(super().ready)

    def recv(self, nr_bytes: int) -> bytearray:
        if not self._in_pdu:
            # A PDU header: pynetdicom reads only when bytes are waiting, so its timers cannot run while a
            # read blocks; the whole PDU must arrive within the ACSE/network timeout of its first byte.
            assoc = self.assoc
            timeout = assoc.network_timeout if assoc.is_established else assoc.acse_timeout
            self._deadline = time.monotonic() + float(timeout or 60.0)
            header = self._read(nr_bytes)
            # pynetdicom reads the rest only of a whole header of a known PDU type (else it ends the association).
            self._in_pdu = len(header) == 6 and 0x01 <= header[0] <= 0x07
            return header
        else:
            self._in_pdu = False
            limit = self.assoc.acceptor.maximum_length if self.assoc.is_established else fast.MAX_REQUEST
            if limit and nr_bytes > limit:
                LOGGER.error(
                    "association from %s aborted: PDU of %d bytes, more than the %d we accept",
                    self.assoc.requestor.ae_title,
                    nr_bytes,
                    limit,
                )
                self._abort_and_close()
                return bytearray()  # pynetdicom: PDU shorter than announced, the connection is closed
        return self._read(nr_bytes)

    def _read(self, nr_bytes: int) -> bytearray:
        if self._replay:
            head = self._replay[:nr_bytes]
            del self._replay[:nr_bytes]
            return head if len(head) == nr_bytes else head + self._recv_socket(nr_bytes - len(head))
        return self._recv_socket(nr_bytes)

    def _recv_socket(self, nr_bytes: int) -> bytearray:
        # Short when the peer closed: pynetdicom expects what arrived.
        try:
            return fast.recv_exact(cast(socket.socket, self.socket), nr_bytes, self._deadline)
        except TimeoutError:
            # One line and an A-ABORT rather than pynetdicom's traceback; the short read ends the association.
            LOGGER.error(
                "association from %s aborted: a PDU did not arrive whole in time", self.assoc.requestor.ae_title
            )
            self._abort_and_close()
            return bytearray()

    def _abort_and_close(self) -> None:
        with contextlib.suppress(OSError):
            cast(socket.socket, self.socket).sendall(fast.abort_pdu(0x02, 0x00))
        self.close()


class _RequestHandler(compat.PolicyRequestHandler):
    socket_class = FastSocket


class ApplianceServer(ThreadedAssociationServer):
    """Threaded association server with the TLS handshake done per connection."""

    app: Appliance
    policy: AssociationPolicy
    handshake_timeout: float = 30.0
    #: socketserver's default backlog is 5: a burst of modalities connecting at once would see refusals.
    request_queue_size = 128
    #: Storage, verification and C-FIND associations are served by appliance.dicom.fast (False: all by
    #: pynetdicom).
    fast_path: bool = True
    #: The fast path's open associations, shared by the listeners of one node (set by DicomNode).
    fast: fast.Registry
    #: Connections that have not sent their A-ASSOCIATE-RQ yet (set by DicomNode).
    unassociated: Unassociated
    # The fast path serves a whole association in the connection's thread: closing the listener must not
    # wait for them (DicomNode.stop aborts them after its grace period), and like pynetdicom's association
    # threads they must not keep the process alive.
    block_on_close = False
    daemon_threads = True

    def spool_folder(self) -> Path:
        """Where pynetdicom writes the C-STORE data sets it receives for us (:func:`compat.spool_received_datasets`)."""
        return self.app.store_area.spool_folder()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sock = cast(socket.socket, self.socket)
        client, address = sock.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        raw = request
        self.unassociated.add(raw)  # until its A-ASSOCIATE-RQ has arrived; capped apart from associations
        try:
            if self.ssl_context is not None:
                try:
                    request = tls.handshake(request, self.ssl_context, self.handshake_timeout)
                except tls.HandshakeError as exc:
                    LOGGER.warning("TLS connection from %s failed before the association: %s", client_address[0], exc)
                    return
            request = fast.serve(self, request, client_address, lambda: self.unassociated.remove(raw))
        finally:
            self.unassociated.remove(raw)
        if request is None:  # served (or closed) by the fast path
            return
        super().process_request_thread(request, client_address)


def presentation_contexts() -> list[PresentationContext]:
    """Every context the node accepts: verification, storage (all classes, all syntaxes), Q/R."""
    contexts = []
    verification = PresentationContext()
    verification.abstract_syntax = Verification
    verification.transfer_syntax = QUERY_SYNTAXES
    contexts.append(verification)
    for storage in AllStoragePresentationContexts:
        cx = PresentationContext()
        cx.abstract_syntax = storage.abstract_syntax
        cx.transfer_syntax = STORAGE_SYNTAXES
        # C-GET sends instances back as C-STORE over the same association: the
        # peer proposes the SCP role for the storage classes it wants.
        cx.scu_role = True
        cx.scp_role = True
        contexts.append(cx)
    for uid in RIGHTS:
        cx = PresentationContext()
        cx.abstract_syntax = uid
        cx.transfer_syntax = QUERY_SYNTAXES
        if uid == STORAGE_COMMITMENT:  # a requester may take the SCP role to get reports on its own association
            cx.scu_role = True
            cx.scp_role = True
        contexts.append(cx)
    return contexts


class DicomNode:
    """The appliance's DICOM listeners (plain port and, optionally, TLS port).

    Parameters
    ----------
    app : Appliance
        The core that stores and answers.
    ssl_context : ssl.SSLContext, optional
        Server context for the TLS port; the TLS port stays closed without it.
    """

    def __init__(self, app: Appliance, ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.ssl_context = ssl_context
        cfg = app.config.dicom
        ae = AE(ae_title=cfg.ae_title)
        ae.maximum_associations = cfg.max_associations
        ae.maximum_pdu_size = cfg.max_pdu
        ae.acse_timeout = cfg.acse_timeout
        ae.dimse_timeout = cfg.dimse_timeout
        ae.network_timeout = cfg.network_timeout
        ae.implementation_version_name = IMPLEMENTATION_VERSION
        # Used for C-MOVE sub-associations; the policy is ours, not pynetdicom's.
        ae.require_called_aet = False
        ae.require_calling_aet = []
        self.ae = ae
        self.servers: list[ApplianceServer] = []
        self._contexts = presentation_contexts()
        self.fast = fast.Registry()
        self.policy = AssociationPolicy(app)
        self.reporter = commitment.Reporter()
        # Associations pynetdicom serves write C-STORE data sets to the store's tmp/, not to memory (issue 15).
        compat.spool_received_datasets()

    def _handlers(self) -> list[Any]:
        app = self.app
        return [
            (evt.EVT_C_ECHO, handlers.handle_echo),
            (evt.EVT_C_STORE, _counting_store, [app]),
            (evt.EVT_C_FIND, find_handlers.handle_c_find, [app]),
            (evt.EVT_N_CREATE, find_handlers.handle_n_create, [app]),
            (evt.EVT_N_SET, find_handlers.handle_n_set, [app]),
            (evt.EVT_N_ACTION, commitment.handle_n_action, [app, self.reporter]),
            (evt.EVT_N_EVENT_REPORT, forward.handle_n_event_report, [app]),
            (evt.EVT_C_MOVE, handlers.handle_move, [app]),
            (evt.EVT_C_GET, handlers.handle_get, [app]),
            (evt.EVT_ESTABLISHED, _on_established),
            (evt.EVT_RELEASED, _on_ended, ["released"]),
            (evt.EVT_ABORTED, _on_ended, ["aborted"]),
            (evt.EVT_CONN_CLOSE, _on_closed, [app]),
        ]

    def _serve(self, port: int, ssl_context: ssl.SSLContext | None) -> ApplianceServer:
        cfg = self.app.config.dicom
        try:
            server = cast(
                ApplianceServer,
                self.ae.make_server(
                    (cfg.bind, port),
                    ae_title=cfg.ae_title,
                    contexts=self._contexts,
                    ssl_context=ssl_context,
                    evt_handlers=self._handlers(),
                    server_class=ApplianceServer,
                    request_handler=_RequestHandler,
                ),
            )
        except OSError as exc:
            key = "[dicom] tls_port" if ssl_context is not None else "[dicom] port"
            raise ListenerError.port("DICOM", key, cfg.bind, port, exc) from None
        server.app = self.app
        server.policy = self.policy
        server.fast_path = self.app.config.dicom.fast_path
        server.handshake_timeout = self.app.config.tls.handshake_timeout
        server.fast = self.fast
        server.unassociated = Unassociated()
        blocking = blocking_handlers(server)
        if server.fast_path and blocking:
            LOGGER.info("DICOM fast path off: handler(s) bound to %s, which only pynetdicom emits", ", ".join(blocking))
        thread = threading.Thread(target=server.serve_forever, name=f"dicom-listener-{port}", daemon=True)
        thread.start()
        compat.register_server(self.ae, server)
        self.servers.append(server)
        return server

    def start(self) -> None:
        """Open the plain and TLS ports that the configuration enables."""
        cfg = self.app.config.dicom
        if not cfg.fast_path:
            LOGGER.info("DICOM fast path off ([dicom] fast_path = false): every association is served by pynetdicom")
        if cfg.port:
            server = self._serve(cfg.port, None)
            LOGGER.info("DICOM %s listening on %s:%d", cfg.ae_title, cfg.bind, server.server_address[1])
        if cfg.tls_port and self.ssl_context is not None:
            server = self._serve(cfg.tls_port, self.ssl_context)
            LOGGER.info("DICOM %s listening with TLS on %s:%d", cfg.ae_title, cfg.bind, server.server_address[1])

    @property
    def ports(self) -> list[int]:
        """The bound ports, plain first (useful when the config asked for port 0 in tests)."""
        return [int(s.server_address[1]) for s in self.servers]

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, wait up to ``grace`` seconds for open associations, abort the rest."""
        for server in self.servers:
            server.shutdown()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.active():
            time.sleep(0.05)
        for assoc in self.active():
            LOGGER.warning("aborting association from %s at shutdown", assoc.requestor.ae_title)
            assoc.abort()
        self.reporter.join(max(0.5, deadline - time.monotonic()))
        self.servers.clear()

    def active(self) -> list[Association | fast.FastAssociation]:
        """Open acceptor associations (pynetdicom's and the fast path's)."""
        pynetdicom: list[Association | fast.FastAssociation] = [
            a for a in self.ae.active_associations if a.is_acceptor and a.is_alive()
        ]
        return pynetdicom + self.fast.active()


def _counting_store(event: evt.Event, app: Appliance) -> Any:
    result = handlers.handle_store(event, app)
    code = result if isinstance(result, int) else int(result.Status)
    stats = _stats(event.assoc)
    stats["stored" if code == 0 else "failed"] += 1
    return result


def _stats(assoc: Association) -> dict[str, Any]:
    stats: dict[str, Any] | None = getattr(assoc, "_appliance_stats", None)
    if stats is None:
        stats = {"stored": 0, "failed": 0, "end": "closed", "start": time.monotonic()}
        assoc._appliance_stats = stats  # type: ignore[attr-defined]
    return stats


def _on_established(event: evt.Event) -> None:
    assoc = event.assoc
    _stats(assoc)
    LOGGER.info(
        "association from %s (%s:%s) to %s accepted",
        handlers.calling_ae(event),
        assoc.requestor.address,
        assoc.requestor.port,
        handlers.called_ae(event),
    )


def _on_ended(event: evt.Event, how: str) -> None:
    _stats(event.assoc)["end"] = how


def _on_closed(event: evt.Event, app: Appliance) -> None:
    assoc = event.assoc
    compat.discard_partial_datasets(assoc)  # a C-STORE cut off while pynetdicom wrote it to the store's tmp
    stats = getattr(assoc, "_appliance_stats", None)
    if stats is None:  # rejected or never established
        return
    app.association_ended(handlers.called_ae(event), handlers.assoc_id(event), stats["end"] == "released")
    LOGGER.info(
        "association from %s to %s %s after %.1f s: %d stored, %d failed",
        handlers.calling_ae(event),
        handlers.called_ae(event),
        stats["end"],
        time.monotonic() - stats["start"],
        stats["stored"],
        stats["failed"],
    )


ListenerFactory = Callable[[Appliance], DicomNode]
