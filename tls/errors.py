"""Errors raised by the ``tls`` package.

Every message is written for the administrator who has to fix the configuration: it starts with what is
wrong in plain words ("No certificate", "Key does not match certificate") and names the file. ``tls`` imports
nothing of the appliance, so these do not derive from its ``ApplianceError``; they carry the same
``exit_code`` convention instead (1 general, 2 configuration, 5 network), so the CLI treats both alike.
"""

from __future__ import annotations

import os


class TLSError(Exception):
    """Base class of every error raised by ``tls``.

    Attributes
    ----------
    exit_code : int
        Exit status the CLI should use when this error ends a command.
    """

    exit_code: int = 1


class TLSConfigError(TLSError):
    """A certificate, key or CA file cannot be used as configured.

    Parameters
    ----------
    message : str
        The complete user-facing message, path included.
    path : str or os.PathLike, optional
        The file at fault, kept for callers that want to show it separately.
    """

    exit_code = 2

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = os.fspath(path) if path is not None else None


class NoCertificateError(TLSConfigError):
    """The certificate (or CA) file does not exist or cannot be read."""


class IncorrectCertificateError(TLSConfigError):
    """The file exists but holds no usable X.509 certificate."""


class NoPrivateKeyError(TLSConfigError):
    """The private key file does not exist or cannot be read."""


class IncorrectPrivateKeyError(TLSConfigError):
    """The file exists but holds no usable (unencrypted) private key."""


class KeyMismatchError(TLSConfigError):
    """The private key does not belong to the certificate."""


class CertificateExpiredError(TLSConfigError):
    """The certificate's validity period has ended."""


class CertificateNotYetValidError(TLSConfigError):
    """The certificate's validity period has not started (often a wrong system clock)."""


class KeyPermissionError(TLSConfigError):
    """A private key file can be read or written by users other than its owner."""


class PKIExistsError(TLSError):
    """``init_pki`` would overwrite existing certificate or key files."""


class HandshakeError(TLSError):
    """A client's TLS handshake failed; the connection has been closed."""

    exit_code = 5


class HandshakeTimeoutError(HandshakeError):
    """The client did not complete the handshake in time (for example a silent TCP client)."""


class PlainTextClientError(HandshakeError):
    """The client sent something other than a TLS ClientHello (plain DICOM, HL7 or HTTP)."""


class ClientClosedError(HandshakeError):
    """The client closed the connection before or during the handshake."""
