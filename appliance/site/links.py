"""Patient links: the address they name, the link of a study, the token slip that prints it.

The room of the front desk that hands a patient their link (web study page, ``appliance token``, disc labels).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import tempfile
from pathlib import Path

from appliance.config import Config
from appliance.site.studies import Studies
from appliance.site.tokens import Tokens


def interface_addresses() -> list[str]:
    """This machine's interface addresses: IPv4 (Linux ``SIOCGIFADDR`` per interface), then IPv6 (``if_inet6``)."""
    import fcntl
    import struct

    found: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                packed = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
                found.append(socket.inet_ntoa(packed[20:24]))
    with contextlib.suppress(OSError), open("/proc/net/if_inet6", encoding="ascii") as table:
        for line in table:
            raw = line.split()[0]
            found.append(str(ipaddress.IPv6Address(int(raw, 16))))
    return found


def machine_address(addresses: list[str] | None = None) -> str:
    """The address patient links name when ``[web] server_name`` is empty.

    The first interface address a phone on the network can reach: IPv4 first, else a global IPv6 address
    (loopback and link-local skipped). The host name only when there is none (the log then warns: a name from
    ``/etc/hosts`` often resolves to 127.0.1.1 and reaches nobody else).
    """
    usable = []
    for text in interface_addresses() if addresses is None else addresses:
        address = ipaddress.ip_address(text)
        if not (address.is_loopback or address.is_link_local or address.is_unspecified):
            usable.append(address)
    usable.sort(key=lambda a: a.version)  # IPv4 first
    if not usable:
        return socket.gethostname()
    best = usable[0]
    return f"[{best}]" if best.version == 6 else str(best)


class Links:
    """Patient links of stored studies.

    Parameters
    ----------
    config : Config
        ``[web]`` (address, port, scheme, slip paper), ``[labels]`` and the institution.
    tokens : Tokens
        The patient tokens.
    studies : Studies
        The stored studies (a link is only for a stored study).
    """

    def __init__(self, config: Config, tokens: Tokens, studies: Studies) -> None:
        self.config = config
        self.tokens = tokens
        self.studies = studies

    def today(self) -> dt.date:
        """Today, by the token clock."""
        return self.tokens.today()

    def base_url(self) -> str:
        """``http(s)://host:port`` of patient links: ``[web] server_name``, else the bind or machine address."""
        web = self.config.web
        scheme = "https" if web.https else "http"
        host = web.server_name or (web.bind if web.bind not in ("0.0.0.0", "::", "") else machine_address())
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        default = 443 if web.https else 80
        return f"{scheme}://{host}" + ("" if web.port == default else f":{web.port}")

    def link(self, study_uid: str) -> str:
        """The patient link of a stored study, giving it a token first if it has none.

        Raises
        ------
        NotFound
            If the study is not stored.
        """
        study = self.studies.study(study_uid)
        self.tokens.ensure(study_uid, study["study_date"])
        return f"{self.base_url()}/token?{self.tokens.token(study_uid)}"

    def token_slip(self, study_uid: str, paper: str | None = None) -> bytes:
        """The patient's token slip as PDF bytes (labels.render_token_slip).

        Raises
        ------
        NotFound
            If the study is not stored.
        """
        from labels import LabelLayout, TokenSlipFields, render_token_slip

        study = self.studies.study(study_uid)
        link = self.link(study_uid)
        info = self.tokens.get(study_uid)
        base = self.config.source.parent if self.config.source else None
        layout = LabelLayout.from_options(self.config.labels, base_dir=base)
        fields = TokenSlipFields(
            link=link,
            patient_name=study["patient_name"],
            study_date=study["study_date"],
            expires=info.valid_until if info else None,
            institution=self.config.institution,
        )
        with tempfile.TemporaryDirectory() as tmp:
            out = render_token_slip(fields, paper or self.config.web.slip_paper, Path(tmp) / "slip.pdf", layout)
            return out.read_bytes()
