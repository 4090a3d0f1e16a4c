"""Server-side TLS handshakes that cannot stall an accept loop.

pynetdicom's ``AssociationServer.get_request`` (like many ``socketserver`` recipes) wraps each accepted
socket with ``do_handshake_on_connect=True`` inside the accept loop. One client that opens a TCP connection
and says nothing then blocks every other client of that port until it leaves (reproduced: a second TLS
association timed out after 15 s). The fix is the one used by dcm4che, fo-dicom and several web servers:
accept the raw socket, and run the handshake, with a deadline, in the thread that serves that connection.

:func:`handshake` does that for one socket; :class:`DeferredHandshakeMixin` does it for any
``socketserver.ThreadingMixIn`` server, pynetdicom's ``ThreadedAssociationServer`` included.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import time
from typing import Any

from tls.errors import ClientClosedError, HandshakeError, HandshakeTimeoutError, PlainTextClientError

LOGGER = logging.getLogger(__name__)

#: Seconds a client gets to finish the handshake, from accept to the end of the handshake.
DEFAULT_TIMEOUT = 10.0

# First byte of a TLS record carrying a handshake message (ClientHello): RFC 8446 section 5.1, ContentType 22.
_TLS_HANDSHAKE_RECORD = 0x16

# Plain words for the OpenSSL reasons an administrator meets when a modality is misconfigured.
_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client sent no certificate, and one is required",
    "CERTIFICATE_VERIFY_FAILED": "the client's certificate is not trusted",
    "UNSUPPORTED_PROTOCOL": "the client offers only TLS versions older than 1.2",
    "NO_SHARED_CIPHER": "the client offers none of the allowed suites (ECDHE with AES-GCM or ChaCha20)",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "the client offers no signature algorithm fit for this certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust this server's certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client rejected this server's certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the client rejected this server's certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the client says a certificate has expired",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the client refused the TLS version",
    "WRONG_VERSION_NUMBER": "the client does not speak TLS 1.2 or 1.3",
    "HTTP_REQUEST": "the client spoke plain HTTP to the TLS port",
}


def _peer(sock: socket.socket) -> str:
    try:
        address = sock.getpeername()
    except OSError:
        return "client"
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address)


def _guess_protocol(first: int) -> str:
    # Enough to tell an administrator which device is pointed at the wrong port.
    if first == 0x01:
        return "; it looks like plain DICOM (A-ASSOCIATE-RQ)"
    if first == 0x0B:
        return "; it looks like plain HL7 over MLLP"
    if chr(first) in "GPHDOCT":
        return "; it looks like plain HTTP"
    return ""


def _describe_ssl_error(exc: ssl.SSLError) -> str:
    reason = exc.reason or ""
    text = _REASONS.get(reason, "")
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        text = f"{text or 'certificate verification failed'} ({exc.verify_message})"
    return text or str(exc)


def handshake(sock: socket.socket, ctx: ssl.SSLContext, timeout: float = DEFAULT_TIMEOUT) -> ssl.SSLSocket:
    """Run the server side of a TLS handshake on an accepted socket, within `timeout` seconds.

    Call it in the thread that serves the connection, never in the accept loop. The first byte is peeked
    first, so a client that speaks plain DICOM, HL7 or HTTP gets its own error instead of an OpenSSL one.

    Parameters
    ----------
    sock : socket.socket
        Accepted, not yet wrapped. It belongs to this function from now on: on failure it is closed.
    ctx : ssl.SSLContext
        Server context, e.g. from :func:`tls.contexts.server_context`.
    timeout : float
        Seconds for the whole handshake, from the call to its end (not per read, so a client that trickles
        bytes cannot hold the thread longer).

    Returns
    -------
    ssl.SSLSocket
        The encrypted connection, with `sock`'s original timeout restored.

    Raises
    ------
    HandshakeTimeoutError
        The client sent nothing, or did not finish, within `timeout`.
    PlainTextClientError
        The first byte is not a TLS handshake record: the client spoke plain TCP to the TLS port.
    ClientClosedError
        The client disconnected before or during the handshake.
    HandshakeError
        Any other handshake failure (untrusted or missing client certificate, TLS 1.1, no common cipher); the
        message says which in plain words.
    """
    peer = _peer(sock)
    previous_timeout = sock.gettimeout()
    deadline = time.monotonic() + timeout
    try:
        sock.settimeout(timeout)
        first = sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        sock.close()
        raise HandshakeTimeoutError(
            f"TLS handshake with {peer} failed: the client sent nothing within {timeout:g} s"
        ) from None
    except OSError as exc:
        sock.close()
        raise ClientClosedError(f"TLS handshake with {peer} failed: connection lost ({exc})") from None
    if not first:
        sock.close()
        raise ClientClosedError(f"TLS handshake with {peer} failed: the client closed the connection")
    if first[0] != _TLS_HANDSHAKE_RECORD:
        sock.close()
        raise PlainTextClientError(
            f"TLS handshake with {peer} failed: client spoke plain TCP to the TLS port{_guess_protocol(first[0])}"
        )

    tls_sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    try:
        tls_sock.settimeout(max(deadline - time.monotonic(), 0.001))
        tls_sock.do_handshake()
    except TimeoutError:
        tls_sock.close()
        raise HandshakeTimeoutError(f"TLS handshake with {peer} failed: not finished within {timeout:g} s") from None
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError) as exc:
        tls_sock.close()
        raise ClientClosedError(f"TLS handshake with {peer} failed: the client closed the connection ({exc})") from None
    except ssl.SSLError as exc:
        tls_sock.close()
        raise HandshakeError(f"TLS handshake with {peer} failed: {_describe_ssl_error(exc)}") from None
    except OSError as exc:
        tls_sock.close()
        raise ClientClosedError(f"TLS handshake with {peer} failed: connection lost ({exc})") from None
    tls_sock.settimeout(previous_timeout)
    return tls_sock


class DeferredHandshakeMixin(socketserver.ThreadingMixIn):
    """Do the TLS handshake in the per-connection thread of a ``socketserver`` threading server.

    Put it first in the bases, leave the server's own TLS wrapping off, and set :attr:`tls_context`::

        class TLSAssociationServer(DeferredHandshakeMixin, ThreadedAssociationServer):
            pass

        server = ae.make_server(address, server_class=TLSAssociationServer)  # no ssl_context here
        server.tls_context = server_context(cert, key, ca, verify_peer)

    A failed handshake is logged by :meth:`tls_handshake_failed` and the connection dropped; the request
    handler never sees it.

    Attributes
    ----------
    tls_context : ssl.SSLContext or None
        Server context; ``None`` serves plain TCP.
    tls_handshake_timeout : float
        Seconds each client gets to complete the handshake.
    """

    tls_context: ssl.SSLContext | None = None
    tls_handshake_timeout: float = DEFAULT_TIMEOUT

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Handshake (when :attr:`tls_context` is set), then pass the encrypted socket on as usual.

        Parameters
        ----------
        request : socket.socket
            The accepted connection.
        client_address : tuple
            The client's address.
        """
        if isinstance(request, ssl.SSLSocket):
            # The server wrapped it in its accept loop, which is the very stall this mixin exists to avoid.
            LOGGER.error("TLS socket already wrapped in the accept loop: give the server no ssl_context")
        elif self.tls_context is not None and isinstance(request, socket.socket):
            try:
                request = handshake(request, self.tls_context, self.tls_handshake_timeout)
            except HandshakeError as exc:
                self.tls_handshake_failed(exc, client_address)
                return
        super().process_request_thread(request, client_address)

    def tls_handshake_failed(self, error: HandshakeError, client_address: Any) -> None:
        """Log a failed handshake; override to count or report them.

        Parameters
        ----------
        error : HandshakeError
            Its message names the client and the reason.
        client_address : tuple
            The client's address.
        """
        LOGGER.warning("%s", error)
