"""Socket reads and writes of the fast path: whole PDUs, prompt ACKs, quiet closes."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
RELEASE_RP = b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"


def abort_pdu(source: int, reason: int) -> bytes:
    """An A-ABORT PDU with the given source and reason/diagnostic."""
    return b"\x07\x00\x00\x00\x00\x04\x00\x00" + bytes((source, reason))


#: A read of more bytes than this grows its buffer as data arrives (a declared length allocates nothing).
CHUNK = 1024 * 1024


def recv_exact(sock: socket.socket, count: int, deadline: float | None = None) -> bytearray:
    """Read ``count`` bytes (fewer when the peer closes); raises OSError/TimeoutError.

    Parameters
    ----------
    sock : socket.socket
        The connection (with a ``deadline``, its timeout is set per read and restored at the end).
    count : int
        Bytes to read. Up to :data:`CHUNK` the buffer is allocated at once (the usual PDU); beyond, it
        grows with what arrives, so memory follows the bytes received, not the length a peer declared.
    deadline : float, optional
        ``time.monotonic()`` by which all of it must have arrived (TimeoutError after), however slowly
        a peer trickles it.
    """
    if count > CHUNK:
        buf = bytearray()
        while len(buf) < count:
            want = min(CHUNK, count - len(buf))
            part = recv_exact(sock, want, deadline)
            buf += part
            if len(part) < want:  # the peer closed
                break
        return buf
    previous = sock.gettimeout() if deadline is not None else None
    try:
        return _recv_into(sock, count, deadline)
    finally:
        if deadline is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(previous)  # the deadline's last timeout must not stay for the next send


def _recv_into(sock: socket.socket, count: int, deadline: float | None) -> bytearray:
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
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                view.release()
                raise TimeoutError("the peer did not send the rest in time")
            sock.settimeout(left)
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
