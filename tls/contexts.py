"""SSL contexts for the appliance's TLS servers (DICOM, HL7 MLLP, HTTPS) and for its outgoing connections.

The policy follows the DICOM PS3.15 BCP 195 profiles (the "Non-Downgrading" and "RFC 8996" ones that DCMTK
offers): TLS 1.2 or 1.3 only; for TLS 1.2 only forward-secret ECDHE key exchange with AEAD ciphers (AES-GCM,
ChaCha20-Poly1305); no TLS compression (CRIME); no renegotiation. TLS 1.3 suites are OpenSSL's defaults, which
are all AEAD.

Files are checked with :mod:`tls.certs` before :mod:`ssl` sees them, so a wrong path, a garbage file, a key
that belongs to another certificate or an expired certificate each give their own plain-language error instead
of OpenSSL's ``[SSL] PEM lib (_ssl.c:3900)``.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from tls.certs import (
    KeyPolicy,
    StrPath,
    check_key_permissions,
    check_validity,
    key_matches,
    load_certificates,
    load_private_key,
)
from tls.errors import (
    IncorrectCertificateError,
    IncorrectPrivateKeyError,
    KeyMismatchError,
    NoCertificateError,
    TLSConfigError,
)

LOGGER = logging.getLogger(__name__)

#: OpenSSL cipher string for TLS 1.2: ECDHE key exchange (forward secrecy) with AES-GCM or ChaCha20-Poly1305,
#: RSA or ECDSA certificates. Security level 2 refuses RSA keys under 2048 bits and SHA-1 signatures.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:@SECLEVEL=2"
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def _hardened(protocol: ssl._SSLMethod) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def _pem_only(path: StrPath, what: str, is_pem: bool) -> None:
    if not is_pem:
        raise IncorrectCertificateError(
            f"Incorrect {what}: {path} is DER; the appliance needs PEM "
            f"(openssl x509 -inform der -in {path} -out {Path(path).with_suffix('.pem')})",
            path,
        )


def _load_identity(ctx: ssl.SSLContext, cert: StrPath, key: StrPath | None, key_policy: KeyPolicy) -> None:
    certificates, is_pem = load_certificates(cert)
    _pem_only(cert, "certificate", is_pem)
    check_validity(certificates[0], cert)
    key_path = key if key is not None else cert
    private_key, key_is_pem = load_private_key(key_path)
    if not key_is_pem:
        raise IncorrectPrivateKeyError(
            f"Incorrect private key: {key_path} is DER; the appliance needs PEM "
            f"(openssl pkey -inform der -in {key_path} -out NEW.key)",
            key_path,
        )
    if not key_matches(certificates[0], private_key):
        message = f"Key does not match certificate: {key_path} is not the key of {cert}"
        raise KeyMismatchError(message, key_path)
    warning = check_key_permissions(key_path, key_policy)
    if warning:
        LOGGER.warning("%s", warning)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        # What still fails here is policy: OpenSSL security level 2 (RSA < 2048 bits, SHA-1 signatures).
        raise IncorrectCertificateError(
            f"Incorrect certificate: {cert} is refused by the TLS policy ({exc.reason or exc}); "
            "use an RSA key of 2048 bits or more or an EC key, signed with SHA-256 or better",
            cert,
        ) from None


def _load_ca(ctx: ssl.SSLContext, ca: StrPath) -> None:
    p = Path(ca)
    if p.is_dir():
        # A hashed directory (c_rehash / openssl rehash), as DCMTK's +cd option takes.
        ctx.load_verify_locations(capath=str(p))
        return
    _certificates, is_pem = load_certificates(p, "CA certificate")
    _pem_only(p, "CA certificate", is_pem)
    try:
        ctx.load_verify_locations(cafile=str(p))
    except ssl.SSLError as exc:
        raise IncorrectCertificateError(
            f"Incorrect CA certificate: {p} is refused by the TLS policy ({exc.reason or exc})", p
        ) from None


def server_context(
    cert: StrPath,
    key: StrPath | None,
    ca: StrPath | None = None,
    verify_peer: bool = False,
    *,
    key_policy: KeyPolicy = "warn",
) -> ssl.SSLContext:
    """Build the context of a TLS server (DICOM TLS port, MLLP over TLS, HTTPS).

    Parameters
    ----------
    cert : str or os.PathLike
        PEM certificate of the appliance; may be followed by intermediate CA certificates (leaf first).
    key : str or os.PathLike or None
        Its unencrypted PEM private key; ``None`` when the key is in the `cert` file.
    ca : str or os.PathLike, optional
        PEM file (or hashed directory) of the CAs whose client certificates are trusted. Used only with
        `verify_peer`.
    verify_peer : bool
        Require every client to present a certificate signed by a CA in `ca` (mutual TLS). Otherwise clients
        are not asked for a certificate.
    key_policy : {"refuse", "warn", "ignore"}
        What to do when the key file is accessible by group or others (see
        :func:`tls.certs.check_key_permissions`); ``"warn"`` logs a warning.

    Returns
    -------
    ssl.SSLContext
        TLS 1.2+ server context. Wrap accepted sockets with :func:`tls.handshake.handshake` in the
        per-connection thread, not in the accept loop.

    Raises
    ------
    NoCertificateError, IncorrectCertificateError
        `cert` (or `ca`) is missing, holds no PEM certificate, or is refused by the TLS policy.
    CertificateExpiredError, CertificateNotYetValidError
        `cert` is outside its validity period.
    NoPrivateKeyError, IncorrectPrivateKeyError
        The key is missing, garbage, DER or encrypted.
    KeyMismatchError
        The key belongs to another certificate.
    KeyPermissionError
        With ``key_policy="refuse"``, the key file is readable by others.
    TLSConfigError
        `verify_peer` without `ca`.
    """
    ctx = _hardened(ssl.PROTOCOL_TLS_SERVER)
    # The server picks the strongest suite from our list rather than the client's first choice.
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.verify_mode = ssl.CERT_NONE
    if verify_peer:
        if ca is None:
            raise TLSConfigError(
                "verify_peer needs a CA: set [tls] ca to the certificate of the CA that signs the clients' certificates"
            )
        _load_ca(ctx, ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    _load_identity(ctx, cert, key, key_policy)
    return ctx


def client_context(
    cert: StrPath | None = None,
    key: StrPath | None = None,
    ca: StrPath | None = None,
    check_hostname: bool = True,
    *,
    key_policy: KeyPolicy = "warn",
) -> ssl.SSLContext:
    """Build the context of an outgoing TLS connection (C-ECHO/C-STORE to a node, HL7 to a RIS).

    The server's certificate is always verified against `ca` (or the system's CAs); `check_hostname` only
    decides whether its name must also match the host connected to.

    Parameters
    ----------
    cert : str or os.PathLike, optional
        PEM certificate to present when the server requires client certificates.
    key : str or os.PathLike, optional
        Its PEM private key; ``None`` when the key is in the `cert` file.
    ca : str or os.PathLike, optional
        PEM file (or hashed directory) of the CAs trusted to sign server certificates; the system store when
        omitted.
    check_hostname : bool
        Require the server certificate's names (SAN) to match the host name or IP address given to
        ``wrap_socket(server_hostname=...)``. Many DICOM peers are reached by an address that their
        certificate does not list; turn this off for them, the chain is still verified.
    key_policy : {"refuse", "warn", "ignore"}
        As for :func:`server_context`.

    Returns
    -------
    ssl.SSLContext
        TLS 1.2+ client context.

    Raises
    ------
    NoCertificateError, IncorrectCertificateError, CertificateExpiredError, CertificateNotYetValidError
        As for :func:`server_context`.
    NoPrivateKeyError, IncorrectPrivateKeyError, KeyMismatchError, KeyPermissionError
        As for :func:`server_context`. A `key` without `cert` raises :class:`NoCertificateError`.
    """
    if key is not None and cert is None:
        message = f"No certificate: a private key ({key}) is configured without its certificate"
        raise NoCertificateError(message)
    ctx = _hardened(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca is not None:
        _load_ca(ctx, ca)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert is not None:
        _load_identity(ctx, cert, key, key_policy)
    return ctx
