"""Administration for the web: settings, logs, messaging state, certificate warnings, C-ECHO of known nodes.

The room of the admin pages. It sends no DICOM itself: the composition root hands it an ``echo`` callable.
"""

from __future__ import annotations

import dataclasses
import io
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from appliance.config import LOG_LEVELS, Config, NodeConfig
from appliance.db import Database
from appliance.errors import NotFound
from appliance.log import LOG_FILE
from appliance.nodes import NodeRegistry

#: C-ECHO a node within a timeout (seconds): (online, reason when offline).
Echo = Callable[[NodeConfig, float], tuple[bool, str]]

#: Seconds the certificate expiry warnings are cached (reading certificates on every page is wasteful).
_CERT_CACHE_SECONDS = 600.0

#: Config keys whose values the settings page never shows.
_SECRET_RE = re.compile(r"password|passphrase|secret|api_key|private|credential", re.IGNORECASE)
_LOG_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (TRACE|DEBUG|INFO|WARNING|ERROR|FATAL|CRITICAL)\s+"
                     r"(\S+): (.*)$")


@dataclasses.dataclass(frozen=True)
class LogRecord:
    """One record of the appliance log (continuation lines, such as tracebacks, in ``text``)."""

    time: str
    level: str
    logger: str
    text: str


def mask_settings(cfg: Config) -> list[tuple[str, list[tuple[str, str]]]]:
    """The effective configuration as (section, [(key, value)]) for display, secrets replaced by ``••••••``."""

    def show(key: str, value: Any) -> str:
        if _SECRET_RE.search(key) and value not in ("", None):
            return "••••••"
        if isinstance(value, Mapping):
            return ", ".join(f"{k} = {show(str(k), v)}" for k, v in value.items()) or "(none)"
        if isinstance(value, list | tuple):
            return ", ".join(show(key, v) for v in value) or "(none)"
        if isinstance(value, bool):  # as the config file spells it, so it can be copied there
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    sections: list[tuple[str, list[tuple[str, str]]]] = []
    top: list[tuple[str, str]] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            rows = []
            for g in dataclasses.fields(value):
                inner = getattr(value, g.name)
                if g.name == "nodes":
                    continue
                rows.append((g.name, show(g.name, inner)))
            sections.append((f.name, rows))
        elif isinstance(value, Mapping):
            if not value and f.name == "robots":  # the built-in demo robots run when no table is given
                from appliance.discs.publishing import robot_tables

                value = {f"{name} (built-in demo)": table for name, table in robot_tables(cfg).items()}
            if not value:
                sections.append((f.name, [("(every key)", "the defaults (see docs)")]))
                continue
            flat = [(str(k), show(str(k), v)) for k, v in value.items() if not isinstance(v, Mapping)]
            if flat:
                sections.append((f.name, flat))
            for name, table in value.items():
                if isinstance(table, Mapping):
                    sections.append((f"{f.name}.{name}", [(str(k), show(str(k), v)) for k, v in table.items()]))
        else:
            top.append((f.name, show(f.name, value)))
    return [("appliance", top), *sections]


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

    def settings(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """The effective configuration, secrets masked."""
        return mask_settings(self.config)

    def log_files(self) -> list[Path]:
        """The log file and its rotated copies, oldest first."""
        folder = self.config.log_dir
        files = sorted(folder.glob(LOG_FILE + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit()
                       else 0)
        current = folder / LOG_FILE
        return files + ([current] if current.exists() else [])

    def log_records(self, min_level: str = "INFO", limit: int = 500) -> list[LogRecord]:
        """The newest ``limit`` records at ``min_level`` or above, newest first."""
        wanted = set(LOG_LEVELS[LOG_LEVELS.index(min_level):]) | ({"CRITICAL"} if min_level != "TRACE" else set())
        records: list[LogRecord] = []
        for path in reversed(self.log_files()):
            for record in reversed(list(_parse(path))):
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
            {"time": m.time, "direction": m.direction, "address": m.address, "message_id": m.message_id,
             "outcome": m.outcome, "error": m.error, "text": m.body.decode("utf-8", "replace")[:2000]}
            for m in AmqpLog(self.db).recent(50)]
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


def _parse(path: Path, tail: int = 4 * 1024 * 1024) -> Iterator[LogRecord]:
    """The records of a log file's last ``tail`` bytes, oldest first."""
    with open(path, "rb") as fh:
        fh.seek(0, io.SEEK_END)
        fh.seek(max(0, fh.tell() - tail))
        text = fh.read().decode("utf-8", "replace")
    current: LogRecord | None = None
    for line in text.splitlines():
        m = _LOG_RE.match(line)
        if m:
            if current:
                yield current
            level = "FATAL" if m.group(2) == "CRITICAL" else m.group(2)
            current = LogRecord(m.group(1), level, m.group(3), m.group(4))
        elif current:
            current = dataclasses.replace(current, text=current.text + "\n" + line)
    if current:
        yield current
