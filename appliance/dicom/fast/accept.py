"""A new connection: read its A-ASSOCIATE-RQ and serve it here or hand it to pynetdicom."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import evt

from appliance.dicom import compat
from appliance.dicom.fast.association import FastAssociation
from appliance.dicom.fast.wire import abort_pdu, close, recv_exact

if TYPE_CHECKING:
    from appliance.dicom.server import ApplianceServer

LOGGER = logging.getLogger("appliance.dicom")

#: A-ASSOCIATE-RQ larger than this are aborted unread (128 contexts with 16 syntaxes each are ~60 KiB).
MAX_REQUEST = 256 * 1024
#: Connections per listener that may be waiting to send their A-ASSOCIATE-RQ at once (see :class:`Unassociated`).
MAX_UNASSOCIATED = 64
#: Notification events the fast path triggers; a handler bound to any other one sends associations to pynetdicom.
EMITTED = frozenset(
    {
        evt.EVT_CONN_OPEN,
        evt.EVT_ACCEPTED,
        evt.EVT_ESTABLISHED,
        evt.EVT_RELEASED,
        evt.EVT_ABORTED,
        evt.EVT_CONN_CLOSE,
        evt.EVT_REJECTED,
    }
)


class Prefixed:
    """A socket whose first bytes were already read; :class:`FastSocket` replays them.

    Parameters
    ----------
    sock : socket.socket
        The connection.
    data : bytes
        What was read from it, in order.
    """

    def __init__(self, sock: socket.socket, data: bytes) -> None:
        self.socket = sock
        self.data = data

    def __getattr__(self, name: str) -> Any:
        # socketserver's shutdown_request/close_request and pynetdicom's error path use the socket's methods.
        return getattr(self.socket, name)


def take_prefix(request: Any) -> tuple[socket.socket, bytearray]:
    """The real socket of a connection and the bytes to replay before reading it (none for a plain socket)."""
    if isinstance(request, Prefixed):
        return request.socket, bytearray(request.data)
    return cast(socket.socket, request), bytearray()


def serve(
    server: ApplianceServer,
    request: socket.socket,
    address: tuple[str, int],
    associated: Callable[[], None] = lambda: None,
) -> Any | None:
    """Read a new connection's A-ASSOCIATE-RQ; serve the association here when it qualifies.

    Every connection's request is read here, whichever path serves it, so that what may arrive
    before an association is bounded in one place: the whole A-ASSOCIATE-RQ within ``acse_timeout``
    of the connection (ARTIM, however slowly it trickles in), at most :data:`MAX_REQUEST` bytes, and
    nothing but an A-ASSOCIATE-RQ. Anything else gets an A-ABORT and the connection is closed at
    once: a port scan, a browser or a zero-length PDU holds no thread and no association slot.

    Parameters
    ----------
    server : ApplianceServer
        The listener that accepted the connection.
    request : socket.socket
        The connection (TLS already set up on the TLS port).
    address : tuple
        The peer's address.
    associated : callable, optional
        Called once a whole, decodable A-ASSOCIATE-RQ has arrived (the connection then stops
        counting as :class:`Unassociated`).

    Returns
    -------
    socket or None
        None when the connection was served (or closed) here; otherwise what to hand to
        pynetdicom: the socket wrapped in :class:`Prefixed` with the A-ASSOCIATE-RQ read from it.
    """
    cfg = server.app.config.dicom
    peer = address[0]
    # ARTIM starts when the connection opens (PS3.8 9.1.2): the request must be whole by then.
    deadline = time.monotonic() + cfg.acse_timeout
    try:
        header = recv_exact(request, 6, deadline)
        if len(header) < 6:
            close(request)
            return None
        kind = header[0]
        length = int.from_bytes(header[2:6], "big")
        if kind != 0x01:
            if kind != 0x07:  # an A-ABORT is answered by closing
                LOGGER.info(
                    "connection from %s closed: %s before an association",
                    peer,
                    f"PDU type 0x{kind:02X}" if kind <= 0x07 else "not DICOM",
                )
                _abort(request, 0x02 if kind <= 0x07 else 0x01)
            close(request)
            return None
        if length > MAX_REQUEST:
            LOGGER.warning(
                "connection from %s aborted: A-ASSOCIATE-RQ of %d bytes (at most %d are read)",
                peer,
                length,
                MAX_REQUEST,
            )
            _abort(request, 0x06)
            close(request)
            return None
        body = recv_exact(request, length, deadline)
    except TimeoutError:
        LOGGER.info("connection from %s closed: no whole A-ASSOCIATE-RQ within %g s", peer, cfg.acse_timeout)
        close(request)
        return None
    except OSError:  # reset
        close(request)
        return None
    if len(body) < length:
        close(request)
        return None
    raw = bytes(header + body)
    try:
        pdu = server.fast.request(raw).pdu  # a request seen before is not decoded again
    except Exception as exc:  # bad AE title bytes, items that do not fit: pynetdicom would log a traceback
        LOGGER.warning("connection from %s aborted: A-ASSOCIATE-RQ cannot be decoded: %s", peer, exc)
        _abort(request, 0x06)
        close(request)
        return None
    associated()
    if not server.fast_path or not _handlers_allow(server):
        return Prefixed(request, raw)
    try:
        assoc = FastAssociation.negotiate(server, request, address, raw, pdu)
    except Exception:  # a request pynetdicom may still answer (as it always has)
        LOGGER.debug("fast path: A-ASSOCIATE-RQ from %s not understood, left to pynetdicom", peer, exc_info=True)
        assoc = None
    if assoc is None:
        return Prefixed(request, raw)
    assoc.run()  # contains its own failures: aborts the association and logs
    return None


def _abort(sock: socket.socket, reason: int) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(abort_pdu(0x02, reason))


class Unassociated:
    """Connections of one listener that have not sent their A-ASSOCIATE-RQ yet (TLS handshake included).

    They are not associations, so they do not count against ``max_associations``; they are capped
    here instead. Beyond ``limit``, the oldest is shut down: a legitimate peer sends its request
    within milliseconds of connecting, so a flood of silent connections only ever evicts its own.

    Parameters
    ----------
    limit : int
        How many may wait at once.
    """

    def __init__(self, limit: int = MAX_UNASSOCIATED) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._open: dict[int, socket.socket] = {}
        self._evicted = 0
        self._logged = -60.0

    def add(self, sock: socket.socket) -> None:
        """Count a new connection; shut down the oldest ones beyond the limit."""
        with self._lock:
            self._open[id(sock)] = sock
            excess = []
            while len(self._open) > self.limit:
                oldest = next(iter(self._open))
                excess.append(self._open.pop(oldest))
                self._note_eviction(excess[-1])
        for old in excess:
            with contextlib.suppress(OSError):
                old.shutdown(socket.SHUT_RDWR)  # its thread's read returns at once; that thread closes it

    def _note_eviction(self, sock: socket.socket) -> None:
        # Under the lock. A flood evicts one connection per new one: one log line a minute at most, with the count.
        self._evicted += 1
        now = time.monotonic()
        if now - self._logged < 60.0:
            return
        try:
            peer = sock.getpeername()[0]
        except OSError:
            peer = "?"
        LOGGER.warning(
            "connection from %s closed: more than %d connections without an association (%d closed so"
            " since the last such line)",
            peer,
            self.limit,
            self._evicted,
        )
        self._logged, self._evicted = now, 0

    def remove(self, sock: socket.socket) -> None:
        """The connection has sent its request, or has ended."""
        with self._lock:
            self._open.pop(id(sock), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


def _handlers_allow(server: ApplianceServer) -> bool:
    return not blocking_handlers(server)


def blocking_handlers(server: Any) -> list[str]:
    """Names of the bound notification events the fast path does not emit (each sends associations to pynetdicom)."""
    return sorted(
        event.name
        for event, bound in compat.server_handlers(server).items()
        if isinstance(event, evt.NotificationEvent) and bound and event not in EMITTED
    )
