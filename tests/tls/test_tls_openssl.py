"""Cross-check with a TLS stack that is not Python's ssl module: the ``openssl s_client`` command."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tls.certs import Paths
from tls.contexts import server_context

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")


def s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one ``openssl s_client`` session that sends nothing and quits at end of input."""
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", "-brief", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(("flag", "protocol"), [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_openssl_negotiates_tls12_and_tls13_with_client_certificate(
    pki: Paths, tls_server: Callable[..., Any], flag: str, protocol: str
) -> None:
    server = tls_server(server_context(pki.server_cert, pki.server_key, pki.ca_cert, verify_peer=True))
    result = s_client(
        server.port,
        flag,
        "-CAfile", str(pki.ca_cert),
        "-cert", str(pki.client_cert),
        "-key", str(pki.client_key),
        "-verify_return_error",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"Protocol version: {protocol}" in result.stderr
    assert "Verification: OK" in result.stderr
    session = server.accepted.get(timeout=5)
    assert session["version"] == protocol
    if protocol == "TLSv1.2":
        assert result.stderr.count("Ciphersuite: ECDHE-RSA-") == 1
        assert "GCM" in session["cipher"][0] or "CHACHA20" in session["cipher"][0]


def test_openssl_without_client_certificate_refused_with_verify_peer(
    pki: Paths, tls_server: Callable[..., Any]
) -> None:
    server = tls_server(server_context(pki.server_cert, pki.server_key, pki.ca_cert, verify_peer=True))
    s_client(server.port, "-tls1_2", "-CAfile", str(pki.ca_cert))
    assert "the client sent no certificate" in str(server.failures.get(timeout=5))
    assert server.accepted.empty()


def test_openssl_tls11_refused(pki: Paths, tls_server: Callable[..., Any]) -> None:
    server = tls_server(server_context(pki.server_cert, pki.server_key))
    # SECLEVEL=0 lets this openssl offer TLS 1.1 at all; the refusal must come from our server
    result = s_client(server.port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert result.returncode != 0
    assert "older than 1.2" in str(server.failures.get(timeout=5))


@pytest.mark.parametrize("cipher", ["AES256-GCM-SHA384", "AES128-SHA", "ECDHE-RSA-AES256-SHA384"])
def test_openssl_weak_tls12_suites_refused(pki: Paths, tls_server: Callable[..., Any], cipher: str) -> None:
    """No RSA key transport (no forward secrecy) and no CBC, even with ECDHE."""
    server = tls_server(server_context(pki.server_cert, pki.server_key))
    result = s_client(server.port, "-tls1_2", "-cipher", cipher)
    assert result.returncode != 0
    assert "none of the allowed suites" in str(server.failures.get(timeout=5))
