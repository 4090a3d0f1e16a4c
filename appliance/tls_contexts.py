"""TLS contexts built from the configuration, through the ``tls`` package.

With no ``[tls] cert`` the appliance makes (once) a self-signed demo set under
``<data_dir>/tls-demo`` so the TLS port can be tried at once, and says loudly that
it must be replaced.
"""

from __future__ import annotations

import logging
import ssl
from typing import cast

import tls
from appliance.config import Config

LOGGER = logging.getLogger(__name__)

DEMO_DIR = "tls-demo"


def server_context(cfg: Config, verify_peer: bool | None = None) -> ssl.SSLContext:
    """Server context for the TLS listeners (DICOM, HL7, HTTPS).

    Parameters
    ----------
    cfg : Config
        The configuration (``[tls]``).
    verify_peer : bool, optional
        Ask clients for a certificate; default ``[tls] verify_peer``. The web site passes False: patients
        open their links from browsers that have no client certificate.

    Raises
    ------
    tls.TLSConfigError
        With the user's words: "No certificate", "Key does not match certificate"...
    """
    t = cfg.tls
    verify = t.verify_peer if verify_peer is None else verify_peer
    if not t.cert:
        paths = tls.ensure_demo_certs(cfg.data_dir / DEMO_DIR)
        LOGGER.warning(tls.DEMO_WARNING.format(directory=cfg.data_dir / DEMO_DIR))
        return tls.server_context(
            paths.server_cert, paths.server_key, paths.ca_cert, verify, key_policy=_key_policy(cfg)
        )
    return tls.server_context(t.cert, t.key or None, t.ca or None, verify, key_policy=_key_policy(cfg))


def client_context(cfg: Config) -> ssl.SSLContext:
    """Client context for outgoing TLS (C-ECHO, C-STORE, C-MOVE to a node with ``tls = true``)."""
    t = cfg.tls
    if not t.cert and not t.client_cert:
        paths = tls.ensure_demo_certs(cfg.data_dir / DEMO_DIR)
        return tls.client_context(
            paths.client_cert, paths.client_key, paths.ca_cert, t.check_hostname, key_policy=_key_policy(cfg)
        )
    return tls.client_context(
        t.client_cert or None, t.client_key or None, t.ca or None, t.check_hostname, key_policy=_key_policy(cfg)
    )


def broker_context(cfg: Config) -> ssl.SSLContext:
    """Client context for the message broker (``[amqp] tls``): never the demo set.

    The broker's certificate is checked against ``[tls] ca`` (else the system's CAs); ``client_cert`` and
    ``client_key`` are offered only when set.
    """
    t = cfg.tls
    return tls.client_context(
        t.client_cert or None, t.client_key or None, t.ca or None, t.check_hostname, key_policy=_key_policy(cfg)
    )


def _key_policy(cfg: Config) -> tls.KeyPolicy:
    """``[tls] key_permissions`` as the TLS package types it (the config loader has checked its value)."""
    return cast("tls.KeyPolicy", cfg.tls.key_permissions)


def expiry_warnings(cfg: Config) -> list[str]:
    """Sentences about certificates that expire within ``expiry_warning_days`` (for the log and staff UI)."""
    t = cfg.tls
    files = [f for f in (t.cert, t.ca, t.client_cert) if f]
    if not files:
        demo = cfg.data_dir / DEMO_DIR
        files = [str(p) for p in (demo / "server.crt", demo / "ca.crt") if p.exists()]
    return [w.message for w in tls.expiry_warnings(files, days=t.expiry_warning_days)]
