"""Typed configuration, loaded once from TOML.

Every key is optional: the defaults run the appliance on one machine with no other
software (SQLite, local folders, simulated robots). ``load_config`` is the only
place that reads the file; the rest of the code receives frozen dataclasses.
Tables owned by leaf packages (``[robots.*]``, ``[labels]``, ``[tls]``) are kept as
raw mappings here and validated by their owners.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError

#: Characters allowed in an AE title: PS3.5 "AE" VR, default character repertoire
#: without backslash and control characters.
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "FATAL")


def validate_ae_title(value: str, what: str = "AE title") -> str:
    """Check an AE title and return it unchanged.

    Parameters
    ----------
    value : str
        The AE title; case-sensitive, 1-16 characters, no backslash, no control
        characters, not only spaces.
    what : str
        Name used in the error message.

    Returns
    -------
    str
        ``value`` itself.

    Raises
    ------
    ConfigError
        If the title is not valid.
    """
    if not isinstance(value, str) or not _AE_RE.match(value) or not value.strip():
        raise ConfigError(
            f"{what} {value!r} is not valid: use 1-16 printable ASCII characters, no backslash"
        )
    if value != value.strip():
        raise ConfigError(f"{what} {value!r} must not start or end with spaces")
    return value


@dataclass(frozen=True)
class NodeConfig:
    """A known DICOM node and what it may do here."""

    ae_title: str
    host: str = "127.0.0.1"
    port: int = 104
    tls: bool = False
    description: str = ""
    #: Rights: C-STORE to us, C-FIND, C-MOVE (as requester and as destination), C-GET, worklist.
    store: bool = True
    find: bool = True
    move: bool = True
    get: bool = True
    mwl: bool = True

    def may(self, right: str) -> bool:
        """Return whether this node holds ``right`` (store/find/move/get/mwl)."""
        return bool(getattr(self, right))


@dataclass(frozen=True)
class DicomConfig:
    """The DICOM Application Entity."""

    ae_title: str = "DISCPACS"
    #: Address the listeners bind to; ``0.0.0.0`` listens on every network card.
    bind: str = "0.0.0.0"
    port: int = 11112
    #: 2762 is the IANA port for DICOM over TLS; with no [tls] certificate a demo set is made.
    tls_port: int = 2762
    accept_any_ae: bool = True
    #: A second instance with a known SOP Instance UID replaces the first instead of being ignored.
    overwrite: bool = False
    #: C-STORE is refused with 0xA700 when the store's disk has less free space than this.
    free_space_limit_mb: int = 500
    max_associations: int = 20
    #: Largest PDU we accept; big PDUs cut per-PDU overhead on the receive path.
    max_pdu: int = 1048576
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 120.0
    #: Log every worklist C-FIND (modalities poll every few seconds, so it is off by default).
    log_worklist_queries: bool = False
    nodes: tuple[NodeConfig, ...] = ()

    def node(self, ae_title: str) -> NodeConfig | None:
        """Return the known node with this AE title (case-sensitive), if any."""
        for node in self.nodes:
            if node.ae_title == ae_title:
                return node
        return None


@dataclass(frozen=True)
class BurnConfig:
    """Disc publishing."""

    delay: float = 120.0
    group_by: str = "patient_id"


@dataclass(frozen=True)
class HL7Config:
    """The HL7 MLLP listener."""

    bind: str = "0.0.0.0"
    port: int = 2575


@dataclass(frozen=True)
class WebConfig:
    """The web site."""

    bind: str = "0.0.0.0"
    port: int = 3000
    token_days: int = 60
    server_name: str = ""


@dataclass(frozen=True)
class TlsConfig:
    """Certificates for the TLS listeners and outgoing TLS connections (see docs/certificates.md)."""

    cert: str = ""
    key: str = ""
    ca: str = ""
    verify_peer: bool = False
    client_cert: str = ""
    client_key: str = ""
    check_hostname: bool = True
    key_permissions: str = "warn"
    handshake_timeout: float = 10.0
    expiry_warning_days: int = 30


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    data_dir: Path = Path("var")
    log_level: str = "INFO"
    #: Rotate the log file when it reaches this size; keep this many old files.
    log_max_mb: float = 10.0
    log_backups: int = 10
    institution: str = ""
    dicom: DicomConfig = field(default_factory=DicomConfig)
    burn: BurnConfig = field(default_factory=BurnConfig)
    hl7: HL7Config = field(default_factory=HL7Config)
    web: WebConfig = field(default_factory=WebConfig)
    robots: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    labels: Mapping[str, Any] = field(default_factory=dict)
    tls: TlsConfig = field(default_factory=TlsConfig)
    #: The file this configuration was read from, if any.
    source: Path | None = None

    @property
    def store_dir(self) -> Path:
        """Folder of the received DICOM files."""
        return self.data_dir / "store"

    @property
    def database(self) -> Path:
        """The SQLite index."""
        return self.data_dir / "appliance.db"

    @property
    def log_dir(self) -> Path:
        """Folder of the rotating log files."""
        return self.data_dir / "logs"


def _build(cls: type, table: Mapping[str, Any], section: str) -> Any:
    """Make dataclass ``cls`` from a TOML table, rejecting unknown keys and wrong types."""
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"[{section}] has an unknown key {key!r}")
        default = known[key].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"[{section}] {key} must be true or false, not {value!r}")
        if isinstance(default, int | float) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"[{section}] {key} must be a number, not {value!r}")
            value = type(default)(value)
        if isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"[{section}] {key} must be a string, not {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def _check_port(value: int, what: str) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(f"{what} {value} is not a TCP port (0-65535)")


def parse_config(data: Mapping[str, Any], base_dir: Path | None = None) -> Config:
    """Build a :class:`Config` from the parsed TOML document.

    Parameters
    ----------
    data : Mapping
        The TOML document as a mapping.
    base_dir : Path, optional
        Relative ``data_dir`` paths are taken from here (the config file's folder);
        default: the working directory.

    Raises
    ------
    ConfigError
        On unknown tables or keys, wrong types or invalid values.
    """
    allowed = {"appliance", "dicom", "burn", "hl7", "web", "robots", "labels", "tls"}
    for section in data:
        if section not in allowed:
            raise ConfigError(f"unknown table [{section}] (known: {', '.join(sorted(allowed))})")
    top = dict(data.get("appliance", {}))
    data_dir = Path(top.pop("data_dir", "var"))
    if not data_dir.is_absolute() and base_dir is not None:
        data_dir = base_dir / data_dir
    cfg = _build(Config, top, "appliance")
    level = cfg.log_level.upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"[appliance] log_level {cfg.log_level!r} is not one of {', '.join(LOG_LEVELS)}")

    dicom_table = dict(data.get("dicom", {}))
    node_tables = dicom_table.pop("nodes", [])
    dicom = _build(DicomConfig, dicom_table, "dicom")
    validate_ae_title(dicom.ae_title, "[dicom] ae_title")
    if len(dicom.ae_title) > 13:
        # The burn suffixes (_E, _P, _TE, _TP) must still fit in 16 characters.
        raise ConfigError(f"[dicom] ae_title {dicom.ae_title!r} is too long: at most 13 characters")
    _check_port(dicom.port, "[dicom] port")
    _check_port(dicom.tls_port, "[dicom] tls_port")
    nodes = []
    seen: set[str] = set()
    for i, table in enumerate(node_tables):
        if "ae_title" not in table:
            raise ConfigError(f"[[dicom.nodes]] entry {i + 1} has no ae_title")
        node = _build(NodeConfig, table, "dicom.nodes")
        validate_ae_title(node.ae_title, f"[[dicom.nodes]] entry {i + 1} ae_title")
        _check_port(node.port, f"[[dicom.nodes]] {node.ae_title} port")
        if node.ae_title in seen:
            raise ConfigError(f"[[dicom.nodes]] {node.ae_title!r} is listed twice")
        seen.add(node.ae_title)
        nodes.append(node)
    dicom = replace(dicom, nodes=tuple(nodes))

    burn = _build(BurnConfig, data.get("burn", {}), "burn")
    if burn.group_by not in ("patient_id", "study_uid"):
        raise ConfigError(f"[burn] group_by must be 'patient_id' or 'study_uid', not {burn.group_by!r}")
    hl7 = _build(HL7Config, data.get("hl7", {}), "hl7")
    _check_port(hl7.port, "[hl7] port")
    web = _build(WebConfig, data.get("web", {}), "web")
    _check_port(web.port, "[web] port")
    tls = _build(TlsConfig, data.get("tls", {}), "tls")
    if tls.key_permissions not in ("refuse", "warn", "ignore"):
        raise ConfigError(f"[tls] key_permissions must be 'refuse', 'warn' or 'ignore', not {tls.key_permissions!r}")
    if base_dir is not None:
        # Certificate paths in the file are relative to the file's folder.
        tls = replace(tls, **{k: str(base_dir / v) for k in ("cert", "key", "ca", "client_cert", "client_key")
                              if (v := getattr(tls, k)) and not Path(v).is_absolute()})
    return replace(
        cfg,
        data_dir=data_dir,
        log_level=level,
        dicom=dicom,
        burn=burn,
        hl7=hl7,
        web=web,
        robots=dict(data.get("robots", {})),
        labels=dict(data.get("labels", {})),
        tls=tls,
    )


def find_config_file(explicit: str | os.PathLike[str] | None) -> Path | None:
    """Resolve which config file to read: explicit, ``$APPLIANCE_CONFIG``, ``./appliance.toml``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("APPLIANCE_CONFIG")
    if env:
        return Path(env)
    local = Path("appliance.toml")
    return local if local.is_file() else None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the configuration the way every CLI command does.

    Parameters
    ----------
    path : path-like, optional
        ``--config FILE``; when absent, ``$APPLIANCE_CONFIG``, then ``appliance.toml``
        in the working directory, then the built-in defaults.

    Raises
    ------
    ConfigError
        If the file is missing, not TOML, or holds invalid settings.
    """
    file = find_config_file(path)
    if file is None:
        return parse_config({})
    try:
        with open(file, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    cfg = parse_config(data, base_dir=file.resolve().parent)
    return replace(cfg, source=file)
