"""Administration for the web: settings, logs, messaging state, certificate warnings, C-ECHO of known nodes.

The room of the admin pages. It sends no DICOM itself: the composition root hands it an ``echo`` callable.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from appliance.config import LOG_LEVELS, Config, NodeConfig
from appliance.db import Database
from appliance.errors import NotFound
from appliance.log import LOG_FILE, LogRecord, read_records
from appliance.nodes import NodeRegistry

#: C-ECHO a node within a timeout (seconds): (online, reason when offline).
Echo = Callable[[NodeConfig, float], tuple[bool, str]]

#: Seconds the certificate expiry warnings are cached (reading certificates on every page is wasteful).
_CERT_CACHE_SECONDS = 600.0

#: Config keys whose values the settings page never shows.
_SECRET_RE = re.compile(r"password|passphrase|secret|api_key|private|credential", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Masked:
    """A secret of the configuration: the settings hand out this marker, never the value."""


#: The one marker of every masked value.
MASKED = Masked()


@dataclasses.dataclass(frozen=True)
class SettingsSection:
    """One table of the effective configuration (``web``, ``robots.epson``...), secrets masked."""

    name: str
    #: (key, value) as parsed; secret values, also inside tables and lists, replaced by :data:`MASKED`.
    values: list[tuple[str, Any]]
    #: A built-in demo robot (there is no ``[robots.*]`` table in the config).
    demo: bool = False
    #: An empty table: every key has its default.
    defaults: bool = False


def _mask(key: str, value: Any) -> Any:
    """``value`` with secrets (by key name) replaced by :data:`MASKED`."""
    if _SECRET_RE.search(key) and value not in ("", None):
        return MASKED
    if isinstance(value, Mapping):
        return {k: _mask(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(key, v) for v in value]
    return value


def effective_settings(cfg: Config) -> list[SettingsSection]:
    """The effective configuration, table by table, secrets masked (the known nodes have their own page)."""
    sections: list[SettingsSection] = []
    top: list[tuple[str, Any]] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            rows = [
                (g.name, _mask(g.name, getattr(value, g.name))) for g in dataclasses.fields(value) if g.name != "nodes"
            ]
            sections.append(SettingsSection(f.name, rows))
        elif isinstance(value, Mapping):
            demo = False
            if not value and f.name == "robots":  # the built-in demo robots run when no table is given
                from appliance.discs.publishing import robot_tables

                value, demo = robot_tables(cfg), True
            if not value:
                sections.append(SettingsSection(f.name, [], defaults=True))
                continue
            flat = [(str(k), _mask(str(k), v)) for k, v in value.items() if not isinstance(v, Mapping)]
            if flat:
                sections.append(SettingsSection(f.name, flat))
            for name, table in value.items():
                if isinstance(table, Mapping):
                    sections.append(
                        SettingsSection(
                            f"{f.name}.{name}", [(str(k), _mask(str(k), v)) for k, v in table.items()], demo
                        )
                    )
        else:
            top.append((f.name, _mask(f.name, value)))
    return [SettingsSection("appliance", top), *sections]


class Admin:
    """Settings, logs and health of the appliance for its administrators.

    Parameters
    ----------
    config : Config
        The effective configuration.
    db : Database
        The database (the AMQP message log).
    nodes : NodeRegistry
        The known DICOM nodes.
    echo : Echo, optional
        C-ECHO of a node (the composition root's, with our AE title and TLS); without it every echo is offline.
    """

    def __init__(self, config: Config, db: Database, nodes: NodeRegistry, echo: Echo | None = None) -> None:
        self.config = config
        self.db = db
        self.nodes = nodes
        self._echo = echo
        #: The running AMQP service of ``appliance serve`` (status() -> dict), if [amqp] is enabled.
        self.messaging: Any = None
        self._cert_cache: tuple[float, list[str]] | None = None

    def echo(self, ae_title: str, timeout: float = 5.0) -> tuple[bool, str]:
        """C-ECHO a known node: (online, reason).

        Raises
        ------
        NotFound
            If the node is not known.
        """
        node = self.nodes.get(ae_title)
        if node is None:
            raise NotFound(f"no node with AE title {ae_title!r}")
        if self._echo is None:
            return False, "C-ECHO is not available here"
        online, reason = self._echo(node, timeout)
        return online, "Online" if online else reason

    def settings(self) -> list[SettingsSection]:
        """The effective configuration, secrets masked."""
        return effective_settings(self.config)

    def log_files(self) -> list[Path]:
        """The log file and its rotated copies, oldest first."""
        folder = self.config.log_dir
        files = sorted(folder.glob(LOG_FILE + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
        current = folder / LOG_FILE
        return files + ([current] if current.exists() else [])

    def log_records(self, min_level: str = "INFO", limit: int = 500) -> list[LogRecord]:
        """The newest ``limit`` records at ``min_level`` or above, newest first."""
        wanted = set(LOG_LEVELS[LOG_LEVELS.index(min_level) :]) | ({"CRITICAL"} if min_level != "TRACE" else set())
        records: list[LogRecord] = []
        for path in reversed(self.log_files()):
            for record in reversed(list(read_records(path))):
                if record.level in wanted:
                    records.append(record)
                    if len(records) >= limit:
                        return records
        return records

    def logs_zip(self) -> IO[bytes]:
        """Every log file in one zip, rewound."""
        out = tempfile.TemporaryFile()  # noqa: SIM115
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in self.log_files():
                zf.write(path, path.name)
        out.seek(0)
        return out

    def amqp_state(self) -> dict[str, Any]:
        """The AMQP links, the outbox backlog and the newest messages in and out (for the settings page)."""
        from appliance.notify.log import AmqpLog

        state: dict[str, Any] = {"enabled": self.config.amqp.enabled, "status": None}
        if self.messaging is not None:
            state["status"] = self.messaging.status()
        state["messages"] = [
            {
                "time": m.time,
                "direction": m.direction,
                "address": m.address,
                "message_id": m.message_id,
                "outcome": m.outcome,
                "error": m.error,
                "text": m.body.decode("utf-8", "replace")[:2000],
            }
            for m in AmqpLog(self.db).recent(50)
        ]
        return state

    def cert_warnings(self) -> list[str]:
        """Certificates that expire within ``[tls] expiry_warning_days`` (cached for a few minutes)."""
        from appliance import tls_contexts

        now = time.monotonic()
        if self._cert_cache is None or now - self._cert_cache[0] > _CERT_CACHE_SECONDS:
            try:
                warnings = tls_contexts.expiry_warnings(self.config)
            except Exception as exc:  # a broken certificate file must not break every staff page
                warnings = [f"The certificates could not be checked: {exc}"]
            self._cert_cache = (now, warnings)
        return self._cert_cache[1]
