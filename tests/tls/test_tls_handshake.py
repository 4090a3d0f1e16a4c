"""tls.handshake: the handshake runs per connection, so silent or plain-text clients cannot stall a TLS port.

Timing assertions are deliberately loose: an operation either finishes within a generous timeout (seconds,
for work that takes milliseconds) or it is blocked; no test measures how fast anything is.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tls.certs import Paths
from tls.contexts import client_context, server_context
from tls.errors import ClientClosedError, HandshakeError, HandshakeTimeoutError, PlainTextClientError
from tls.handshake import handshake

# Start of a DICOM A-ASSOCIATE-RQ PDU (type 0x01, reserved, 4-byte length), what a modality sends first.
ASSOCIATE_RQ_START = b"\x01\x00\x00\x00\x00\xcd\x00\x01"


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture
def server_ctx(pki: Paths) -> ssl.SSLContext:
    return server_context(pki.server_cert, pki.server_key)


@pytest.fixture
def client_ctx(pki: Paths) -> ssl.SSLContext:
    return client_context(ca=pki.ca_cert)


def test_silent_client_does_not_delay_another_handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    tls_server: Callable[..., Any],
    roundtrip: Callable[..., str],
) -> None:
    server = tls_server(server_ctx, timeout=60.0)
    silent = socket.create_connection(("127.0.0.1", server.port))
    try:
        # the silent connection has been accepted and its handshake is under way in its own thread
        _wait_for(lambda: server.handshakes_started == 1)
        # a well-behaved client is served meanwhile
        assert roundtrip(client_ctx, server.port, timeout=10.0) in {"TLSv1.2", "TLSv1.3"}
        assert server.accepted.get(timeout=5)["version"] in {"TLSv1.2", "TLSv1.3"}
        # ... while the silent client is still connected, silent, and its handshake still pending
        assert server.failures.empty()
        silent.setblocking(False)
        with pytest.raises(BlockingIOError):
            silent.recv(1)
    finally:
        silent.close()
    # once it leaves, its handshake ends with a clear error
    assert isinstance(server.failures.get(timeout=10), ClientClosedError)


class _NaiveServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """What pynetdicom 3.0 does: the handshake inside get_request, that is, in the accept loop."""

    daemon_threads = True

    def __init__(self, ctx: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.ctx = ctx

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        return self.ctx.wrap_socket(sock, server_side=True), address


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request.recv(64)
        if data:
            self.request.sendall(data)


@pytest.fixture
def naive_server(server_ctx: ssl.SSLContext) -> Iterator[_NaiveServer]:
    server = _NaiveServer(server_ctx)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_control_accept_loop_handshake_is_blocked_by_a_silent_client(
    naive_server: _NaiveServer, client_ctx: ssl.SSLContext, roundtrip: Callable[..., str]
) -> None:
    """Shows the test above measures something: the same scenario stalls the naive server."""
    port = naive_server.server_address[1]
    silent = socket.create_connection(("127.0.0.1", port))
    try:
        with pytest.raises(TimeoutError):
            roundtrip(client_ctx, port, timeout=2.0)
    finally:
        silent.close()
    # with the silent client gone the naive server works again
    assert roundtrip(client_ctx, port, timeout=10.0)


@pytest.mark.parametrize(
    ("first_bytes", "hint"),
    [
        (ASSOCIATE_RQ_START, "it looks like plain DICOM"),
        (b"\x0bMSH|^~\\&|RIS", "it looks like plain HL7"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "it looks like plain HTTP"),
    ],
)
def test_plain_text_client_gets_a_clean_error(
    server_ctx: ssl.SSLContext, tls_server: Callable[..., Any], first_bytes: bytes, hint: str
) -> None:
    server = tls_server(server_ctx, timeout=30.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5.0) as plain:
        plain.sendall(first_bytes)
        # the server hangs up at once rather than leaving the client waiting for an answer; the unread bytes
        # may make the kernel turn the close into a reset, which ends the connection just as well
        with contextlib.suppress(ConnectionResetError):
            assert plain.recv(64) == b""
    failure = server.failures.get(timeout=5)
    assert isinstance(failure, PlainTextClientError)
    assert "client spoke plain TCP to the TLS port" in str(failure)
    assert hint in str(failure)
    assert failure.exit_code == 5


def test_silent_client_times_out(server_ctx: ssl.SSLContext, tls_server: Callable[..., Any]) -> None:
    server = tls_server(server_ctx, timeout=0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10.0) as silent:
        assert silent.recv(1) == b""  # closed by the server
    failure = server.failures.get(timeout=5)
    assert isinstance(failure, HandshakeTimeoutError)
    assert "sent nothing within 0.3 s" in str(failure)


def test_stalled_handshake_times_out(server_ctx: ssl.SSLContext, tls_server: Callable[..., Any]) -> None:
    """A client that starts a TLS record and stops is cut off by the overall deadline."""
    server = tls_server(server_ctx, timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10.0) as slow:
        slow.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello record header, then nothing
        assert slow.recv(1) == b""
    failure = server.failures.get(timeout=5)
    assert isinstance(failure, HandshakeTimeoutError)
    assert "not finished within 0.5 s" in str(failure)


def test_client_that_leaves_at_once(server_ctx: ssl.SSLContext, tls_server: Callable[..., Any]) -> None:
    server = tls_server(server_ctx, timeout=10.0)
    socket.create_connection(("127.0.0.1", server.port)).close()
    failure = server.failures.get(timeout=5)
    assert isinstance(failure, ClientClosedError)
    assert "closed the connection" in str(failure)


def test_handshake_function_directly(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """Without any server framework: accept, hand the socket to a thread, handshake there."""
    results: queue.Queue[ssl.SSLSocket | HandshakeError] = queue.Queue()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                results.put(handshake(conn, server_ctx, timeout=10.0))
            except HandshakeError as exc:
                results.put(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10.0) as raw,
            client_ctx.wrap_socket(raw, server_hostname="localhost") as client,
        ):
            tls_sock = results.get(timeout=10)
            assert isinstance(tls_sock, ssl.SSLSocket)
            assert tls_sock.gettimeout() is None  # the accepted socket's blocking mode is restored
            client.sendall(b"hello")
            assert tls_sock.recv(5) == b"hello"
            tls_sock.close()
        thread.join(timeout=10)
