"""What the staff UI shows of storages, maintenance tasks and e-mail alerts, and the admin actions on them.

Reads the running appliance's storages and the task and mail tables; kept apart from :mod:`appliance.site.service`
so each stays one responsibility.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import InvalidValue
from appliance.maintenance.tasks import Task, TaskStore
from appliance.maintenance.windows import DAYS, Schedule

_MB = 1024 * 1024


@dataclass(frozen=True)
class StorageRow:
    """One storage as the Storages page lists it."""

    number: int
    path: str
    state: str
    problem: str
    enabled: bool
    free_mb: int
    total_mb: int
    used_mb: int
    limit_mb: int
    instances: int
    stored_mb: int


@dataclass(frozen=True)
class KindRow:
    """One task kind on the Tasks page: its weekly grid and its tasks."""

    kind: str
    windows: tuple[str, ...]
    grid: list[list[bool]]
    running: list[Task]
    recent: list[Task]


class UpkeepView:
    """Storages, tasks and mail of one appliance for the staff UI.

    Parameters
    ----------
    app : Appliance
        The core (its storages and database).
    config : Config
        The configuration (windows, e-mail).
    """

    days = DAYS

    def __init__(self, app: Any, config: Config) -> None:
        self.app = app
        self.config = config

    def storages(self) -> list[StorageRow]:
        """Every storage with its state, space and instance count."""
        counts = self.app.store_area.instance_counts()
        rows = []
        for s in self.app.store_area.all():
            state = (
                "unavailable" if not s.available else "moving" if s.moving else "enabled" if s.enabled else "disabled"
            )
            total, free = s.total_bytes(), s.free_bytes()
            count, size = counts.get(s.number, (0, 0))
            rows.append(
                StorageRow(
                    s.number,
                    str(s.root),
                    state,
                    s.problem,
                    s.enabled,
                    free // _MB,
                    total // _MB,
                    (total - free) // _MB,
                    s.free_space_limit_mb,
                    count,
                    size // _MB,
                )
            )
        return rows

    def add_storage(self, path: str, limit_mb: str) -> int:
        """Add a storage folder (admins); it takes files after the configured ones.

        Raises
        ------
        InvalidValue
            For a relative path, a bad limit, or a folder that is a storage already.
        """
        from appliance.errors import ConfigError

        if not limit_mb.strip().isdigit():
            raise InvalidValue("The free-space limit must be a whole number of MB.")
        try:
            return int(self.app.store_area.add(Path(path.strip()), int(limit_mb)))
        except ConfigError as exc:
            raise InvalidValue(str(exc)) from None

    def set_enabled(self, number: int, enabled: bool) -> None:
        """Let a storage take new files, or not (admins)."""
        try:
            self.app.store_area.set_enabled(number, enabled)
        except KeyError:
            raise InvalidValue(f"There is no storage {number}.") from None

    def kinds(self) -> list[KindRow]:
        """Archiving, deletion and forwarding: weekly grid, running and recent tasks (forwarding has none: it sends
        continuously while its window is open)."""
        store = TaskStore(self.app.db)
        recent = store.recent(100)
        rows = []
        for kind in ("archiving", "deletion", "forwarding"):
            windows = tuple(getattr(self.config.maintenance, kind))
            rows.append(
                KindRow(
                    kind,
                    windows,
                    Schedule(windows).grid(),
                    [t for t in recent if t.kind == kind and t.state in ("queued", "running")],
                    [t for t in recent if t.kind == kind][:10],
                )
            )
        return rows

    def mail_enabled(self) -> bool:
        """Whether ``[email]`` has a server."""
        return bool(self.config.email.smtp_host)

    def recent_mails(self, limit: int = 20) -> list[dict[str, object]]:
        """The newest alert mails, queued and sent."""
        from appliance.notify.email import MailQueue

        return MailQueue(self.app.db, self.config.email).recent(limit)

    def send_test_mail(self) -> str:
        """Send a test mail now; '' when the server took it, else why not."""
        from appliance.notify.email import send_now

        if not self.mail_enabled():
            return "[email] smtp_host is not set in the config file"
        return send_now(
            self.config.email,
            "appliance test mail",
            "This is a test mail from the appliance's staff UI: e-mail alerts reach you.\n",
        )
