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
                del buf[:start + 1]
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


class _Connection(socketserver.BaseRequestHandler):
    server: MLLPServer

    def handle(self) -> None:
        srv = self.server
        sock: socket.socket = self.request
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        if srv.ssl_context is not None:
            try:
                sock = tls.handshake(sock, srv.ssl_context, srv.handshake_timeout)
            except tls.HandshakeError as exc:
                LOGGER.warning("HL7 TLS connection from %s failed: %s", peer, exc)
                return
        with srv.track(sock):
            self._serve(sock, peer)

    def _serve(self, sock: socket.socket, peer: str) -> None:
        srv = self.server
        sock.settimeout(srv.idle_timeout)
        reader = FrameReader(srv.max_size)
        LOGGER.debug("HL7 connection from %s", peer)
        count = 0
        try:
            while not srv.stopping:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    LOGGER.info("HL7 connection from %s idle for %.0f s: closed", peer, srv.idle_timeout)
                    return
                except (OSError, ssl.SSLError) as exc:
                    if not srv.stopping:
                        LOGGER.warning("HL7 connection from %s broken: %s", peer, exc)
                    return
                if not data:
                    break
                for item in reader.feed(data):
                    count += 1
                    reply = srv.handler(item, peer)
                    if reply is not None:
                        try:
                            sock.sendall(frame(reply))
                        except OSError as exc:
                            LOGGER.warning("HL7 ACK to %s not sent: %s", peer, exc)
                            return
            if reader.partial:
                LOGGER.warning("HL7 sender %s disconnected in the middle of a message: %d byte(s) discarded", peer,
                               reader.partial)
        finally:
            if reader.garbage:
                LOGGER.warning("HL7 connection from %s: %d byte(s) outside MLLP frames ignored", peer,
                               reader.garbage)
            LOGGER.debug("HL7 connection from %s closed after %d message(s)", peer, count)


class MLLPServer(socketserver.ThreadingTCPServer):
    """A threaded MLLP listener.

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
        Seconds of silence after which a connection is closed.
    max_connections : int
        Connections served at once; more are closed at once with a warning.
    handshake_timeout : float
        Seconds a TLS client has to finish its handshake.
    """

    #: socketserver's default backlog is 5; a HIS may open several connections at once.
    request_queue_size = 128

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: FrameHandler, ssl_context: ssl.SSLContext | None = None,
                 max_size: int = 16 * 1024 * 1024, idle_timeout: float = 300.0, max_connections: int = 50,
                 handshake_timeout: float = 10.0) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.stopping = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__(address, _Connection)

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.server_address[1])

    def verify_request(self, request: socket.socket | tuple[bytes, socket.socket],
                       client_address: tuple[str, int] | str) -> bool:
        with self._lock:
            busy = len(self._open) >= self.max_connections
        if busy:
            LOGGER.warning("HL7 connection from %s refused: %d connections open already", client_address,
                           self.max_connections)
        return not busy

    def track(self, sock: socket.socket) -> _Tracked:
        """Context manager that lists a connection as open (for :meth:`stop`)."""
        return _Tracked(self, sock)

    def _add(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _remove(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

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
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)  # wakes recv(); a reply being sent still goes out
        if self._thread is not None:
            self._thread.join(grace)


class _Tracked:
    def __init__(self, server: MLLPServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock

    def __enter__(self) -> None:
        self.server._add(self.sock)

    def __exit__(self, *exc: object) -> None:
        self.server._remove(self.sock)
