"""Socket reads and writes of the fast path: whole PDUs, prompt ACKs, quiet closes."""

from __future__ import annotations

import contextlib
import socket
import ssl

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
RELEASE_RP = b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"


def abort_pdu(source: int, reason: int) -> bytes:
    """An A-ABORT PDU with the given source and reason/diagnostic."""
    return b"\x07\x00\x00\x00\x00\x04\x00\x00" + bytes((source, reason))


def recv_exact(sock: socket.socket, count: int) -> bytearray:
    """Read ``count`` bytes (fewer when the peer closes); raises OSError/TimeoutError."""
    buf = bytearray(count)
    view = memoryview(buf)
    got = 0
    plain = not isinstance(sock, ssl.SSLSocket)
    while got < count:
        if plain and _QUICKACK is not None:
            # Linux clears QUICKACK after a while; re-armed so that a Nagle-enabled sender (DCMTK's
            # default) is not held ~40 ms by our delayed ACK before it sends the rest of a message.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        n = sock.recv_into(view[got:], count - got)
        if not n:
            view.release()
            del buf[got:]
            return buf
        got += n
    return buf


def close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def send_buffers(sock: socket.socket, buffers: list[bytes | memoryview]) -> None:
    """Send several buffers in as few system calls as the kernel takes (``sendmsg``); TLS sockets: one ``sendall``.

    A 512 KB instance in 16 KB PDUs is 64 buffers: one ``sendmsg`` instead of 64 ``sendall`` calls.
    """
    if isinstance(sock, ssl.SSLSocket):
        sock.sendall(b"".join(buffers))
        return
    pending = [memoryview(b).cast("B") for b in buffers if len(b)]
    while pending:
        sent = sock.sendmsg(pending[:1024])  # IOV_MAX is 1024 on Linux
        while sent:
            head = pending[0]
            if sent >= len(head):
                sent -= len(head)
                pending.pop(0)
            else:
                pending[0] = head[sent:]
                sent = 0
