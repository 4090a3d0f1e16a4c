"""Interoperability with DCMTK, the TLS stack most modalities and DICOM tools are tested against.

DCMTK's ``echoscu`` handshakes with our TLS server; the loopback server only echoes bytes, so the DICOM
exchange after the handshake fails by design: what is checked is the TLS session the server recorded.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tls.certs import Paths
from tls.contexts import server_context


def _dcmtk_echoscu() -> str | None:
    # pynetdicom installs an ``echoscu`` of its own; only DCMTK's knows the "+tls" option
    for candidate in ("/usr/bin/echoscu", shutil.which("echoscu")):
        if candidate and Path(candidate).exists():
            usage = subprocess.run([candidate, "--help"], capture_output=True, text=True, check=False)
            if "--enable-tls" in usage.stdout:
                return candidate
    return None


ECHOSCU = _dcmtk_echoscu()
pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(ECHOSCU is None, reason="DCMTK echoscu with TLS support not installed"),
]


def _echoscu(port: int, pki: Paths, *extra: str) -> subprocess.CompletedProcess[str]:
    assert ECHOSCU is not None
    return subprocess.run(
        [ECHOSCU, "-to", "10", "-ta", "10", "+tls", str(pki.client_key), str(pki.client_cert),
         "+cf", str(pki.ca_cert), *extra, "127.0.0.1", str(port)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_dcmtk_default_profile_handshakes_with_client_certificate(pki: Paths, tls_server: Callable[..., Any]) -> None:
    """DCMTK's default Non-Downgrading BCP 195 profile, mutual TLS."""
    server = tls_server(server_context(pki.server_cert, pki.server_key, pki.ca_cert, verify_peer=True))
    _echoscu(server.port, pki)
    session = server.accepted.get(timeout=10)
    assert session["version"] in {"TLSv1.2", "TLSv1.3"}
    assert dict(x[0] for x in session["peer"]["subject"])["commonName"] == "Test Org client"
    assert server.failures.empty()


def test_dcmtk_retired_aes_profile_is_refused(pki: Paths, tls_server: Callable[..., Any]) -> None:
    """The retired "AES TLS" profile (RSA key transport, CBC) is what old modalities speak: refused."""
    server = tls_server(server_context(pki.server_cert, pki.server_key))
    result = _echoscu(server.port, pki, "+pa")
    assert result.returncode != 0
    assert "none of the allowed suites" in str(server.failures.get(timeout=10))
    assert server.accepted.empty()
