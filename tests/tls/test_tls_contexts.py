"""tls.contexts: the policy of the contexts, and every configuration error in the administrator's words."""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tls.certs import Paths
from tls.contexts import client_context, server_context
from tls.errors import (
    CertificateExpiredError,
    CertificateNotYetValidError,
    IncorrectCertificateError,
    IncorrectPrivateKeyError,
    KeyMismatchError,
    KeyPermissionError,
    NoCertificateError,
    NoPrivateKeyError,
    TLSConfigError,
)


def test_server_context_policy(pki: Paths) -> None:
    ctx = server_context(pki.server_cert, pki.server_key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert ctx.verify_mode == ssl.CERT_NONE
    ciphers = ctx.get_ciphers()
    tls12 = [c for c in ciphers if c["protocol"] == "TLSv1.2"]
    assert tls12, "no TLS 1.2 suite left"
    for cipher in tls12:
        assert cipher["kea"] == "kx-ecdhe", cipher["name"]
        assert cipher["aead"], cipher["name"]
        assert cipher["symmetric"] in {"aes-128-gcm", "aes-256-gcm", "chacha20-poly1305"}, cipher["name"]
    assert {c["protocol"] for c in ciphers} <= {"TLSv1.2", "TLSv1.3"}


def test_server_context_verify_peer(pki: Paths) -> None:
    ctx = server_context(pki.server_cert, pki.server_key, pki.ca_cert, verify_peer=True)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    (ca,) = ctx.get_ca_certs()
    assert ca["subject"][-1] == (("commonName", "Test Org CA for localhost"),)


def test_verify_peer_needs_a_ca(pki: Paths) -> None:
    with pytest.raises(TLSConfigError, match="verify_peer needs a CA"):
        server_context(pki.server_cert, pki.server_key, verify_peer=True)


def test_client_context_policy(pki: Paths) -> None:
    ctx = client_context(ca=pki.ca_cert)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION
    relaxed = client_context(pki.client_cert, pki.client_key, pki.ca_cert, check_hostname=False)
    # without the hostname check the chain is still verified
    assert relaxed.verify_mode == ssl.CERT_REQUIRED and not relaxed.check_hostname


def test_client_context_without_ca_uses_system_store(pki: Paths) -> None:
    ctx = client_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_key_inside_certificate_file(pki: Paths, tmp_path: Path) -> None:
    combined = tmp_path / "combined.pem"
    combined.write_bytes(pki.server_cert.read_bytes() + pki.server_key.read_bytes())
    combined.chmod(0o600)
    server_context(combined, None)


# --- the administrator's errors -----------------------------------------------------------------------------


def _garbage(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(b"this is not PEM at all\n")
    return path


def test_no_certificate(pki: Paths, tmp_path: Path) -> None:
    missing = tmp_path / "missing.crt"
    with pytest.raises(NoCertificateError) as exc:
        server_context(missing, pki.server_key)
    assert str(exc.value) == f"No certificate: {missing} does not exist"
    assert exc.value.exit_code == 2


def test_incorrect_certificate(pki: Paths, tmp_path: Path) -> None:
    garbage = _garbage(tmp_path, "garbage.crt")
    with pytest.raises(IncorrectCertificateError) as exc:
        server_context(garbage, pki.server_key)
    assert str(exc.value).startswith(f"Incorrect certificate: {garbage}")


def test_der_certificate_is_explained(pki: Paths, tmp_path: Path) -> None:
    der = tmp_path / "server.der"
    der.write_bytes(
        x509.load_pem_x509_certificate(pki.server_cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(IncorrectCertificateError, match=r"is DER; the appliance needs PEM \(openssl x509"):
        server_context(der, pki.server_key)


def test_no_private_key(pki: Paths, tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    with pytest.raises(NoPrivateKeyError) as exc:
        server_context(pki.server_cert, missing)
    assert str(exc.value) == f"No private key: {missing} does not exist"


def test_incorrect_private_key(pki: Paths, tmp_path: Path) -> None:
    garbage = _garbage(tmp_path, "garbage.key")
    with pytest.raises(IncorrectPrivateKeyError) as exc:
        server_context(pki.server_cert, garbage)
    assert str(exc.value).startswith(f"Incorrect private key: {garbage}")


def test_key_does_not_match_certificate(pki: Paths, other_pki: Paths) -> None:
    for wrong in (pki.client_key, other_pki.server_key):
        with pytest.raises(KeyMismatchError) as exc:
            server_context(pki.server_cert, wrong)
        expected = f"Key does not match certificate: {wrong} is not the key of {pki.server_cert}"
        assert str(exc.value) == expected
    with pytest.raises(KeyMismatchError):
        client_context(pki.client_cert, pki.server_key, pki.ca_cert)


def test_certificate_expired(expired_server: Any) -> None:
    with pytest.raises(CertificateExpiredError) as exc:
        server_context(expired_server.cert, expired_server.key)
    assert str(exc.value) == f"Certificate expired on 2020-01-31: {expired_server.cert}"


def test_certificate_not_yet_valid(pki: Paths, tmp_path: Path, make_cert: Any) -> None:
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    future = make_cert(tmp_path, "future", issuer_paths=pki, not_before=start, not_after=start + dt.timedelta(days=30))
    with pytest.raises(CertificateNotYetValidError, match=f"Certificate not valid before {start.date()}"):
        server_context(future.cert, future.key)


def test_weak_key_refused_by_policy(pki: Paths, tmp_path: Path, make_cert: Any) -> None:
    now = dt.datetime.now(dt.UTC)
    weak = make_cert(tmp_path, "weak", issuer_paths=pki, not_before=now, not_after=now + dt.timedelta(9), key_size=1024)
    with pytest.raises(IncorrectCertificateError, match="refused by the TLS policy"):
        server_context(weak.cert, weak.key)


def test_ca_errors(pki: Paths, tmp_path: Path) -> None:
    missing = tmp_path / "ca.crt"
    with pytest.raises(NoCertificateError, match=f"No CA certificate: {missing} does not exist"):
        server_context(pki.server_cert, pki.server_key, missing, verify_peer=True)
    garbage = _garbage(tmp_path, "ca-garbage.crt")
    with pytest.raises(IncorrectCertificateError, match="Incorrect CA certificate"):
        client_context(ca=garbage)


def test_client_key_without_certificate(pki: Paths) -> None:
    with pytest.raises(NoCertificateError, match="without its certificate"):
        client_context(key=pki.client_key, ca=pki.ca_cert)


@pytest.mark.parametrize("policy", ["refuse", "warn", "ignore"])
def test_key_permission_policy(pki: Paths, tmp_path: Path, policy: Any, caplog: pytest.LogCaptureFixture) -> None:
    key = tmp_path / "server.key"
    key.write_bytes(pki.server_key.read_bytes())
    key.chmod(0o644)
    caplog.set_level(logging.WARNING, logger="tls")
    if policy == "refuse":
        with pytest.raises(KeyPermissionError, match="chmod 600"):
            server_context(pki.server_cert, key, key_policy=policy)
        return
    server_context(pki.server_cert, key, key_policy=policy)
    warned = [r for r in caplog.records if "chmod 600" in r.getMessage()]
    assert len(warned) == (1 if policy == "warn" else 0)
