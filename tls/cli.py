"""Text for the ``appliance tls`` commands; ``appliance.cli`` parses arguments and prints.

Each function returns what to print on success and raises a :class:`tls.errors.TLSError` on failure; its
message is what to print on stderr and its ``exit_code`` what to exit with.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tls.certs import (
    DEFAULT_DAYS,
    DEFAULT_ORG,
    CertInfo,
    StrPath,
    default_names,
    describe,
    describe_all,
    init_pki,
)
from tls.errors import KeyMismatchError


def _fmt_time(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _usage(info: CertInfo) -> str:
    parts = ["CA"] if info.is_ca else []
    names = {"serverAuth": "TLS server", "clientAuth": "TLS client"}
    parts += [f"{names.get(u, u)} ({u})" if u in names else u for u in info.extended_key_usage]
    if not parts:
        parts = ["any (no extended key usage)"]
    return ", ".join(parts)


def format_info(info: CertInfo, now: dt.datetime | None = None) -> str:
    """Format one certificate description as aligned ``Label: value`` lines.

    Parameters
    ----------
    info : CertInfo
    now : datetime.datetime, optional
        Reference time for the days-left figure; defaults to the current time.

    Returns
    -------
    str
        Lines without a trailing newline.
    """
    left = info.days_left(now)
    status = "EXPIRED" if info.is_expired(now) else f"{left} days left"
    names = [f"DNS:{n}" for n in info.dns_names] + [f"IP:{a}" for a in info.ip_addresses]
    rows = [
        ("Subject", info.subject),
        ("Issuer", info.issuer + ("  (self-signed)" if info.self_signed else "")),
        ("Valid from", _fmt_time(info.not_before)),
        ("Valid until", f"{_fmt_time(info.not_after)}  ({status})"),
        ("Names (SAN)", ", ".join(names) or "none"),
        ("Usage", _usage(info)),
        ("Key", info.key_type),
        ("Serial", f"{info.serial_number:X}"),
        ("SHA-256", info.fingerprint_sha256),
    ]
    if info.key_matches is not None:
        rows.append(("Private key", "matches" if info.key_matches else "DOES NOT MATCH"))
    return "\n".join(f"  {label + ':':<13} {value}" for label, value in rows)


def cmd_show(file: StrPath, key: StrPath | None = None, now: dt.datetime | None = None) -> str:
    """Describe every certificate in `file` (``appliance tls show FILE [--key KEY]``).

    Parameters
    ----------
    file : str or os.PathLike
        Certificate file, PEM (a chain or bundle is shown certificate by certificate) or DER.
    key : str or os.PathLike, optional
        Private key to check against the first certificate.
    now : datetime.datetime, optional
        Reference time; defaults to the current time.

    Returns
    -------
    str
        Text to print. An expired certificate is shown, not refused.

    Raises
    ------
    NoCertificateError, IncorrectCertificateError
        `file` is missing or holds no certificate.
    NoPrivateKeyError, IncorrectPrivateKeyError
        `key` is missing or holds no usable private key.
    KeyMismatchError
        `key` does not belong to the certificate; a script can rely on the exit code.
    """
    infos = describe_all(file, key)
    if key is not None and infos[0].key_matches is False:
        raise KeyMismatchError(f"Key does not match certificate: {key} is not the key of {file}", key)
    blocks = []
    for index, info in enumerate(infos, start=1):
        title = f"{Path(file)}" if len(infos) == 1 else f"{Path(file)} (certificate {index} of {len(infos)})"
        blocks.append(f"{title}\n{format_info(info, now)}")
    return "\n\n".join(blocks)


def cmd_init(
    directory: StrPath,
    hostnames: list[str],
    ips: list[str],
    *,
    org: str = DEFAULT_ORG,
    country: str | None = None,
    days: int = DEFAULT_DAYS,
    overwrite: bool = False,
) -> str:
    """Create a CA, a server and a client certificate in `directory` (``appliance tls init DIR``).

    Parameters
    ----------
    directory : str or os.PathLike
        Created if needed.
    hostnames, ips : list of str
        Names and addresses the peers use to reach the appliance (``--host``, ``--ip``, repeatable). When both
        are empty, :func:`tls.certs.default_names` is used.
    org, country, days : optional
        As for :func:`tls.certs.init_pki`.
    overwrite : bool
        Replace existing files (``--force``).

    Returns
    -------
    str
        What was created, and the ``[tls]`` table to paste into the configuration.

    Raises
    ------
    PKIExistsError
        Files exist and `overwrite` is false.
    TLSConfigError
        A malformed host name, address or country.
    """
    if not hostnames and not ips:
        hostnames, ips = default_names()
    paths = init_pki(directory, hostnames, ips, org=org, country=country, days=days, overwrite=overwrite)
    server = describe(paths.server_cert)
    names = ", ".join([*server.dns_names, *server.ip_addresses])
    until = server.not_after.date().isoformat()
    files = [
        (paths.ca_cert, "CA certificate: give it to every node that must trust the appliance"),
        (paths.ca_key, "CA key: keep it offline, it is needed only to issue more certificates"),
        (paths.server_cert, f"server certificate for {names}, valid until {until}"),
        (paths.server_key, "server key (mode 0600)"),
        (paths.client_cert, "client certificate, for outgoing connections or tests"),
        (paths.client_key, "client key (mode 0600)"),
    ]
    width = max(len(str(p)) for p, _ in files)
    lines = [f"Created a CA, a server and a client certificate in {Path(directory)}:"]
    lines += [f"  {p!s:<{width}}  {text}" for p, text in files]
    lines += [
        "",
        "Add to appliance.toml:",
        "[tls]",
        f'cert = "{paths.server_cert.resolve()}"',
        f'key = "{paths.server_key.resolve()}"',
        f'ca = "{paths.ca_cert.resolve()}"',
        "verify_peer = false   # true: accept only clients with a certificate signed by this CA",
    ]
    return "\n".join(lines)
