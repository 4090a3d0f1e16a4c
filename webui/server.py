"""Serving the web app with waitress, over plain HTTP or HTTPS.

waitress closes a connection only after ``channel_timeout`` seconds *without a byte*, and stops accepting once
``connection_limit`` connections are open: a few hundred connections that trickle a request header a byte at
a time took the site down for everyone. :class:`GuardedChannel` gives every request a total header deadline
(``[web] header_timeout`` from its first byte, or from the connection for the first request), and the
accept hook caps the connections of one client address (``[web] max_connections_per_client``): at the cap,
the client's connection that has waited longest in the middle of a header, or idle between requests, makes
room for the new one. The connection limit (``[web] max_connections``) is polled, not selected, so it may
exceed 1024 descriptors.

waitress is a production WSGI server, but it has no TLS. For HTTPS each accepted connection is handed to a
short-lived thread that runs the TLS handshake with a deadline (``tls.handshake``, so a client that says
nothing cannot stall the listener), then joins the decrypted stream to waitress through a socket pair. waitress
serves the pair exactly as a plain connection, with the real client address (for the rate limit and the audit
log) and ``wsgi.url_scheme = https``. The relay is a few microseconds per chunk; the benchmark runs plain HTTP.

Large answers made of stored files (a whole study as stored, for DICOMweb) are not yielded as bytes: the app
hands the list of files to :data:`SEND_PARTS` and the channel sends them with ``os.sendfile``, from the page
cache to the socket, in waitress's own output queue and flush loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import WSGITask

LOGGER = logging.getLogger(__name__)

_CHUNK = 65536
#: Seconds between two "Task queue depth" warnings of waitress.
_QUEUE_WARNING_SECONDS = 60.0


class QueueWarningFilter(logging.Filter):
    """Let through one of waitress's "Task queue depth is N" warnings a minute, with the count of the others.

    waitress logs one for every request that finds all its threads busy: under load that is a line per request,
    which filled the log and cost the busy server a few percent of its time.
    """

    def __init__(self, interval: float = _QUEUE_WARNING_SECONDS) -> None:
        super().__init__()
        self.interval = interval
        self._last = float("-inf")
        self._dropped = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        """Pass the first record of each interval."""
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.interval:
                self._dropped += 1
                return False
            self._last, dropped, self._dropped = now, self._dropped, 0
        if dropped:
            record.msg = f"{record.msg} ({dropped} more such warnings since the last one)"
        return True


_QUEUE_FILTER = QueueWarningFilter()

#: Seconds between two passes of the header-deadline check (waitress's "cleanup interval").
_CHECK_INTERVAL = 1


class FilePart(NamedTuple):
    """A whole file of an answer body, sent from the page cache with ``os.sendfile`` (see :data:`SEND_PARTS`)."""

    path: str
    #: Its length as announced in Content-Length: a file of another length ends the answer (connection closed).
    size: int


#: WSGI environ key of a function that sends a whole answer body made of bytes and :class:`FilePart` items.
#: The app calls it from its response iterable, once, instead of yielding the bytes; the status and headers it
#: started are sent first and its Content-Length must be the body's length. The stored files are then sent by
#: the kernel (``os.sendfile``) from the page cache to the socket: waitress copies yielded bytes into its output
#: buffer and spills them to a temporary file past 1 MB, which made a 50 MB WADO-RS answer slower than
#: Orthanc's. Only servers of :class:`WebServer` provide it (the Flask test client does not: apps fall back to
#: yielding bytes).
SEND_PARTS = "appliance.send_parts"
_DISCONNECTED = frozenset(
    {errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED, errno.EPIPE, errno.EBADF}
)


def _length(part: bytes | FilePart) -> int:
    """How many bytes a part of a :class:`PartsBuffer` body adds."""
    return part.size if isinstance(part, FilePart) else len(part)


class FileChanged(OSError):
    """A file of a :class:`PartsBuffer` is missing or has another length than announced."""


class PartsBuffer(ReadOnlyFileBasedBuffer):
    """An answer body of bytes and whole files for waitress's output queue.

    waitress keeps instances of :class:`ReadOnlyFileBasedBuffer` in its queue as they are (no copy);
    :meth:`GuardedChannel._flush_some` sends this one with :meth:`send_to`. One file is open at a time (a
    study of thousands of instances does not hold thousands of descriptors), and nothing of the files enters
    the process's memory. :meth:`get` and :meth:`skip` are waitress's own buffer protocol, kept working.
    """

    def __init__(self, parts: Sequence[bytes | FilePart]) -> None:  # no super(): there is no single file
        self.parts: deque[bytes | FilePart] = deque(p for p in parts if _length(p))
        self.remain = sum(map(_length, self.parts))
        self.file = None
        self._fd = -1
        self._offset = 0  # into the first part

    def _open(self, part: FilePart) -> int:
        if self._fd < 0:
            try:
                fd = os.open(part.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise FileChanged(exc.errno, f"{part.path} cannot be read: {exc.strerror}") from exc
            size = os.fstat(fd).st_size
            if size != part.size:
                os.close(fd)
                raise FileChanged(errno.EIO, f"{part.path} is {size} bytes, {part.size} were announced")
            self._fd = fd
        return self._fd

    def _advance(self, count: int) -> None:
        part = self.parts[0]
        self._offset += count
        self.remain -= count
        if self._offset == _length(part):
            self.parts.popleft()
            self._offset = 0
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def send_to(self, sock: socket.socket) -> int:
        """Send from the current part with one system call; the bytes sent (OSError as ``socket.send``)."""
        part = self.parts[0]
        if isinstance(part, FilePart):
            sent = os.sendfile(sock.fileno(), self._open(part), self._offset, part.size - self._offset)
            if not sent:  # a full socket raises EAGAIN: 0 is the end of a file cut short since it was opened
                raise FileChanged(errno.EIO, f"{part.path} is shorter than announced")
        else:
            # A part head: held back until the file behind it fills the packet.
            more = socket.MSG_MORE if len(self.parts) > 1 and sock.family in (socket.AF_INET, socket.AF_INET6) else 0
            sent = sock.send(memoryview(part)[self._offset :], more)
        if sent:
            self._advance(sent)
        return sent

    def get(self, numbytes: int = -1, skip: bool = False) -> bytes:
        """Up to ``numbytes`` of the current part (waitress's buffer protocol)."""
        if not self.parts:
            return b""
        part = self.parts[0]
        size = _length(part)
        count = size - self._offset if numbytes < 0 else min(numbytes, size - self._offset)
        if isinstance(part, FilePart):
            data = os.pread(self._open(part), count, self._offset)
            if len(data) != count:
                raise FileChanged(errno.EIO, f"{part.path} is shorter than announced")
        else:
            data = part[self._offset : self._offset + count]
        if skip:
            self._advance(len(data))
        return data

    def skip(self, numbytes: int, allow_prune: int = 0) -> None:
        """Drop ``numbytes`` already sent (waitress's buffer protocol)."""
        while numbytes:
            part = self.parts[0]
            count = min(numbytes, _length(part) - self._offset)
            self._advance(count)
            numbytes -= count

    def prepare(self, size: int | None = None) -> int:
        """The length to send (waitress's file-wrapper protocol)."""
        return int(self.remain)

    def close(self) -> None:
        """Close the open file, drop the rest."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.parts.clear()
        self.remain = 0


class PartsTask(WSGITask):
    """waitress's WSGI task, with :data:`SEND_PARTS` in the environ."""

    def get_environment(self) -> dict[str, Any]:
        """The WSGI environ, with the function that sends bodies of files."""
        environ: dict[str, Any] = super().get_environment()
        environ[SEND_PARTS] = self.send_parts
        return environ

    def send_parts(self, parts: Sequence[bytes | FilePart]) -> None:
        """Queue a whole body of bytes and files after the status line and headers (see :data:`SEND_PARTS`)."""
        buffer = PartsBuffer(parts)
        if self.chunked_response or self.content_length != len(buffer) or self.content_bytes_written:
            raise RuntimeError("send_parts needs a Content-Length of the whole body and nothing written before")
        self.write(b"")  # the status line and headers
        self.channel.write_soon(buffer)
        self.content_bytes_written += len(buffer)


#: The type of :data:`SEND_PARTS`'s value.
SendParts = Callable[[Sequence[bytes | FilePart]], None]


class GuardedChannel(HTTPChannel):
    """waitress's HTTP channel with a deadline for each request's header.

    :attr:`header_deadline` is when the header being received must be complete (None while no header is
    pending: a request is being served, or the connection is idle between requests). The server's
    maintenance pass closes channels past it.
    """

    task_class = PartsTask

    def __init__(self, server: Any, sock: socket.socket, addr: Any, adj: Any, map: Any = None) -> None:
        self.header_deadline: float | None = time.time() + server.header_timeout
        super().__init__(server, sock, addr, adj, map)

    def received(self, data: bytes) -> bool:
        """Parse what arrived, then move the header deadline: set at a new request's first byte, cleared at
        its header's end."""
        result = bool(super().received(data))
        request = self.request
        if request is None or request.headers_finished:
            self.header_deadline = None
        elif self.header_deadline is None:
            self.header_deadline = time.time() + self.server.header_timeout
        return result

    def _flush_some(self, do_close: bool = True) -> bool:
        """waitress's flush (its loop, rewritten), with :class:`PartsBuffer` bodies sent by ``os.sendfile``.

        Called with the output lock held, or from the loop thread when no task runs, like waitress's own.
        """
        sent = 0
        while True:
            outbuf = self.outbufs[0]
            remaining = len(outbuf)
            while remaining > 0:
                try:
                    if isinstance(outbuf, PartsBuffer):
                        count = self._send_parts(outbuf, do_close)
                    else:
                        count = self.send(outbuf.get(self.sendbuf_len), do_close=do_close)
                        if count:
                            outbuf.skip(count, True)
                except FileChanged as exc:
                    # The headers are out: the client sees a short answer, not a wrong one.
                    LOGGER.error("web: answer to %s ended early: %s", self.addr[0] if self.addr else "?", exc.strerror)
                    self.total_outbufs_len -= len(outbuf)
                    outbuf.close()
                    self.will_close = True
                    count = 0
                if not count:
                    break
                remaining -= count
                sent += count
                self.total_outbufs_len -= count
            else:
                # waitress keeps a writable buffer last
                if len(self.outbufs) > 1:
                    done = self.outbufs.pop(0)
                    try:
                        done.close()
                    except Exception:
                        self.logger.exception("Unexpected error when closing an outbuf")
                    continue
            break
        if sent:
            self.last_activity = time.time()
            return True
        return False

    def _send_parts(self, buffer: PartsBuffer, do_close: bool) -> int:
        """One ``sendfile`` (or ``send`` of a part head); 0 when the socket is full or gone (as ``send``)."""
        try:
            return buffer.send_to(self.socket)
        except FileChanged:
            raise
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return 0
            if exc.errno in _DISCONNECTED:
                if do_close:
                    self.handle_close()
                return 0
            raise

    @property
    def waiting(self) -> bool:
        """Nothing of ours depends on this connection: no request running, nothing to send."""
        return not self.requests and not self.total_outbufs_len and not self.will_close


def _maintenance(server: Any, original: Any) -> Any:
    def maintenance(now: float) -> None:
        original(now)
        late = [
            c
            for c in list(server.active_channels.values())
            if isinstance(c, GuardedChannel) and c.header_deadline is not None and c.header_deadline < now and c.waiting
        ]
        for channel in late:
            channel.will_close = True  # the loop closes it at its next pass
        if late:
            LOGGER.info(
                "web: %d connection(s) closed that did not send a request header within %.0f s",
                len(late),
                server.header_timeout,
            )

    return maintenance


def _relay(tls_sock: ssl.SSLSocket, plain: socket.socket, idle_timeout: float) -> None:
    """Copy bytes both ways between the TLS socket and waitress's end of the pair until either side closes."""
    tls_sock.setblocking(False)
    plain.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(tls_sock, selectors.EVENT_READ)
    selector.register(plain, selectors.EVENT_READ)
    try:
        while True:
            # Decrypted bytes may wait inside the SSL object, invisible to select().
            ready = [tls_sock] if tls_sock.pending() else [k.fileobj for k, _ in selector.select(idle_timeout)]
            if not ready:
                return  # idle for too long
            for source in ready:
                target = plain if source is tls_sock else tls_sock
                try:
                    data = source.recv(_CHUNK)  # type: ignore[union-attr]
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    continue
                if not data:
                    return
                target.setblocking(True)
                target.settimeout(idle_timeout)
                try:
                    target.sendall(data)
                finally:
                    target.setblocking(False)
    except (OSError, ValueError):
        return
    finally:
        selector.close()
        for sock in (tls_sock, plain):
            with contextlib.suppress(OSError):
                sock.close()


class WebServer:
    """The web app on a waitress server, started in a thread and stopped cleanly.

    Parameters
    ----------
    app : WSGI callable
        The Flask app.
    host, port : str, int
        Where to listen (port 0 picks a free one; see :attr:`port` after :meth:`start`).
    threads : int
        waitress worker threads.
    ssl_context : ssl.SSLContext, optional
        Serve HTTPS with this server context.
    handshake_timeout : float
        Seconds a client has to finish the TLS handshake.
    header_timeout : float
        Seconds a client has to send a whole request header, from its first byte (from the connection for
        the first request).
    max_connections : int
        Connections open at once (waitress's ``connection_limit``).
    max_connections_per_client : int
        Connections open at once from one client address.
    name : str
        What the log calls it ("web site", "DICOMweb").
    recv_bytes : int
        Bytes read from a connection at a time (waitress's ``recv_bytes``, 8 KB by default): DICOMweb takes
        50 MB uploads, which 8 KB reads (each appended to the spooled body) made slow.
    """

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        threads: int = 8,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
        header_timeout: float = 10.0,
        max_connections: int = 1000,
        max_connections_per_client: int = 50,
        name: str = "web site",
        recv_bytes: int = 8192,
    ) -> None:
        self.app = app
        self.name = name
        self.host = host
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.max_connections_per_client = max_connections_per_client
        self.server: Any = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="appliance",
            url_scheme="https" if ssl_context else "http",
            # The token travels in the query string: keep waitress from putting request lines in its logs.
            expose_tracebacks=False,
            log_untrusted_proxy_headers=False,
            channel_timeout=120,
            connection_limit=max_connections,
            clear_untrusted_proxy_headers=True,
            cleanup_interval=_CHECK_INTERVAL,
            asyncore_use_poll=True,  # select() stops at descriptor 1024
            recv_bytes=recv_bytes,
        )
        server = self.server
        server.header_timeout = header_timeout
        server.channel_class = GuardedChannel
        server.maintenance = _maintenance(server, server.maintenance)
        logging.getLogger("waitress.queue").addFilter(_QUEUE_FILTER)  # addFilter skips a filter it has
        server.handle_accept = self._accept_tls if ssl_context is not None else self._accept
        self._refused = 0
        #: Sockets in a TLS handshake, oldest first, by client address.
        self._handshakes: dict[str, list[socket.socket]] = {}
        self._handshake_lock = threading.Lock()
        self.port = int(server.effective_port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. ``http://127.0.0.1:3000``."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.server.run, name="web", daemon=True)
        self._thread.start()
        LOGGER.info("%s on %s", self.name, self.url)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, let running requests end (up to ``timeout`` seconds), close the connections."""
        server = self.server
        # Closing from the loop's own thread avoids racing its select(); pull_trigger wakes the loop up.
        server.trigger.pull_trigger(self._close_all)
        if self._thread is not None:
            self._thread.join(timeout)
        server.task_dispatcher.shutdown(timeout=timeout)
        LOGGER.info("%s stopped", self.name)

    def _close_all(self) -> None:
        server = self.server
        for channel in list(server._map.values()):
            if channel is not server.trigger:
                channel.close()
        server.trigger.close()

    # -- accepting ----------------------------------------------------------------------------------

    def _make_room(self, host: str) -> bool:
        """Whether a new connection from ``host`` may be served: under the per-client cap, or after closing the
        client's connection that has waited longest (in the middle of a header, or idle). Loop thread only."""
        mine = [
            c
            for c in self.server.active_channels.values()
            if isinstance(c, GuardedChannel) and c.addr and c.addr[0] == host and not c.will_close
        ]
        if len(mine) < self.max_connections_per_client:
            return True
        idle = [c for c in mine if c.waiting]
        if not idle:
            self._refused += 1
            if self._refused in (1, 10, 100) or self._refused % 1000 == 0:
                LOGGER.warning(
                    "web: connection from %s refused: %d connections of it open, all busy (%d refused so far)",
                    host,
                    len(mine),
                    self._refused,
                )
            return False
        # Stalled headers first (their deadline is nearest), then the longest idle.
        victim = min(idle, key=lambda c: (c.header_deadline is None, c.header_deadline or c.last_activity))
        victim.handle_close()
        return True

    def _accept(self) -> None:
        """waitress's accept hook for HTTP, with the per-client cap."""
        try:
            accepted = self.server.accept()
        except OSError:
            return
        if accepted is None:
            return
        conn, addr = accepted
        if not self._make_room(addr[0]):
            with contextlib.suppress(OSError):
                conn.close()
            return
        server = self.server
        try:
            # waitress's own accept sets TCP_NODELAY here: without it a small answer waits ~40 ms for the
            # client's delayed ACK (Nagle).
            server.set_socket_options(conn)
        except OSError:
            with contextlib.suppress(OSError):
                conn.close()
            return
        server.channel_class(server, conn, addr, server.adj, map=server._map)

    # -- HTTPS ------------------------------------------------------------------------------------

    def _accept_tls(self) -> None:
        """waitress's accept hook for HTTPS: hand the raw connection to a handshake thread."""
        try:
            accepted = self.server.accept()
        except OSError:
            return
        if accepted is None:
            return
        conn, addr = accepted
        with contextlib.suppress(OSError):
            self.server.set_socket_options(conn)  # TCP_NODELAY, as waitress's own accept does
        host = addr[0]
        # Handshakes run in threads before waitress sees the connection: they are capped like connections, or
        # clients that never say hello would each hold a thread. At the per-client cap the oldest handshake of
        # the address (a silent or slow client) is cut to make room.
        victim: socket.socket | None = None
        with self._handshake_lock:
            total = sum(len(v) for v in self._handshakes.values())
            pending = self._handshakes.setdefault(host, [])
            admitted = total < self.server.adj.connection_limit
            if admitted and len(pending) >= self.max_connections_per_client:
                victim = pending.pop(0)
            if admitted:
                # A second descriptor of the socket: the handshake wraps (detaches) the first one.
                handle = conn.dup()
                pending.append(handle)
            elif not pending:
                del self._handshakes[host]
        if victim is not None:
            with contextlib.suppress(OSError):
                victim.shutdown(socket.SHUT_RDWR)  # its handshake fails at once; its thread ends
            victim.close()
        if not admitted:
            self._refused += 1
            if self._refused in (1, 10, 100) or self._refused % 1000 == 0:
                LOGGER.warning(
                    "web: TLS connection from %s refused: %d handshakes under way (%d refused so far)",
                    host,
                    total,
                    self._refused,
                )
            with contextlib.suppress(OSError):
                conn.close()
            return
        threading.Thread(target=self._serve_tls, args=(conn, addr, handle), name="web-tls", daemon=True).start()

    def _handshake_done(self, host: str, handle: socket.socket) -> None:
        with self._handshake_lock:
            pending = self._handshakes.get(host, [])
            if handle in pending:
                pending.remove(handle)
                handle.close()
            if not pending:
                self._handshakes.pop(host, None)

    def _serve_tls(self, conn: socket.socket, addr: Any, handle: socket.socket) -> None:
        import tls

        assert self.ssl_context is not None
        try:
            tls_sock = tls.handshake(conn, self.ssl_context, self.handshake_timeout)
        except tls.HandshakeError as exc:
            LOGGER.info("%s", exc)
            return
        finally:
            self._handshake_done(addr[0], handle)
        waitress_end, relay_end = socket.socketpair()
        server = self.server

        def adopt() -> None:
            # Runs in waitress's loop thread: the channel joins its socket map like an accepted connection.
            if not self._make_room(addr[0]):
                waitress_end.close()  # the relay sees the close and ends
                return
            server.channel_class(server, waitress_end, addr, server.adj, map=server._map)

        server.trigger.pull_trigger(adopt)
        _relay(tls_sock, relay_end, server.adj.channel_timeout)
