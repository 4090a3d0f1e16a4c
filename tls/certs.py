"""Certificates and keys: load and check them, create a small PKI, describe them for people.

Everything here works on files, because that is what an administrator hands over (``[tls] cert``,
``key``, ``ca``). Loading functions raise :class:`tls.errors.TLSConfigError` subclasses whose message says
what is wrong and where, so callers print them as they are.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
import socket
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tls.errors import (
    CertificateExpiredError,
    CertificateNotYetValidError,
    IncorrectCertificateError,
    IncorrectPrivateKeyError,
    KeyMismatchError,
    KeyPermissionError,
    NoCertificateError,
    NoPrivateKeyError,
    PKIExistsError,
    TLSConfigError,
)

StrPath = str | os.PathLike[str]
KeyPolicy = Literal["refuse", "warn", "ignore"]
KeyType = Literal["rsa", "ec"]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
CLIENT_CERT = "client.crt"
CLIENT_KEY = "client.key"

#: Validity of server and client certificates made by :func:`init_pki`, in days. 825 is the longest that Apple
#: clients accept from a private CA; shorter is fine.
DEFAULT_DAYS = 825
#: Validity of the CA made by :func:`init_pki`, in days.
DEFAULT_CA_DAYS = 3650
DEFAULT_ORG = "Appliance"
DEMO_ORG = "Appliance demo"

#: What the caller of :func:`ensure_demo_certs` should log.
DEMO_WARNING = (
    "TLS is using self-signed demo certificates from {directory}: no peer can verify them. "
    "Replace them: run 'appliance tls init DIR' (or install certificates from your CA) "
    "and set [tls] cert, key and ca."
)

# Backdate new certificates a little so a peer whose clock is a few minutes behind still accepts them.
_BACKDATE = dt.timedelta(minutes=5)
_PEM_KEY_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.DOTALL)
_PEM_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"
_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
}


@dataclass(frozen=True)
class Paths:
    """The six files of a PKI made by :func:`init_pki` or :func:`ensure_demo_certs`.

    Attributes
    ----------
    ca_cert, ca_key : pathlib.Path
        CA certificate (give it to the peers) and its key (keep it offline).
    server_cert, server_key : pathlib.Path
        The appliance's server identity (``[tls] cert`` / ``key``).
    client_cert, client_key : pathlib.Path
        An identity for the appliance when it connects out, or for a test client.
    """

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def in_dir(cls, directory: StrPath) -> Paths:
        """Return the standard file names inside `directory` (nothing is created).

        Parameters
        ----------
        directory : str or os.PathLike
            Folder holding the PKI.

        Returns
        -------
        Paths
            ``ca.crt``, ``ca.key``, ``server.crt``, ``server.key``, ``client.crt``, ``client.key`` in
            `directory`.
        """
        d = Path(directory)
        return cls(d / CA_CERT, d / CA_KEY, d / SERVER_CERT, d / SERVER_KEY, d / CLIENT_CERT, d / CLIENT_KEY)

    def certificates(self) -> tuple[Path, Path, Path]:
        """Return the three certificate paths (CA, server, client)."""
        return (self.ca_cert, self.server_cert, self.client_cert)

    def private_keys(self) -> tuple[Path, Path, Path]:
        """Return the three private key paths (CA, server, client)."""
        return (self.ca_key, self.server_key, self.client_key)

    def __iter__(self) -> Iterator[Path]:
        return iter((*self.certificates(), *self.private_keys()))


@dataclass(frozen=True)
class CertInfo:
    """What an administrator wants to know about one certificate.

    Attributes
    ----------
    path : pathlib.Path
        File the certificate was read from.
    subject, issuer : str
        Full distinguished names (RFC 4514).
    common_name, organisation, country : str or None
        Subject attributes, ``None`` when absent.
    issuer_common_name : str or None
        Issuer's CN.
    serial_number : int
    not_before, not_after : datetime.datetime
        Validity period, timezone-aware UTC.
    dns_names, ip_addresses : tuple of str
        Subject Alternative Names.
    is_ca : bool
        Basic Constraints says CA.
    extended_key_usage : tuple of str
        e.g. ``("serverAuth",)``; empty when the extension is absent (any use).
    self_signed : bool
        Subject equals issuer.
    key_type : str
        e.g. ``"RSA 2048"``, ``"EC secp256r1"``.
    fingerprint_sha256 : str
        Colon-separated hex, as ``openssl x509 -fingerprint -sha256`` prints it.
    key_matches : bool or None
        Whether the private key given to :func:`describe` belongs to this certificate; ``None`` if none was
        given.
    """

    path: Path
    subject: str
    common_name: str | None
    organisation: str | None
    country: str | None
    issuer: str
    issuer_common_name: str | None
    serial_number: int
    not_before: dt.datetime
    not_after: dt.datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    is_ca: bool
    extended_key_usage: tuple[str, ...]
    self_signed: bool
    key_type: str
    fingerprint_sha256: str
    key_matches: bool | None = None

    def days_left(self, now: dt.datetime | None = None) -> int:
        """Return whole days until `not_after` (negative once expired).

        Parameters
        ----------
        now : datetime.datetime, optional
            Reference time (aware); defaults to the current time.

        Returns
        -------
        int
        """
        return (self.not_after - _now(now)).days

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        """Return whether the certificate has expired at `now` (default: the current time)."""
        return _now(now) > self.not_after


@dataclass(frozen=True)
class ExpiryWarning:
    """One line for the staff UI about a certificate that expires soon, has expired, or cannot be read.

    Attributes
    ----------
    path : pathlib.Path
    message : str
        Ready to show, e.g.
        ``"Certificate expires on 2026-05-01 (in 12 days): /etc/appliance/server.crt (CN=pacs)"``.
    not_after : datetime.datetime or None
        ``None`` when the file could not be read.
    days_left : int or None
        Negative once expired; ``None`` when the file could not be read.
    """

    path: Path
    message: str
    not_after: dt.datetime | None
    days_left: int | None

    @property
    def expired(self) -> bool:
        """Whether the certificate has expired (``False`` when it could not be read)."""
        return self.days_left is not None and self.days_left < 0


# --- loading ------------------------------------------------------------------------------------------------


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.UTC)


def _read(path: StrPath, missing: type[TLSConfigError], what: str) -> bytes:
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise missing(f"No {what}: {p} does not exist", p) from None
    except IsADirectoryError:
        raise missing(f"No {what}: {p} is a directory, not a file", p) from None
    except PermissionError:
        raise missing(f"No {what}: {p} cannot be read (permission denied)", p) from None
    except OSError as exc:
        raise missing(f"No {what}: {p} cannot be read ({exc.strerror})", p) from None


def load_certificates(path: StrPath, what: str = "certificate") -> tuple[list[x509.Certificate], bool]:
    """Read every certificate in a PEM bundle or one DER certificate.

    Parameters
    ----------
    path : str or os.PathLike
        Certificate file.
    what : str
        How to call the file in messages, e.g. ``"CA certificate"``.

    Returns
    -------
    certificates : list of cryptography.x509.Certificate
        In file order (leaf first in a chain file). Never empty.
    is_pem : bool
        ``False`` for DER, which Python's :mod:`ssl` cannot load.

    Raises
    ------
    NoCertificateError
        The file is missing or unreadable.
    IncorrectCertificateError
        The file holds no certificate (garbage, a private key, a damaged PEM block).
    """
    p = Path(path)
    data = _read(p, NoCertificateError, what)
    if _PEM_CERT_MARKER in data:
        try:
            return x509.load_pem_x509_certificates(data), True
        except ValueError:
            message = f"Incorrect {what}: {p} has a damaged PEM certificate block"
            raise IncorrectCertificateError(message, p) from None
    if _PEM_KEY_RE.search(data):
        raise IncorrectCertificateError(f"Incorrect {what}: {p} holds a private key, not a certificate", p)
    try:
        return [x509.load_der_x509_certificate(data)], False
    except ValueError:
        message = f"Incorrect {what}: {p} is not a PEM or DER X.509 certificate"
        raise IncorrectCertificateError(message, p) from None


def load_private_key(path: StrPath) -> tuple[PrivateKeyTypes, bool]:
    """Read an unencrypted private key (PEM, possibly next to certificates, or DER).

    Parameters
    ----------
    path : str or os.PathLike
        Key file.

    Returns
    -------
    key : PrivateKeyTypes
    is_pem : bool
        ``False`` for DER, which Python's :mod:`ssl` cannot load.

    Raises
    ------
    NoPrivateKeyError
        The file is missing or unreadable.
    IncorrectPrivateKeyError
        The file holds no private key, or the key is encrypted with a passphrase (the appliance starts
        unattended, so it protects keys with file permissions instead).
    """
    p = Path(path)
    data = _read(p, NoPrivateKeyError, "private key")
    match = _PEM_KEY_RE.search(data)
    if match is None and b"-----BEGIN" in data:
        has_cert = _PEM_CERT_MARKER in data
        detail = "holds a certificate, not a private key" if has_cert else "has no PEM private key"
        raise IncorrectPrivateKeyError(f"Incorrect private key: {p} {detail}", p)
    try:
        if match is not None:
            return serialization.load_pem_private_key(match.group(0), password=None), True
        return serialization.load_der_private_key(data, password=None), False
    except TypeError:
        raise IncorrectPrivateKeyError(
            f"Incorrect private key: {p} is encrypted with a passphrase; the appliance needs an unencrypted "
            f"key protected by file permissions (openssl pkey -in {p} -out NEW.key; chmod 600 NEW.key)",
            p,
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        message = f"Incorrect private key: {p} is not a PEM or DER private key"
        raise IncorrectPrivateKeyError(message, p) from None


def key_matches(certificate: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """Return whether `key` is the private half of `certificate`'s public key.

    Parameters
    ----------
    certificate : cryptography.x509.Certificate
    key : PrivateKeyTypes

    Returns
    -------
    bool
    """
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    cert_pub = certificate.public_key().public_bytes(serialization.Encoding.DER, fmt)
    return cert_pub == key.public_key().public_bytes(serialization.Encoding.DER, fmt)


def check_validity(certificate: x509.Certificate, path: StrPath, now: dt.datetime | None = None) -> None:
    """Refuse a certificate outside its validity period.

    Parameters
    ----------
    certificate : cryptography.x509.Certificate
    path : str or os.PathLike
        Named in the message.
    now : datetime.datetime, optional
        Reference time (aware); defaults to the current time.

    Raises
    ------
    CertificateExpiredError
        ``"Certificate expired on YYYY-MM-DD: PATH"``.
    CertificateNotYetValidError
        ``"Certificate not valid before YYYY-MM-DD: PATH"`` (check the system clock).
    """
    t = _now(now)
    if t > certificate.not_valid_after_utc:
        day = certificate.not_valid_after_utc.date().isoformat()
        raise CertificateExpiredError(f"Certificate expired on {day}: {path}", path)
    if t < certificate.not_valid_before_utc:
        day = certificate.not_valid_before_utc.date().isoformat()
        raise CertificateNotYetValidError(
            f"Certificate not valid before {day}: {path} (is the system clock right?)", path
        )


def check_key_permissions(path: StrPath, policy: KeyPolicy = "refuse") -> str | None:
    """Check that only the owner can access a private key file.

    Parameters
    ----------
    path : str or os.PathLike
        Key file.
    policy : {"refuse", "warn", "ignore"}
        What to do when group or others have any access: raise, return a warning for the caller to log, or
        nothing.

    Returns
    -------
    str or None
        The warning text under ``"warn"`` when the mode is too open, else ``None``.

    Raises
    ------
    KeyPermissionError
        Under ``"refuse"`` when group or others can access the file.
    TLSConfigError
        `policy` is not one of the three values.
    NoPrivateKeyError
        The file does not exist.
    """
    if policy not in ("refuse", "warn", "ignore"):
        raise TLSConfigError(f"Incorrect key permission policy: {policy!r}; use refuse, warn or ignore")
    if policy == "ignore" or os.name != "posix":
        # Windows has ACLs, not mode bits; st_mode there says nothing useful.
        return None
    p = Path(path)
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except FileNotFoundError:
        raise NoPrivateKeyError(f"No private key: {p} does not exist", p) from None
    if not mode & 0o077:
        return None
    message = (
        f"Private key {p} can be accessed by group or others (mode {mode:04o}); "
        f"run 'chmod 600 {p}' so only the appliance's user can read it"
    )
    if policy == "refuse":
        raise KeyPermissionError(message, p)
    return message


# --- describing ---------------------------------------------------------------------------------------------


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _key_type(certificate: x509.Certificate) -> str:
    pub = certificate.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        return f"RSA {pub.key_size}"
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return f"EC {pub.curve.name}"
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(pub, ed448.Ed448PublicKey):
        return "Ed448"
    return type(pub).__name__


def _info(certificate: x509.Certificate, path: Path, matches: bool | None) -> CertInfo:
    ext = certificate.extensions
    try:
        san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    try:
        is_ca = ext.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        ekus = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
        eku = tuple(_EKU_NAMES.get(oid, oid.dotted_string) for oid in ekus)
    except x509.ExtensionNotFound:
        eku = ()
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex(":").upper()
    return CertInfo(
        path=path,
        subject=certificate.subject.rfc4514_string(),
        common_name=_attr(certificate.subject, NameOID.COMMON_NAME),
        organisation=_attr(certificate.subject, NameOID.ORGANIZATION_NAME),
        country=_attr(certificate.subject, NameOID.COUNTRY_NAME),
        issuer=certificate.issuer.rfc4514_string(),
        issuer_common_name=_attr(certificate.issuer, NameOID.COMMON_NAME),
        serial_number=certificate.serial_number,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        dns_names=dns,
        ip_addresses=ips,
        is_ca=is_ca,
        extended_key_usage=eku,
        self_signed=certificate.subject == certificate.issuer,
        key_type=_key_type(certificate),
        fingerprint_sha256=fingerprint,
        key_matches=matches,
    )


def describe_all(path: StrPath, key: StrPath | None = None) -> list[CertInfo]:
    """Describe every certificate in a file (a chain or CA bundle holds several).

    Parameters
    ----------
    path : str or os.PathLike
        Certificate file, PEM (one or more certificates) or DER.
    key : str or os.PathLike, optional
        Private key to compare with the first certificate (the leaf of a chain).

    Returns
    -------
    list of CertInfo
        In file order; only the first carries `key_matches`.

    Raises
    ------
    NoCertificateError, IncorrectCertificateError
        The certificate file is missing or holds no certificate.
    NoPrivateKeyError, IncorrectPrivateKeyError
        `key` is given but missing or not a usable private key.
    """
    p = Path(path)
    certificates, _ = load_certificates(p)
    matches = key_matches(certificates[0], load_private_key(key)[0]) if key is not None else None
    return [_info(c, p, matches if i == 0 else None) for i, c in enumerate(certificates)]


def describe(path: StrPath, key: StrPath | None = None) -> CertInfo:
    """Describe the first certificate in a file and, optionally, whether a key belongs to it.

    Expired certificates are described, not refused: this is for looking, not for loading.

    Parameters
    ----------
    path : str or os.PathLike
        Certificate file, PEM or DER.
    key : str or os.PathLike, optional
        Private key file to compare.

    Returns
    -------
    CertInfo

    Raises
    ------
    NoCertificateError, IncorrectCertificateError
        The certificate file is missing or holds no certificate.
    NoPrivateKeyError, IncorrectPrivateKeyError
        `key` is given but missing or not a usable private key.
    """
    return describe_all(path, key)[0]


def expiry_warnings(
    paths: Paths | Iterable[StrPath], days: int = 30, now: dt.datetime | None = None
) -> list[ExpiryWarning]:
    """List certificates that expire within `days`, have expired, or cannot be read.

    Meant for the staff UI and the start-up log. Every certificate of a bundle is checked.

    Parameters
    ----------
    paths : Paths or iterable of path
        Certificate files; for a :class:`Paths`, its three certificates (keys are skipped).
    days : int
        Warn this many days ahead.
    now : datetime.datetime, optional
        Reference time (aware); defaults to the current time.

    Returns
    -------
    list of ExpiryWarning
        Empty when all is well, otherwise one entry per certificate at fault, in input order.
    """
    t = _now(now)
    files = paths.certificates() if isinstance(paths, Paths) else tuple(paths)
    warnings: list[ExpiryWarning] = []
    for path in files:
        p = Path(path)
        try:
            certificates, _ = load_certificates(p)
        except TLSConfigError as exc:
            warnings.append(ExpiryWarning(p, str(exc), None, None))
            continue
        for certificate in certificates:
            end = certificate.not_valid_after_utc
            left = (end - t).days
            who = certificate.subject.rfc4514_string()
            if t > end:
                message = f"Certificate expired on {end.date().isoformat()}: {p} ({who})"
            elif end - t <= dt.timedelta(days=days):
                message = f"Certificate expires on {end.date().isoformat()} (in {left} days): {p} ({who})"
            else:
                continue
            warnings.append(ExpiryWarning(p, message, end, left))
    return warnings


# --- creating -----------------------------------------------------------------------------------------------


def write_atomic(path: StrPath, data: bytes, mode: int) -> None:
    """Write `data` to `path` through a temporary file, with `mode` from the first byte on.

    The temporary file is created with `mode` (so a key is never readable by others, even for a moment),
    flushed to disk, then renamed over `path`: a crash leaves either the old file or the new one.

    Parameters
    ----------
    path : str or os.PathLike
        Destination.
    data : bytes
    mode : int
        Permission bits, e.g. ``0o600``.
    """
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            # os.open applies the umask; fchmod makes the mode exactly what was asked.
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":
        # The rename itself must reach the disk too, or a power cut can bring back the old directory entry.
        dir_fd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _new_key(key_type: KeyType) -> CertificateIssuerPrivateKeyTypes:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    # RSA 2048: what older modalities and DCMTK builds surely support; it meets OpenSSL security level 2.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str, org: str, country: str | None) -> x509.Name:
    # Conventional order, broadest first, so tools print "CN=host,O=org,C=FR".
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, country)] if country else []
    attrs += [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    return x509.Name(attrs)


def _pem_key(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def issue_certificate(
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Certificate | None,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    ca: bool = False,
    usage: tuple[x509.ObjectIdentifier, ...] = (),
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
) -> x509.Certificate:
    """Sign one certificate with SHA-256 (the building block of :func:`init_pki`, also used by tests).

    Parameters
    ----------
    subject : cryptography.x509.Name
    public_key : CertificatePublicKeyTypes
        The subject's public key.
    issuer : cryptography.x509.Certificate or None
        The CA certificate; ``None`` for a self-signed certificate (subject is issuer).
    issuer_key : CertificateIssuerPrivateKeyTypes
        Signing key (the CA's, or the subject's own when self-signed).
    not_before, not_after : datetime.datetime
        Validity period (aware). A past `not_after` makes an expired certificate, which tests need.
    ca : bool
        Make a CA certificate (path length 0, keyCertSign and cRLSign).
    usage : tuple of ObjectIdentifier
        Extended key usage, e.g. ``(ExtendedKeyUsageOID.SERVER_AUTH,)``.
    dns_names, ip_addresses : iterable of str
        Subject Alternative Names.

    Returns
    -------
    cryptography.x509.Certificate
    """
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    if issuer is None:
        issuer_ski = ski
    else:
        try:
            issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            issuer_ski = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                # RSA key transport is not in our cipher list, but older peers check this bit on RSA certs.
                key_encipherment=isinstance(public_key, rsa.RSAPublicKey) and not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(_idna(n)) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _idna(name: str) -> str:
    return name if name.isascii() else name.encode("idna").decode("ascii")


def _check_names(hostnames: list[str], ip_addresses: list[str]) -> None:
    if not hostnames and not ip_addresses:
        raise TLSConfigError("Incorrect server names: give at least one host name or IP address")
    for name in hostnames:
        if not name or any(c.isspace() for c in name) or "/" in name or ":" in name:
            raise TLSConfigError(f"Incorrect host name: {name!r}")
        try:
            _idna(name)
        except UnicodeError:
            raise TLSConfigError(f"Incorrect host name: {name!r}") from None
    for address in ip_addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise TLSConfigError(f"Incorrect IP address: {address!r}") from None


def init_pki(
    directory: StrPath,
    hostnames: list[str],
    ip_addresses: list[str],
    org: str = DEFAULT_ORG,
    country: str | None = None,
    days: int = DEFAULT_DAYS,
    *,
    ca_days: int = DEFAULT_CA_DAYS,
    key_type: KeyType = "rsa",
    client_name: str | None = None,
    overwrite: bool = False,
    now: dt.datetime | None = None,
) -> Paths:
    """Create a CA, a server certificate and a client certificate, with their keys, in `directory`.

    The server certificate names every host name and address in its Subject Alternative Names and is for
    TLS servers only (serverAuth); the client certificate, with the same names, is for TLS clients only
    (clientAuth), e.g. the appliance's outgoing DICOM and HL7 connections. Keys are PKCS#8 PEM,
    unencrypted, mode 0600; certificates are PEM, mode 0644. Each file is written atomically.

    Parameters
    ----------
    directory : str or os.PathLike
        Created if needed.
    hostnames : list of str
        DNS names of the appliance; the first one (else the first address) is the server certificate's CN.
    ip_addresses : list of str
        IPv4/IPv6 addresses the peers use to reach the appliance.
    org : str
        Organisation (O) of all three certificates; the CA is called ``"<org> CA for <first name>"``.
    country : str, optional
        Two-letter country code (C).
    days : int
        Validity of the server and client certificates.
    ca_days : int
        Validity of the CA.
    key_type : {"rsa", "ec"}
        RSA 2048 (most compatible) or ECDSA P-256.
    client_name : str, optional
        CN of the client certificate; default ``"<org> client"``.
    overwrite : bool
        Replace existing files instead of refusing.
    now : datetime.datetime, optional
        Start of validity (aware); defaults to the current time.

    Returns
    -------
    Paths

    Raises
    ------
    PKIExistsError
        One of the six files exists and `overwrite` is false.
    TLSConfigError
        No name at all, a malformed host name or IP address, a bad country code or a non-positive validity.
    """
    _check_names(hostnames, ip_addresses)
    if country is not None and not re.fullmatch(r"[A-Za-z]{2}", country):
        raise TLSConfigError(f"Incorrect country: {country!r} is not a two-letter code such as FR or DE")
    if days <= 0 or ca_days <= 0:
        raise TLSConfigError("Incorrect validity: days must be positive")
    paths = Paths.in_dir(directory)
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise PKIExistsError(f"Refusing to overwrite existing files: {', '.join(existing)}")
    Path(directory).mkdir(parents=True, exist_ok=True)

    start = _now(now) - _BACKDATE
    primary = hostnames[0] if hostnames else ip_addresses[0]
    country = country.upper() if country else None

    ca_key = _new_key(key_type)
    ca_name = _name(f"{org} CA for {primary}", org, country)
    ca_end = start + dt.timedelta(days=ca_days)
    ca_cert = issue_certificate(ca_name, ca_key.public_key(), None, ca_key, not_before=start, not_after=ca_end, ca=True)
    end = start + dt.timedelta(days=days)
    server_key = _new_key(key_type)
    server_cert = issue_certificate(
        _name(primary, org, country),
        server_key.public_key(),
        ca_cert,
        ca_key,
        not_before=start,
        not_after=end,
        usage=(ExtendedKeyUsageOID.SERVER_AUTH,),
        dns_names=hostnames,
        ip_addresses=ip_addresses,
    )
    client_key = _new_key(key_type)
    client_cert = issue_certificate(
        _name(client_name or f"{org} client", org, country),
        client_key.public_key(),
        ca_cert,
        ca_key,
        not_before=start,
        not_after=end,
        usage=(ExtendedKeyUsageOID.CLIENT_AUTH,),
        # Same names as the server: it is the appliance connecting out. Strict (RFC 5280 profile) verifiers
        # require a SAN in client certificates too.
        dns_names=hostnames,
        ip_addresses=ip_addresses,
    )

    # Keys first: a certificate on disk without its key would look like a finished set to ensure_demo_certs.
    for key_path, key in zip(paths.private_keys(), (ca_key, server_key, client_key), strict=True):
        write_atomic(key_path, _pem_key(key), 0o600)
    for cert_path, cert in zip(paths.certificates(), (ca_cert, server_cert, client_cert), strict=True):
        write_atomic(cert_path, _pem_cert(cert), 0o644)
    return paths


def default_names() -> tuple[list[str], list[str]]:
    """Return the names used when none are given: this host's name, localhost, the loopback addresses.

    Returns
    -------
    hostnames, ip_addresses : list of str
    """
    # gethostname only: getfqdn can wait seconds on a reverse DNS lookup at every start.
    names = [n for n in dict.fromkeys([socket.gethostname(), "localhost"]) if n]
    return names, ["127.0.0.1", "::1"]


def ensure_demo_certs(directory: StrPath, now: dt.datetime | None = None) -> Paths:
    """Return a self-signed demo PKI in `directory`, creating it on first use.

    Used when no ``[tls]`` certificate is configured: the first start creates the set (in
    ``<data_dir>/tls-demo``, say) and later starts reuse it, so peers that pinned it keep working. The set is
    made again when a file is missing or unreadable, the key no longer matches, or the server certificate has
    expired. The caller must log :data:`DEMO_WARNING`: nobody can verify these certificates.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder reserved for the demo set.
    now : datetime.datetime, optional
        Reference time (aware); defaults to the current time.

    Returns
    -------
    Paths
    """
    paths = Paths.in_dir(directory)
    try:
        certificates, _ = load_certificates(paths.server_cert)
        check_validity(certificates[0], paths.server_cert, now)
        if not key_matches(certificates[0], load_private_key(paths.server_key)[0]):
            raise KeyMismatchError("demo key does not match", paths.server_key)
        reusable = all(p.is_file() for p in paths)
    except TLSConfigError:
        reusable = False
    if reusable:
        return paths
    hostnames, addresses = default_names()
    return init_pki(directory, hostnames, addresses, org=DEMO_ORG, overwrite=True, now=now)
