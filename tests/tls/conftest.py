"""Fixtures for the tls tests: PKIs made in temporary folders, certificates built by hand, loopback servers.

Helpers are handed out as fixtures (``make_cert``, ``roundtrip``), since test modules cannot import a
conftest. No __init__.py here: the folder must never be importable as a second ``tls``. Test modules carry a
``test_tls_`` prefix to keep their names unique across the suite.
"""

from __future__ import annotations

import datetime as dt
import queue
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tls.certs import Paths, init_pki
from tls.errors import HandshakeError
from tls.handshake import DeferredHandshakeMixin


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """A CA with a server certificate for localhost/127.0.0.1 and a client certificate."""
    directory = tmp_path_factory.mktemp("pki")
    return init_pki(directory, ["localhost"], ["127.0.0.1"], org="Test Org", country="FR")


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """A second, unrelated CA and its certificates: nothing in `pki` trusts them."""
    return init_pki(tmp_path_factory.mktemp("other"), ["localhost"], ["127.0.0.1"], org="Other Org")


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


def make_cert(
    directory: Path,
    name: str,
    *,
    issuer_paths: Paths | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
    key_size: int = 2048,
) -> CertFiles:
    """Build a certificate with cryptography alone (not with tls.certs), so tests do not grade our own code.

    Signed by `issuer_paths`' CA, or self-signed when it is None. Validity is whatever the test asks for, past
    included.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    if issuer_paths is None:
        issuer_name, signer = subject, key
    else:
        ca_cert = x509.load_pem_x509_certificate(issuer_paths.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(issuer_paths.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, rsa.RSAPrivateKey)
        issuer_name, signer = ca_cert.subject, ca_key
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.DNSName(name)]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    files = CertFiles(directory / f"{name}.crt", directory / f"{name}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.key.chmod(0o600)
    return files


@pytest.fixture(name="make_cert", scope="session")
def make_cert_fixture() -> Callable[..., CertFiles]:
    """The :func:`make_cert` helper."""
    return make_cert


@pytest.fixture(scope="session")
def expired_server(pki: Paths, tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """A server certificate signed by `pki`'s CA that expired on 2020-01-31."""
    return make_cert(
        tmp_path_factory.mktemp("expired"),
        "expired",
        issuer_paths=pki,
        not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2020, 1, 31, tzinfo=dt.UTC),
    )


# --- loopback servers ---------------------------------------------------------------------------------------


class EchoHandler(socketserver.BaseRequestHandler):
    """Records the TLS session, then echoes one read back."""

    server: LoopbackTLSServer

    def handle(self) -> None:
        sock = self.request
        session = {"version": sock.version(), "cipher": sock.cipher(), "peer": sock.getpeercert()}
        self.server.accepted.put(session)
        data = sock.recv(64)
        if data:
            sock.sendall(data)


class LoopbackTLSServer(DeferredHandshakeMixin, socketserver.TCPServer):
    """A threading TCP server on 127.0.0.1 that handshakes with tls.handshake in each connection's thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, ctx: ssl.SSLContext, timeout: float) -> None:
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.tls_context = ctx
        self.tls_handshake_timeout = timeout
        self.accepted: queue.Queue[dict[str, object]] = queue.Queue()
        self.failures: queue.Queue[HandshakeError] = queue.Queue()
        self.handshakes_started = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request_thread(self, request: object, client_address: object) -> None:
        self.handshakes_started += 1
        super().process_request_thread(request, client_address)

    def tls_handshake_failed(self, error: HandshakeError, client_address: object) -> None:
        self.failures.put(error)


@pytest.fixture
def tls_server() -> Iterator[Callable[..., LoopbackTLSServer]]:
    """Factory: ``tls_server(ctx, timeout=5.0)`` starts a LoopbackTLSServer; all are shut down afterwards."""
    servers: list[LoopbackTLSServer] = []

    def start(ctx: ssl.SSLContext, timeout: float = 5.0) -> LoopbackTLSServer:
        server = LoopbackTLSServer(ctx, timeout)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def roundtrip(ctx: ssl.SSLContext, port: int, server_hostname: str = "localhost", timeout: float = 5.0) -> str:
    """Connect, handshake, send b"ping" and expect it back; return the negotiated TLS version.

    Raises OSError (ssl.SSLError, ConnectionError, TimeoutError) when the server refuses. With TLS 1.3 a
    client certificate is judged after the client has finished its side, so a refusal shows up on the read.
    """
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=server_hostname) as sock,
    ):
        sock.sendall(b"ping")
        data = sock.recv(64)
        if data != b"ping":
            raise ConnectionError(f"server closed the connection instead of echoing (got {data!r})")
        version = sock.version()
        assert version is not None
        return version


@pytest.fixture(name="roundtrip", scope="session")
def roundtrip_fixture() -> Callable[..., str]:
    """The :func:`roundtrip` helper."""
    return roundtrip
