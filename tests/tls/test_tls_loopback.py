"""Real TLS on loopback: our server contexts against Python ssl clients, parametrized over TLS 1.2 and 1.3."""

from __future__ import annotations

import socket
import ssl
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tls.certs import Paths, init_pki
from tls.contexts import client_context, server_context
from tls.errors import HandshakeError

VERSIONS = [
    pytest.param(ssl.TLSVersion.TLSv1_2, id="TLSv1.2"),
    pytest.param(ssl.TLSVersion.TLSv1_3, id="TLSv1.3"),
]
EXPECTED_NAME = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}


def _pinned(ctx: ssl.SSLContext, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx.minimum_version = version
    ctx.maximum_version = version
    return ctx


@pytest.mark.parametrize("version", VERSIONS)
def test_trusted_client_certificate_accepted(
    pki: Paths, tls_server: Callable[..., Any], roundtrip: Callable[..., str], version: ssl.TLSVersion
) -> None:
    server = tls_server(server_context(pki.server_cert, pki.server_key, pki.ca_cert, verify_peer=True))
    client = _pinned(client_context(pki.client_cert, pki.client_key, pki.ca_cert), version)
    assert roundtrip(client, server.port) == EXPECTED_NAME[version]
    session = server.accepted.get(timeout=5)
    assert session["version"] == EXPECTED_NAME[version]
    assert dict(x[0] for x in session["peer"]["subject"])["commonName"] == "Test Org client"
    if version == ssl.TLSVersion.TLSv1_2:
        assert session["cipher"][0].startswith("ECDHE-RSA-")
        assert "GCM" in session["cipher"][0] or "CHACHA20" in session["cipher"][0]
    assert server.failures.empty()


@pytest.mark.parametrize("version", VERSIONS)
def test_untrusted_client_certificate_refused(
    pki: Paths,
    other_pki: Paths,
    tls_server: Callable[..., Any],
    roundtrip: Callable[..., str],
    version: ssl.TLSVersion,
) -> None:
    server = tls_server(server_context(pki.server_cert, pki.server_key, pki.ca_cert, verify_peer=True))
    # a well-formed client certificate, but from a CA the server does not trust
    client = _pinned(client_context(other_pki.client_cert, other_pki.client_key, pki.ca_cert), version)
    with pytest.raises(OSError):
        roundtrip(client, server.port)
    failure = server.failures.get(timeout=5)
    assert type(failure) is HandshakeError
    assert "the client's certificate is not trusted" in str(failure)
    assert server.accepted.empty()


@pytest.mark.parametrize("version", VERSIONS)
def test_missing_client_certificate_refused_with_verify_peer(
    pki: Paths, tls_server: Callable[..., Any], roundtrip: Callable[..., str], version: ssl.TLSVersion
) -> None:
    server = tls_server(server_context(pki.server_cert, pki.server_key, pki.ca_cert, verify_peer=True))
    client = _pinned(client_context(ca=pki.ca_cert), version)
    with pytest.raises(OSError):
        roundtrip(client, server.port)
    failure = server.failures.get(timeout=5)
    assert "the client sent no certificate" in str(failure)
    assert server.accepted.empty()


@pytest.mark.parametrize("version", VERSIONS)
def test_missing_client_certificate_accepted_without_verify_peer(
    pki: Paths, tls_server: Callable[..., Any], roundtrip: Callable[..., str], version: ssl.TLSVersion
) -> None:
    server = tls_server(server_context(pki.server_cert, pki.server_key))
    client = _pinned(client_context(ca=pki.ca_cert), version)
    assert roundtrip(client, server.port) == EXPECTED_NAME[version]
    assert server.accepted.get(timeout=5)["peer"] is None


@pytest.mark.parametrize("version", VERSIONS)
def test_expired_server_certificate_refused_by_client(
    pki: Paths,
    expired_server: Any,
    tls_server: Callable[..., Any],
    roundtrip: Callable[..., str],
    version: ssl.TLSVersion,
) -> None:
    # server_context refuses an expired certificate, so build the server side by hand: the client must refuse
    # it on its own
    raw = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    raw.load_cert_chain(expired_server.cert, expired_server.key)
    server = tls_server(raw)
    client = _pinned(client_context(ca=pki.ca_cert), version)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        roundtrip(client, server.port)


def test_hostname_check(pki: Paths, tls_server: Callable[..., Any], roundtrip: Callable[..., str]) -> None:
    server = tls_server(server_context(pki.server_cert, pki.server_key))
    assert roundtrip(client_context(ca=pki.ca_cert), server.port, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        roundtrip(client_context(ca=pki.ca_cert), server.port, server_hostname="pacs.example.org")
    relaxed = client_context(ca=pki.ca_cert, check_hostname=False)
    assert roundtrip(relaxed, server.port, server_hostname="pacs.example.org")


def test_check_hostname_off_still_verifies_the_chain(
    pki: Paths, other_pki: Paths, tls_server: Callable[..., Any], roundtrip: Callable[..., str]
) -> None:
    server = tls_server(server_context(other_pki.server_cert, other_pki.server_key))
    relaxed = client_context(ca=pki.ca_cert, check_hostname=False)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        roundtrip(relaxed, server.port)


def _tls11_client() -> ssl.SSLContext:
    """A client that can only speak TLS 1.1 (allowed by lowering its own OpenSSL security level)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


def test_tls11_refused(pki: Paths, tls_server: Callable[..., Any], roundtrip: Callable[..., str]) -> None:
    # Control first: a permissive server does accept this client, so the refusal below is our policy and not
    # a client that cannot speak TLS 1.1 at all.
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.TLSv1_1
    permissive.load_cert_chain(pki.server_cert, pki.server_key)
    try:
        assert roundtrip(_tls11_client(), tls_server(permissive).port) == "TLSv1.1"
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL build cannot speak TLS 1.1 at all: {exc}")

    server = tls_server(server_context(pki.server_cert, pki.server_key))
    with pytest.raises(ssl.SSLError):
        roundtrip(_tls11_client(), server.port)
    failure = server.failures.get(timeout=5)
    assert "older than 1.2" in str(failure)


def test_tls12_suite_without_forward_secrecy_refused(
    pki: Paths, tls_server: Callable[..., Any], roundtrip: Callable[..., str]
) -> None:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("AES256-GCM-SHA384:AES128-SHA")  # RSA key transport: no forward secrecy
    # control: a server with OpenSSL's own default suites takes these
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    plain.set_ciphers("DEFAULT")
    plain.load_cert_chain(pki.server_cert, pki.server_key)
    assert roundtrip(client, tls_server(plain).port) == "TLSv1.2"

    server = tls_server(server_context(pki.server_cert, pki.server_key))
    with pytest.raises(ssl.SSLError):
        roundtrip(client, server.port)
    assert "none of the allowed suites" in str(server.failures.get(timeout=5))


def test_ec_certificates_work(tmp_path: Path, tls_server: Callable[..., Any], roundtrip: Callable[..., str]) -> None:
    paths = init_pki(tmp_path, ["localhost"], ["127.0.0.1"], key_type="ec")
    server = tls_server(server_context(paths.server_cert, paths.server_key, paths.ca_cert, verify_peer=True))
    client = client_context(paths.client_cert, paths.client_key, paths.ca_cert)
    client = _pinned(client, ssl.TLSVersion.TLSv1_2)
    assert roundtrip(client, server.port) == "TLSv1.2"
    assert server.accepted.get(timeout=5)["cipher"][0].startswith("ECDHE-ECDSA-")


def test_compression_is_off(pki: Paths, tls_server: Callable[..., Any]) -> None:
    # OpenSSL 3 builds rarely offer compression at all, so this checks the outcome, not our option alone
    # (test_tls_contexts checks that OP_NO_COMPRESSION is set).
    server = tls_server(server_context(pki.server_cert, pki.server_key))
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        client_context(ca=pki.ca_cert).wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        assert sock.compression() is None
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
