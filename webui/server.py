"""Serving the web app with waitress, over plain HTTP or HTTPS.

waitress is a production WSGI server, but it has no TLS. For HTTPS each accepted connection is handed to a
short-lived thread that runs the TLS handshake with a deadline (``tls.handshake``, so a client that says
nothing cannot stall the listener), then joins the decrypted stream to waitress through a socket pair. waitress
serves the pair exactly as a plain connection, with the real client address (for the rate limit and the audit
log) and ``wsgi.url_scheme = https``. The relay is a few microseconds per chunk; the benchmark runs plain HTTP.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from typing import Any

from waitress.server import create_server

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
    name : str
        What the log calls it ("web site", "DICOMweb").
    """

    def __init__(self, app: Any, host: str, port: int, threads: int = 8, ssl_context: ssl.SSLContext | None = None,
                 handshake_timeout: float = 10.0, name: str = "web site") -> None:
        self.app = app
        self.name = name
        self.host = host
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.server: Any = create_server(
            app, host=host, port=port, threads=threads, ident="appliance",
            url_scheme="https" if ssl_context else "http",
            # The token travels in the query string: keep waitress from putting request lines in its logs.
            expose_tracebacks=False, log_untrusted_proxy_headers=False, channel_timeout=120,
            connection_limit=200, clear_untrusted_proxy_headers=True,
        )
        logging.getLogger("waitress.queue").addFilter(_QUEUE_FILTER)  # addFilter skips a filter it has
        if ssl_context is not None:
            self.server.handle_accept = self._accept_tls
        self.port = int(self.server.effective_port)
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
        threading.Thread(target=self._serve_tls, args=(conn, addr), name="web-tls", daemon=True).start()

    def _serve_tls(self, conn: socket.socket, addr: Any) -> None:
        import tls

        assert self.ssl_context is not None
        try:
            tls_sock = tls.handshake(conn, self.ssl_context, self.handshake_timeout)
        except tls.HandshakeError as exc:
            LOGGER.info("%s", exc)
            return
        waitress_end, relay_end = socket.socketpair()
        server = self.server

        def adopt() -> None:
            # Runs in waitress's loop thread: the channel joins its socket map like an accepted connection.
            server.channel_class(server, waitress_end, addr, server.adj, map=server._map)

        server.trigger.pull_trigger(adopt)
        _relay(tls_sock, relay_end, server.adj.channel_timeout)
