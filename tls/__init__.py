"""TLS for the appliance: SSL contexts for DICOM, HL7 and HTTPS; certificate creation and inspection.

A leaf package: it imports nothing of ours. ``appliance.cli`` turns the ``[tls]`` configuration into contexts
with :func:`server_context` / :func:`client_context` and runs :func:`handshake` (or
:class:`DeferredHandshakeMixin`) in each connection's thread.
"""

from tls.certs import (
    DEMO_WARNING,
    CertInfo,
    ExpiryWarning,
    KeyPolicy,
    Paths,
    check_key_permissions,
    describe,
    describe_all,
    ensure_demo_certs,
    expiry_warnings,
    init_pki,
)
from tls.cli import cmd_init, cmd_show
from tls.contexts import client_context, server_context
from tls.errors import (
    CertificateExpiredError,
    CertificateNotYetValidError,
    ClientClosedError,
    HandshakeError,
    HandshakeTimeoutError,
    IncorrectCertificateError,
    IncorrectPrivateKeyError,
    KeyMismatchError,
    KeyPermissionError,
    NoCertificateError,
    NoPrivateKeyError,
    PKIExistsError,
    PlainTextClientError,
    TLSConfigError,
    TLSError,
)
from tls.handshake import DeferredHandshakeMixin, handshake

__all__ = [
    "DEMO_WARNING",
    "CertInfo",
    "CertificateExpiredError",
    "CertificateNotYetValidError",
    "ClientClosedError",
    "DeferredHandshakeMixin",
    "ExpiryWarning",
    "HandshakeError",
    "HandshakeTimeoutError",
    "IncorrectCertificateError",
    "IncorrectPrivateKeyError",
    "KeyMismatchError",
    "KeyPermissionError",
    "KeyPolicy",
    "NoCertificateError",
    "NoPrivateKeyError",
    "PKIExistsError",
    "Paths",
    "PlainTextClientError",
    "TLSConfigError",
    "TLSError",
    "check_key_permissions",
    "client_context",
    "cmd_init",
    "cmd_show",
    "describe",
    "describe_all",
    "ensure_demo_certs",
    "expiry_warnings",
    "handshake",
    "init_pki",
    "server_context",
]
