"""Known DICOM nodes: those of the config file (read-only) and those added in the staff UI (kept in SQLite).

:meth:`Appliance.node` and :meth:`Appliance.may` ask this registry, so a node added in the UI may associate
at once, with its rights, without a restart. A node of the config file always wins over a UI node of the
same AE title, and the UI cannot add one that the file already has.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, fields

from appliance.config import TS_NAMES, NodeConfig, validate_ae_title
from appliance.db import Database
from appliance.errors import ConfigError, InvalidValue, NotFound

#: The rights of a node, each a boolean of :class:`NodeConfig` and a column of ``dicom_nodes``; the association
#: policy (:data:`appliance.dicom.policy.RIGHTS`) maps SOP classes to these names.
RIGHTS = ("store", "find", "move", "get", "mwl", "commit")
#: The columns written by :meth:`NodeRegistry.add` / ``update`` after the AE title ("commit" is an SQL keyword).
_COLUMNS = ("host", "port", "tls", "description", *RIGHTS, "preferred_ts")
_QUOTED = ", ".join(f'"{c}"' for c in _COLUMNS)
_SET = ", ".join(f'"{c}" = ?' for c in _COLUMNS)
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class KnownNode:
    """A node and where it is defined: ``"config"`` (read-only) or ``"ui"``."""

    node: NodeConfig
    source: str

    @property
    def editable(self) -> bool:
        """Whether the staff UI may change it."""
        return self.source == "ui"


def validate_host(host: str) -> str:
    """Return ``host`` if it is an IPv4 or IPv6 address or a host name (RFC 1123), else raise.

    Raises
    ------
    InvalidValue
        Naming what was wrong.
    """
    host = host.strip()
    if not host:
        raise InvalidValue("the host is empty: give a host name or an IP address")
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host):
        raise InvalidValue(f"{host!r} is not a valid IPv4 address")
    if ":" in host:
        raise InvalidValue(f"{host!r} is not a valid IPv6 address")
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL_RE.match(label) for label in name.split(".")):
        raise InvalidValue(f"{host!r} is not a valid host name: letters, digits and '-' in dot-separated parts")
    return host


def validate_node(node: NodeConfig) -> NodeConfig:
    """Check every field of a node typed in the staff UI and return it with the host normalised.

    Raises
    ------
    InvalidValue
        For a bad AE title, host, port, description or preferred transfer syntax.
    """
    try:
        validate_ae_title(node.ae_title)
    except ConfigError as exc:
        raise InvalidValue(str(exc)) from None
    if not 1 <= node.port <= 65535:
        raise InvalidValue(f"port {node.port} is not a TCP port (1-65535)")
    if len(node.description) > 64:
        raise InvalidValue("the description has more than 64 characters")
    if node.preferred_ts and node.preferred_ts not in TS_NAMES:
        raise InvalidValue(f"preferred transfer syntax {node.preferred_ts!r} is not one of: {', '.join(TS_NAMES)}")
    return NodeConfig(**{**{f.name: getattr(node, f.name) for f in fields(node)}, "host": validate_host(node.host)})


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeRegistry:
    """Config nodes plus UI nodes.

    Parameters
    ----------
    db : Database
        The appliance database (table ``dicom_nodes``).
    config_nodes : sequence of NodeConfig
        ``[[dicom.nodes]]`` of the config file.
    """

    def __init__(self, db: Database, config_nodes: Sequence[NodeConfig]) -> None:
        self.db = db
        self.config_nodes = {n.ae_title: n for n in config_nodes}

    @staticmethod
    def _node(row: sqlite3.Row) -> NodeConfig:
        return NodeConfig(
            row["ae_title"],
            row["host"],
            row["port"],
            bool(row["tls"]),
            row["description"],
            *(bool(row[r]) for r in RIGHTS),
            preferred_ts=row["preferred_ts"],
        )

    def get(self, ae_title: str) -> NodeConfig | None:
        """The node with this AE title (case-sensitive): the config file's first, then the UI's."""
        node = self.config_nodes.get(ae_title)
        if node is not None:
            return node
        # One indexed row per association or C-STORE: cheap enough to need no cache, and always current.
        row = self.db.conn.execute("SELECT * FROM dicom_nodes WHERE ae_title = ?", (ae_title,)).fetchone()
        return self._node(row) if row else None

    def all(self) -> list[KnownNode]:
        """Every known node, config file first, each part sorted by AE title."""
        ui = [self._node(r) for r in self.db.conn.execute("SELECT * FROM dicom_nodes ORDER BY ae_title")]
        return [KnownNode(n, "config") for n in sorted(self.config_nodes.values(), key=lambda n: n.ae_title)] + [
            KnownNode(n, "ui") for n in ui if n.ae_title not in self.config_nodes
        ]

    def find(self, ae_title: str) -> KnownNode | None:
        """The node with this AE title and where it comes from."""
        if ae_title in self.config_nodes:
            return KnownNode(self.config_nodes[ae_title], "config")
        node = self.get(ae_title)
        return KnownNode(node, "ui") if node else None

    def _values(self, node: NodeConfig) -> tuple[object, ...]:
        return (
            node.host,
            node.port,
            int(node.tls),
            node.description,
            *(int(getattr(node, r)) for r in RIGHTS),
            node.preferred_ts,
        )

    def add(self, node: NodeConfig) -> NodeConfig:
        """Add a UI node.

        Raises
        ------
        InvalidValue
            If a field is invalid or the AE title is already known.
        """
        node = validate_node(node)
        if self.get(node.ae_title) is not None:
            raise InvalidValue(f"a node with AE title {node.ae_title!r} already exists")
        now = _now()
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    f"INSERT INTO dicom_nodes (ae_title, {_QUOTED}, created, updated)"
                    f" VALUES ({', '.join('?' * (len(_COLUMNS) + 3))})",
                    (node.ae_title, *self._values(node), now, now),
                )
        except sqlite3.IntegrityError:
            raise InvalidValue(f"a node with AE title {node.ae_title!r} already exists") from None
        return node

    def _editable(self, ae_title: str) -> None:
        if ae_title in self.config_nodes:
            raise InvalidValue(f"node {ae_title!r} is defined in the config file; change it there")
        if self.get(ae_title) is None:
            raise NotFound(f"no node with AE title {ae_title!r}")

    def update(self, ae_title: str, node: NodeConfig) -> NodeConfig:
        """Replace a UI node (its AE title may change).

        Raises
        ------
        InvalidValue
            For invalid fields, a node of the config file, or a new AE title already in use.
        NotFound
            If there is no UI node ``ae_title``.
        """
        self._editable(ae_title)
        node = validate_node(node)
        if node.ae_title != ae_title and self.get(node.ae_title) is not None:
            raise InvalidValue(f"a node with AE title {node.ae_title!r} already exists")
        with self.db.transaction() as conn:
            conn.execute(
                f"UPDATE dicom_nodes SET ae_title = ?, {_SET}, updated = ? WHERE ae_title = ?",
                (node.ae_title, *self._values(node), _now(), ae_title),
            )
        return node

    def delete(self, ae_title: str) -> None:
        """Delete a UI node.

        Raises
        ------
        InvalidValue
            For a node of the config file.
        NotFound
            If there is no such node.
        """
        self._editable(ae_title)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM dicom_nodes WHERE ae_title = ?", (ae_title,))
