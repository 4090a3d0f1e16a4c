"""MLLP framing (``0x0B`` message ``0x1C 0x0D``) and a threaded MLLP server.

hl7apy's ``MLLPServer`` reads one message per connection and then closes it;
real senders keep the connection open and stream messages, TCP cuts frames
anywhere and merges them, and some senders add NULs or newlines between frames.
:class:`FrameReader` therefore keeps a byte buffer per connection and returns
every complete frame, whatever the read boundaries; bytes outside frames are
skipped; a frame larger than the limit is dropped and reported; a missing final
``0x0D`` is tolerated.

:class:`MLLPServer` serves each connection in its own thread, many messages per
connection, answering each frame in order before reading the next. With an SSL
context the TLS handshake runs in that thread too (``tls.handshake``), so a silent
client cannot block the accept loop.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import tls

LOGGER = logging.getLogger("hl7.mllp")

START_BLOCK = 0x0B
END_BLOCK = 0x1C
CARRIAGE_RETURN = 0x0D
_HEAD = 4096


@dataclass(frozen=True)
class Oversize:
    """A frame longer than the limit: its first bytes (to find MSH-10) and its size."""

    head: bytes
    size: int


def frame(payload: bytes) -> bytes:
    """Wrap a message in an MLLP frame."""
    return b"\x0b" + payload + b"\x1c\x0d"


class FrameReader:
    """Extract MLLP frames from a byte stream fed in arbitrary pieces.

    Parameters
    ----------
    max_size : int
        Largest frame accepted, in bytes.
    """

    def __init__(self, max_size: int = 16 * 1024 * 1024) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._in_frame = False
        self._scanned = 0
        self._dropping = False
        self._dropped = 0
        self._head = b""
        #: Bytes skipped outside frames (NULs and line ends between frames excluded).
        self.garbage = 0

    @property
    def in_frame(self) -> bool:
        """Whether a frame has started and not ended yet."""
        return self._in_frame

    @property
    def partial(self) -> int:
        """Bytes of an unfinished frame held (what a disconnect would lose)."""
        return len(self._buf) + self._dropped if self._in_frame else 0

    def _skip(self, data: bytes | bytearray) -> None:
        self.garbage += len(bytes(data).strip(b"\x00\r\n \t"))

    def feed(self, data: bytes) -> list[bytes | Oversize]:
        """Add received bytes; return the frames completed by them, in order."""
        out: list[bytes | Oversize] = []
        buf = self._buf
        buf += data
        while buf:
            if not self._in_frame:
                start = buf.find(START_BLOCK)
                if start < 0:
                    self._skip(buf)
                    buf.clear()
                    break
                self._skip(buf[:start])
                del buf[: start + 1]
                self._in_frame, self._scanned, self._dropping, self._dropped = True, 0, False, 0
                continue
            end = buf.find(END_BLOCK, self._scanned)
            restart = buf.find(START_BLOCK, self._scanned, end if end >= 0 else len(buf))
            if restart >= 0:
                # A new start block inside a frame: the sender gave up on the previous one.
                LOGGER.warning("MLLP frame abandoned by the sender after %d bytes", restart + self._dropped)
                del buf[:restart]
                self._in_frame = False
                continue
            if end < 0:
                self._scanned = len(buf)
                if len(buf) + self._dropped > self.max_size:
                    if not self._dropping:
                        self._head = bytes(buf[:_HEAD])
                        self._dropping = True
                    self._dropped += len(buf)
                    buf.clear()
                    self._scanned = 0
                break
            payload = bytes(buf[:end])
            cut = end + 1
            if cut < len(buf) and buf[cut] == CARRIAGE_RETURN:
                cut += 1
            del buf[:cut]
            self._in_frame = False
            if self._dropping or len(payload) > self.max_size:
                out.append(Oversize(self._head or payload[:_HEAD], self._dropped + len(payload)))
            else:
                out.append(payload)
        return out


#: Called for every frame: (payload or Oversize, peer "host:port") -> reply payload or None (no reply).
FrameHandler = Callable[[bytes | Oversize, str], bytes | None]


@dataclass
class _Conn:
    """What the server knows of one open connection (to pick the idle ones when it is full)."""

    sock: socket.socket
    host: str
    last: float
    #: "starting" (TLS handshake), "idle" (waiting for a message) or "busy" (a message being received or
    #: applied); idle connections, then those stuck in a handshake, are closed to make room.
    state: str = "starting"
    #: A second descriptor of the accepted socket, to cut a TLS handshake (which detaches the first one).
    handle: socket.socket | None = None


class _Connection(socketserver.BaseRequestHandler):
    server: MLLPServer

    def handle(self) -> None:
        srv = self.server
        sock: socket.socket = self.request
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        conn = srv.connection(sock)
        if conn is None:  # not admitted (see verify_request)
            return
        if srv.ssl_context is not None:
            try:
                sock = tls.handshake(sock, srv.ssl_context, srv.handshake_timeout)
            except tls.HandshakeError as exc:
                LOGGER.warning("HL7 TLS connection from %s failed: %s", peer, exc)
                return
            conn.sock = sock
        self._serve(sock, peer, conn)

    def _serve(self, sock: socket.socket, peer: str, conn: _Conn) -> None:
        srv = self.server
        reader = FrameReader(srv.max_size)
        LOGGER.debug("HL7 connection from %s", peer)
        count = 0
        opened = time.monotonic()
        frame_start: float | None = None
        conn.state = "idle"
        try:
            while not srv.stopping:
                # Three clocks: a new connection must deliver its first message soon, a message once begun
                # must be whole soon, and an established connection may then stay silent for idle_timeout.
                if reader.in_frame and frame_start is not None:
                    since, limit, why = frame_start, srv.message_timeout, "sent part of a message for"
                elif count == 0:
                    since, limit, why = opened, srv.first_message_timeout, "began no message in"
                else:
                    since, limit, why = conn.last, srv.idle_timeout, "idle for"
                sock.settimeout(max(0.001, since + limit - time.monotonic()))
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    LOGGER.info("HL7 connection from %s %s %.0f s: closed", peer, why, time.monotonic() - since)
                    return
                except (OSError, ssl.SSLError) as exc:
                    if not srv.stopping and not srv.evicted(conn):
                        LOGGER.warning("HL7 connection from %s broken: %s", peer, exc)
                    return
                if not data:
                    break
                conn.last = time.monotonic()
                was_in_frame = reader.in_frame
                conn.state = "busy"
                items = reader.feed(data)
                for item in items:
                    count += 1
                    reply = srv.handler(item, peer)
                    if reply is not None:
                        try:
                            sock.sendall(frame(reply))
                        except OSError as exc:
                            LOGGER.warning("HL7 ACK to %s not sent: %s", peer, exc)
                            return
                conn.last = time.monotonic()
                if not reader.in_frame:
                    frame_start = None
                elif items or not was_in_frame or frame_start is None:
                    frame_start = conn.last  # a new message began in this chunk
                conn.state = "busy" if reader.in_frame else "idle"
            if reader.partial:
                LOGGER.warning(
                    "HL7 sender %s disconnected in the middle of a message: %d byte(s) discarded", peer, reader.partial
                )
        finally:
            if reader.garbage:
                LOGGER.warning("HL7 connection from %s: %d byte(s) outside MLLP frames ignored", peer, reader.garbage)
            LOGGER.debug("HL7 connection from %s closed after %d message(s)", peer, count)


class MLLPServer(socketserver.ThreadingTCPServer):
    """A threaded MLLP listener.

    Connections are bounded three ways, so that silent clients cannot shut senders out: a new connection must
    deliver its first message within ``first_message_timeout`` seconds, a message once begun must be complete
    within ``message_timeout`` seconds, and when ``max_connections`` (or ``max_connections_per_peer`` from one
    address) are open, the connection idle for longest makes room for the new one; only when none is idle is
    the new one refused.

    Parameters
    ----------
    address : (str, int)
        Bind address and port (port 0: any free port, see :attr:`port`).
    handler : FrameHandler
        Turns each frame into the reply to send (or None).
    ssl_context : ssl.SSLContext, optional
        Serve MLLP inside TLS.
    max_size : int
        Largest message in bytes.
    idle_timeout : float
        Seconds of silence after which a connection that has sent a message is closed.
    max_connections : int
        Connections served at once.
    handshake_timeout : float
        Seconds a TLS client has to finish its handshake.
    first_message_timeout : float
        Seconds a new connection has to deliver its first whole message.
    message_timeout : float
        Seconds a sender has to finish a message it has begun.
    max_connections_per_peer : int
        Connections served at once from one address.
    """

    #: socketserver's default backlog is 5; a HIS may open several connections at once.
    request_queue_size = 128

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: FrameHandler,
        ssl_context: ssl.SSLContext | None = None,
        max_size: int = 16 * 1024 * 1024,
        idle_timeout: float = 300.0,
        max_connections: int = 50,
        handshake_timeout: float = 10.0,
        first_message_timeout: float = 10.0,
        message_timeout: float = 60.0,
        max_connections_per_peer: int = 10,
    ) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.first_message_timeout = first_message_timeout
        self.message_timeout = message_timeout
        self.max_connections_per_peer = max_connections_per_peer
        self.stopping = False
        #: Open connections by their accepted socket.
        self._open: dict[socket.socket, _Conn] = {}
        self._evicted: set[int] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__(address, _Connection)

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.server_address[1])

    @property
    def open_connections(self) -> int:
        """Connections open right now."""
        with self._lock:
            return len(self._open)

    def verify_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: tuple[str, int] | str
    ) -> bool:
        assert isinstance(request, socket.socket)
        host = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        with self._lock:
            same_peer = [c for c in self._open.values() if c.host == host]
            if len(same_peer) >= self.max_connections_per_peer:
                pool, limit = same_peer, f"{self.max_connections_per_peer} connections from {host}"
            elif len(self._open) >= self.max_connections:
                pool, limit = list(self._open.values()), f"{self.max_connections} connections"
            else:
                pool, limit = [], ""
            victim: _Conn | None = None
            if limit:
                idle = [c for c in pool if c.state in ("idle", "starting") and id(c) not in self._evicted]
                # Idle ones first (the longest idle), then the oldest unfinished TLS handshake.
                victim = min(idle, key=lambda c: (c.state != "idle", c.last)) if idle else None
                if victim is None:
                    LOGGER.warning("HL7 connection from %s refused: %s open already, none idle", host, limit)
                    return False
                self._evicted.add(id(victim))
            conn = _Conn(request, host, time.monotonic())
            if self.ssl_context is not None:
                conn.handle = request.dup()
            else:
                conn.state = "idle"  # until its thread starts reading
            self._open[request] = conn
        if victim is not None:
            LOGGER.info(
                "HL7: %s open; closing the connection %s longest (from %s, %.0f s) for one from %s",
                limit,
                "idle" if victim.state == "idle" else "in a TLS handshake",
                victim.host,
                time.monotonic() - victim.last,
                host,
            )
            with contextlib.suppress(OSError):
                (victim.handle if victim.state == "starting" and victim.handle else victim.sock).shutdown(
                    socket.SHUT_RDWR
                )
        return True

    def connection(self, request: socket.socket) -> _Conn | None:
        """The record of an admitted connection (None if it is not open)."""
        with self._lock:
            return self._open.get(request)

    def evicted(self, conn: _Conn) -> bool:
        """Whether the server closed this connection to make room for another."""
        with self._lock:
            return id(conn) in self._evicted

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        with self._lock:
            conn = self._open.pop(request, None)  # type: ignore[arg-type]
            if conn is not None and conn.handle is not None:
                conn.handle.close()
            if conn is not None:
                self._evicted.discard(id(conn))
        super().shutdown_request(request)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, name=f"hl7-listener-{self.port}", daemon=True)
        self._thread.start()

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, close open connections (a message being applied finishes first)."""
        self.stopping = True
        self.shutdown()
        self.server_close()
        with self._lock:
            open_now = [c.sock for c in self._open.values()]
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)  # wakes recv(); a reply being sent still goes out
        if self._thread is not None:
            self._thread.join(grace)
