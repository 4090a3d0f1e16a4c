"""The web servers set TCP_NODELAY on accepted connections, as waitress's own accept does.

Without it a small answer sent in two writes waits for the client's delayed ACK (Nagle): about 40 ms per request
on Linux, which is what bench/dicomweb showed for one-match QIDO searches.
"""

from __future__ import annotations

import socket
from typing import Any

from webui.server import WebServer

from conftest import HOST, wait_until


def _app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _served_sockets(server: WebServer) -> list[socket.socket]:
    """The server's sockets of accepted TCP connections (not the listener, not waitress's trigger)."""
    out = []
    for channel in list(server.server._map.values()):
        sock = getattr(channel, "socket", None)
        if channel is server.server or not isinstance(sock, socket.socket) or sock.family != socket.AF_INET:
            continue
        try:
            sock.getpeername()
        except OSError:
            continue
        out.append(sock)
    return out


def test_accepted_connections_have_nodelay() -> None:
    server = WebServer(_app, HOST, 0, threads=1)
    server.start()
    try:
        with socket.create_connection((HOST, server.port)) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(1024).startswith(b"HTTP/1.1 200")
            (accepted,) = wait_until(lambda: _served_sockets(server), timeout=10)
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        server.stop()
