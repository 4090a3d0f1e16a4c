"""tls.certs: PKI creation, description, loading errors, key permissions, demo set, expiry warnings."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification

from tls.certs import (
    DEMO_WARNING,
    Paths,
    check_key_permissions,
    check_validity,
    describe,
    describe_all,
    ensure_demo_certs,
    expiry_warnings,
    init_pki,
    load_certificates,
)
from tls.errors import (
    CertificateExpiredError,
    CertificateNotYetValidError,
    IncorrectCertificateError,
    IncorrectPrivateKeyError,
    KeyPermissionError,
    NoCertificateError,
    NoPrivateKeyError,
    PKIExistsError,
    TLSConfigError,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- init_pki -----------------------------------------------------------------------------------------------


def test_init_pki_writes_six_files_with_safe_modes(pki: Paths) -> None:
    assert all(p.is_file() for p in pki)
    for key in pki.private_keys():
        assert _mode(key) == 0o600, key
    for cert in pki.certificates():
        assert _mode(cert) == 0o644, cert
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in pki.ca_cert.parent.iterdir()) == sorted(p.name for p in pki)


def test_server_certificate_content(pki: Paths) -> None:
    info = describe(pki.server_cert, pki.server_key)
    ca = describe(pki.ca_cert)
    assert info.common_name == "localhost"
    assert info.organisation == "Test Org"
    assert info.country == "FR"
    assert info.dns_names == ("localhost",)
    assert info.ip_addresses == ("127.0.0.1",)
    assert info.extended_key_usage == ("serverAuth",)
    assert not info.is_ca and not info.self_signed
    assert info.issuer == ca.subject
    assert info.issuer_common_name == "Test Org CA for localhost"
    assert info.key_type == "RSA 2048"
    assert info.key_matches is True
    assert 824 <= (info.not_after - info.not_before).days <= 825
    assert len(info.fingerprint_sha256.split(":")) == 32


def test_client_and_ca_certificate_content(pki: Paths) -> None:
    client = describe(pki.client_cert, pki.client_key)
    ca = describe(pki.ca_cert, pki.ca_key)
    assert client.extended_key_usage == ("clientAuth",)
    assert client.dns_names == ("localhost",) and client.ip_addresses == ("127.0.0.1",)
    assert client.common_name == "Test Org client"
    assert client.key_matches is True
    assert ca.is_ca and ca.self_signed and ca.key_matches is True
    assert ca.days_left() >= 3600


def test_chain_verifies_with_an_independent_verifier(pki: Paths) -> None:
    """cryptography's RFC 5280 verifier (not our code) accepts the server and client chains."""
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    client = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
    builder = verification.PolicyBuilder().store(verification.Store([ca]))
    builder.build_server_verifier(x509.DNSName("localhost")).verify(server, [])
    builder.build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1"))).verify(server, [])
    builder.build_client_verifier().verify(client, [])
    # serverAuth only: the server certificate cannot pass as a client one
    with pytest.raises(verification.VerificationError):
        builder.build_client_verifier().verify(server, [])


def test_init_pki_refuses_to_overwrite(pki: Paths) -> None:
    before = pki.server_cert.read_bytes()
    with pytest.raises(PKIExistsError, match="Refusing to overwrite") as exc:
        init_pki(pki.ca_cert.parent, ["localhost"], [])
    assert exc.value.exit_code == 1
    assert pki.server_cert.read_bytes() == before


def test_init_pki_overwrite_and_ec_keys(tmp_path: Path) -> None:
    first = init_pki(tmp_path, ["pacs.example.org", "pacs"], ["10.0.0.5", "fe80::1"], key_type="ec")
    fingerprint = describe(first.server_cert).fingerprint_sha256
    again = init_pki(tmp_path, ["pacs.example.org"], [], overwrite=True, key_type="ec", days=30)
    info = describe(again.server_cert, again.server_key)
    assert info.fingerprint_sha256 != fingerprint
    assert info.key_type == "EC secp256r1" and info.key_matches
    assert info.dns_names == ("pacs.example.org",)
    assert info.days_left() in (29, 30)


@pytest.mark.parametrize(
    ("hostnames", "ips", "country", "days", "message"),
    [
        ([], [], None, 30, "at least one host name or IP address"),
        (["bad name"], [], None, 30, "Incorrect host name"),
        (["ok"], ["300.1.1.1"], None, 30, "Incorrect IP address"),
        (["ok"], [], "FRA", 30, "Incorrect country"),
        (["ok"], [], None, 0, "Incorrect validity"),
    ],
)
def test_init_pki_rejects_bad_input(
    tmp_path: Path, hostnames: list[str], ips: list[str], country: str | None, days: int, message: str
) -> None:
    with pytest.raises(TLSConfigError, match=message):
        init_pki(tmp_path / "x", hostnames, ips, country=country, days=days)
    assert not (tmp_path / "x").exists()


# --- describe and loading errors ----------------------------------------------------------------------------


def test_describe_key_mismatch(pki: Paths, other_pki: Paths) -> None:
    assert describe(pki.server_cert, pki.client_key).key_matches is False
    assert describe(pki.server_cert, other_pki.server_key).key_matches is False
    assert describe(pki.server_cert).key_matches is None


def test_describe_der_and_bundle(pki: Paths, tmp_path: Path) -> None:
    der = tmp_path / "server.der"
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    assert describe(der, pki.server_key).key_matches is True
    assert load_certificates(der)[1] is False

    bundle = tmp_path / "chain.pem"
    bundle.write_bytes(pki.server_cert.read_bytes() + pki.ca_cert.read_bytes())
    infos = describe_all(bundle, pki.server_key)
    assert [i.common_name for i in infos] == ["localhost", "Test Org CA for localhost"]
    assert [i.key_matches for i in infos] == [True, None]


def test_describe_expired_certificate_is_allowed(expired_server: Any) -> None:
    info = describe(expired_server.cert, expired_server.key)
    assert info.is_expired()
    assert info.not_after.date() == dt.date(2020, 1, 31)
    assert info.days_left() < 0


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, NoCertificateError, "No certificate: {path} does not exist"),
        (b"not a certificate", IncorrectCertificateError, "Incorrect certificate: {path} is not a PEM"),
        (b"", IncorrectCertificateError, "Incorrect certificate: {path}"),
        (
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
            IncorrectCertificateError,
            "Incorrect certificate: {path} has a damaged PEM certificate block",
        ),
        ("key", IncorrectCertificateError, "Incorrect certificate: {path} holds a private key, not a"),
    ],
)
def test_certificate_loading_errors(
    pki: Paths, tmp_path: Path, content: bytes | str | None, error: type[Exception], message: str
) -> None:
    path = tmp_path / "cert.pem"
    if content == "key":
        path.write_bytes(pki.server_key.read_bytes())
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(error) as exc:
        describe(path)
    assert str(exc.value).startswith(message.format(path=path))
    assert getattr(exc.value, "path", None) == str(path)


def test_certificate_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NoCertificateError, match="is a directory"):
        describe(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_certificate(pki: Paths, tmp_path: Path) -> None:
    path = tmp_path / "locked.crt"
    path.write_bytes(pki.server_cert.read_bytes())
    path.chmod(0)
    with pytest.raises(NoCertificateError, match="permission denied"):
        describe(path)


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, NoPrivateKeyError, "No private key: {path} does not exist"),
        (b"\x00\x01garbage", IncorrectPrivateKeyError, "Incorrect private key: {path} is not a PEM or DER"),
        ("cert", IncorrectPrivateKeyError, "Incorrect private key: {path} holds a certificate, not a"),
        ("encrypted", IncorrectPrivateKeyError, "Incorrect private key: {path} is encrypted with a"),
    ],
)
def test_private_key_loading_errors(
    pki: Paths, tmp_path: Path, content: bytes | str | None, error: type[Exception], message: str
) -> None:
    path = tmp_path / "server.key"
    if content == "cert":
        path.write_bytes(pki.server_cert.read_bytes())
    elif content == "encrypted":
        key = serialization.load_pem_private_key(pki.server_key.read_bytes(), password=None)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(error) as exc:
        describe(pki.server_cert, path)
    assert str(exc.value).startswith(message.format(path=path))


def test_key_in_the_certificate_file_is_found(pki: Paths, tmp_path: Path) -> None:
    combined = tmp_path / "combined.pem"
    combined.write_bytes(pki.server_cert.read_bytes() + pki.server_key.read_bytes())
    assert describe(combined, combined).key_matches is True


def test_check_validity_messages(expired_server: Any, pki: Paths) -> None:
    expired = load_certificates(expired_server.cert)[0][0]
    with pytest.raises(CertificateExpiredError) as exc:
        check_validity(expired, expired_server.cert)
    assert str(exc.value) == f"Certificate expired on 2020-01-31: {expired_server.cert}"

    fresh = load_certificates(pki.server_cert)[0][0]
    check_validity(fresh, pki.server_cert)
    with pytest.raises(CertificateNotYetValidError, match="Certificate not valid before"):
        check_validity(fresh, pki.server_cert, now=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))


# --- key permissions ----------------------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="mode bits are POSIX")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_key_permissions_too_open(pki: Paths, tmp_path: Path, mode: int) -> None:
    key = tmp_path / "open.key"
    key.write_bytes(pki.server_key.read_bytes())
    key.chmod(mode)
    with pytest.raises(KeyPermissionError) as exc:
        check_key_permissions(key, "refuse")
    assert f"mode {mode:04o}" in str(exc.value) and f"chmod 600 {key}" in str(exc.value)
    assert exc.value.exit_code == 2
    warning = check_key_permissions(key, "warn")
    assert warning is not None and str(key) in warning
    assert check_key_permissions(key, "ignore") is None


@pytest.mark.skipif(os.name != "posix", reason="mode bits are POSIX")
def test_key_permissions_private(pki: Paths, tmp_path: Path) -> None:
    assert check_key_permissions(pki.server_key, "refuse") is None
    key = tmp_path / "owner-only.key"
    key.write_bytes(b"x")
    key.chmod(0o400)
    assert check_key_permissions(key, "refuse") is None
    with pytest.raises(NoPrivateKeyError):
        check_key_permissions(tmp_path / "missing.key", "refuse")
    with pytest.raises(TLSConfigError, match="Incorrect key permission policy: 'Refuse'"):
        check_key_permissions(key, "Refuse")  # type: ignore[arg-type]


# --- demo certificates --------------------------------------------------------------------------------------


def test_demo_certs_created_then_reused(tmp_path: Path) -> None:
    demo = tmp_path / "data" / "tls-demo"
    paths = ensure_demo_certs(demo)
    info = describe(paths.server_cert, paths.server_key)
    assert info.key_matches and info.organisation == "Appliance demo"
    assert "localhost" in info.dns_names and "127.0.0.1" in info.ip_addresses
    assert _mode(paths.server_key) == 0o600

    again = ensure_demo_certs(demo)
    assert again == paths
    assert describe(again.server_cert).fingerprint_sha256 == info.fingerprint_sha256
    assert str(demo) in DEMO_WARNING.format(directory=demo)


def test_demo_certs_remade_when_incomplete_or_expired(tmp_path: Path) -> None:
    paths = ensure_demo_certs(tmp_path)
    first = describe(paths.server_cert).fingerprint_sha256
    paths.client_key.unlink()
    second = describe(ensure_demo_certs(tmp_path).server_cert).fingerprint_sha256
    assert second != first and paths.client_key.is_file()

    far_future = dt.datetime.now(dt.UTC) + dt.timedelta(days=4000)
    third = describe(ensure_demo_certs(tmp_path, now=far_future).server_cert)
    assert third.fingerprint_sha256 != second
    assert third.not_after > far_future


# --- expiry warnings ----------------------------------------------------------------------------------------


def test_expiry_warnings(pki: Paths, expired_server: Any, tmp_path: Path) -> None:
    assert expiry_warnings(pki) == []

    server_end = describe(pki.server_cert).not_after
    soon = expiry_warnings(pki, days=30, now=server_end - dt.timedelta(days=10, hours=1))
    assert [w.path for w in soon] == [pki.server_cert, pki.client_cert]
    assert soon[0].days_left == 10 and not soon[0].expired
    assert soon[0].message.startswith(f"Certificate expires on {server_end.date().isoformat()} (in 10 days)")

    missing = tmp_path / "gone.crt"
    found = expiry_warnings([expired_server.cert, missing, pki.ca_cert])
    assert len(found) == 2
    assert found[0].expired and found[0].message.startswith("Certificate expired on 2020-01-31")
    assert found[1].path == missing and found[1].message.startswith("No certificate")
    assert found[1].days_left is None and not found[1].expired


def test_expiry_warnings_checks_every_certificate_of_a_bundle(pki: Paths, expired_server: Any, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.ca_cert.read_bytes() + expired_server.cert.read_bytes())
    found = expiry_warnings([bundle])
    assert len(found) == 1 and found[0].expired


def test_hand_made_self_signed_certificate_is_described(tmp_path: Path, make_cert: Any) -> None:
    now = dt.datetime.now(dt.UTC)
    files = make_cert(tmp_path, "selfie", issuer_paths=None, not_before=now, not_after=now + dt.timedelta(days=1))
    info = describe(files.cert, files.key)
    assert info.self_signed and info.key_matches and info.extended_key_usage == ("serverAuth",)
