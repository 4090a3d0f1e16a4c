"""A new connection: read its A-ASSOCIATE-RQ and serve it here or hand it to pynetdicom."""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import evt

from appliance.dicom import compat
from appliance.dicom.fast.association import FastAssociation
from appliance.dicom.fast.wire import close, recv_exact

if TYPE_CHECKING:
    from appliance.dicom.server import ApplianceServer

LOGGER = logging.getLogger("appliance.dicom")

#: A-ASSOCIATE-RQ larger than this go to pynetdicom unread (128 contexts with 16 syntaxes each are ~60 KiB).
MAX_REQUEST = 256 * 1024
#: Notification events the fast path triggers; a handler bound to any other one sends associations to pynetdicom.
EMITTED = frozenset({evt.EVT_CONN_OPEN, evt.EVT_ACCEPTED, evt.EVT_ESTABLISHED, evt.EVT_RELEASED, evt.EVT_ABORTED,
                     evt.EVT_CONN_CLOSE, evt.EVT_REJECTED})


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


def serve(server: ApplianceServer, request: socket.socket, address: tuple[str, int]) -> Any | None:
    """Serve a new connection on the fast path when its association qualifies.

    Parameters
    ----------
    server : ApplianceServer
        The listener that accepted the connection.
    request : socket.socket
        The connection (TLS already set up on the TLS port).
    address : tuple
        The peer's address.

    Returns
    -------
    socket or None
        None when the connection was served (or closed) here; otherwise what to hand to
        pynetdicom: the socket, wrapped in :class:`Prefixed` when bytes were read from it.
    """
    if not server.fast_path or not _handlers_allow(server):
        return request
    cfg = server.app.config.dicom
    previous = request.gettimeout()
    try:
        # ARTIM: pynetdicom waits acse_timeout for the A-ASSOCIATE-RQ, then closes the connection.
        request.settimeout(cfg.acse_timeout)
        header = recv_exact(request, 6)
        if len(header) < 6:
            close(request)
            return None
        length = int.from_bytes(header[2:6], "big")
        if header[0] != 0x01 or length > MAX_REQUEST:
            request.settimeout(previous)
            return Prefixed(request, bytes(header))
        body = recv_exact(request, length)
        request.settimeout(previous)
    except OSError:  # timeout, reset: what pynetdicom does too, it closes
        close(request)
        return None
    if len(body) < length:
        close(request)
        return None
    raw = bytes(header + body)
    try:
        assoc = FastAssociation.negotiate(server, request, address, raw)
    except Exception:  # a malformed request: pynetdicom answers it as it always has
        LOGGER.debug("fast path: A-ASSOCIATE-RQ from %s not understood, left to pynetdicom", address[0],
                     exc_info=True)
        assoc = None
    if assoc is None:
        return Prefixed(request, raw)
    assoc.run()  # contains its own failures: aborts the association and logs
    return None


def _handlers_allow(server: ApplianceServer) -> bool:
    return not blocking_handlers(server)


def blocking_handlers(server: Any) -> list[str]:
    """Names of the bound notification events the fast path does not emit (each sends associations to pynetdicom)."""
    return sorted(event.name for event, bound in compat.server_handlers(server).items()
                  if isinstance(event, evt.NotificationEvent) and bound and event not in EMITTED)
