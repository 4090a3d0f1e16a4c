"""CLI parts of upkeep: ``appliance storage ...``, ``appliance maintenance ...``, ``appliance email test`` and
the maintenance engine and mail queue of ``serve``.

Kept apart from :mod:`appliance.cli` so that it stays readable; :mod:`appliance.cli` remains the composition
root and calls :func:`build_upkeep` and :func:`add_parsers`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import ApplianceError, OutOfResources

LOGGER = logging.getLogger("appliance")
_MB = 1024 * 1024
#: Seconds without a received image after which archiving goes on at full speed.
INGEST_QUIET = 1.0


class Upkeep:
    """The maintenance engine (and its recoding pool) of ``appliance serve``.

    Parameters
    ----------
    app : Appliance
        The core (storages, index, database).
    cfg : Config
        The configuration.
    site : Site, optional
        The web core, whose thumbnails and patient links follow archiving and deletion.
    workers : int
        Recoding processes (0: recode in the maintenance thread).
    """

    def __init__(self, app: Any, cfg: Config, site: Any = None, workers: int = 2) -> None:
        from appliance.core import IMPLEMENTATION_VERSION
        from appliance.maintenance.archiving import Archiver, process_pool
        from appliance.maintenance.deletion import Deleter
        from appliance.maintenance.engine import Maintenance
        from appliance.maintenance.tasks import TaskStore
        from appliance.maintenance.windows import Schedule

        self.pool: Executor | None = None
        if workers and cfg.archiving.compression not in ("none", "source"):
            self.pool = process_pool(workers)
        self.archiver = Archiver(
            app.db, app.index, app.store_area, cfg.archiving, IMPLEMENTATION_VERSION, self.pool, max(1, workers)
        )
        self.deleter = Deleter(
            app.db,
            app.index,
            app.store_area,
            cfg.deletion,
            site.links.today if site is not None else None,
            cfg.forwarding.storage_commitment,
        )
        # Archiving gives way while images arrive: ingest must not slow down by more than a little.
        last_store = [0.0]
        app.stored_listeners.append(lambda *_: last_store.__setitem__(0, time.monotonic()))
        self.archiver.busy = lambda: time.monotonic() - last_store[0] < INGEST_QUIET
        schedules = {kind: Schedule(getattr(cfg.maintenance, kind)) for kind in ("archiving", "deletion")}
        self.engine = Maintenance(app.store_area, TaskStore(app.db), self.archiver, self.deleter, schedules)
        if site is not None:

            def _deleted(series_uid: str, instances: list[Any], study_gone: bool) -> None:
                for inst in instances:
                    site.pictures.thumbs.forget(inst.sop_uid, inst.path)
                if study_gone:
                    site.tokens.delete(instances[0].study_uid)

            def _recoded(inst: Any, new_path: str) -> None:
                site.pictures.thumbs.forget(inst.sop_uid, inst.path)

            self.deleter.listeners.append(_deleted)
            self.archiver.listeners.append(_recoded)

        self.mail = self._mail(app, cfg)

    def _mail(self, app: Any, cfg: Config) -> Any:
        from appliance import tls_contexts
        from appliance.notify.email import DiscJobWatcher, MailQueue

        mail = MailQueue(app.db, cfg.email)
        if not mail.enabled:
            return mail
        storages = app.store_area

        def _availability(storage: Any, problem: str) -> None:
            if problem:
                mail.alert(
                    "storage_unavailable",
                    f"storage {storage.number}",
                    f"Storage {storage.number} at {storage.root} is unavailable: {problem}.\nIts images stay"
                    " in the index but cannot be read until it is back; new images go to other storages.",
                )

        def _full(storage: Any) -> None:
            mail.alert(
                "free_space_limit",
                "storages",
                f"No storage has room above its free-space limit (last tried: storage {storage.number} at"
                f" {storage.root}, {storage.free_bytes() // _MB} MB free, limit"
                f" {storage.free_space_limit_mb} MB).\nNew images are refused (C-STORE 0xA700).",
            )

        def _save_failed(sop_uid: str, calling_ae: str, exc: Exception) -> None:
            if isinstance(exc, OutOfResources):
                return  # mailed as free_space_limit
            mail.alert(
                "save_error",
                calling_ae or "unknown sender",
                f"An image from {calling_ae or 'an unknown sender'} could not be saved: {exc}\n"
                f"SOP Instance UID {sop_uid}",
            )

        storages.availability_listeners.append(_availability)
        storages.full_listeners.append(_full)
        app.save_failed_listeners.append(_save_failed)
        for storage in storages.all():
            if not storage.available:
                _availability(storage, storage.problem)
        for warning in tls_contexts.expiry_warnings(cfg):
            mail.alert("certificate_expiry", "certificates", warning)
        mail.watchers.append(DiscJobWatcher(app.db, mail))
        return mail

    def start(self) -> None:
        """Start the maintenance thread (it resumes interrupted tasks first) and the mail sender."""
        self.engine.start()
        self.mail.start()

    def stop(self) -> None:
        """Stop after the current series; shut the recoding processes and the mail sender down."""
        self.engine.stop()
        self.mail.stop()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def build_upkeep(app: Any, cfg: Config, site: Any = None) -> Upkeep:
    """The maintenance engine of ``appliance serve``."""
    return Upkeep(app, cfg, site)


def _app(cfg: Config) -> Any:
    from appliance.core import Appliance

    return Appliance(cfg)


def cmd_storage_list(args: argparse.Namespace, cfg: Config) -> int:
    """List the storages: number, path, state, used/free space, limit, instances."""
    app = _app(cfg)
    counts = app.store_area.instance_counts()
    print(f"{'NO':>3}  {'STATE':<12} {'FREE MB':>9} {'SIZE MB':>9} {'LIMIT MB':>9} {'INSTANCES':>10}  PATH")
    for s in app.store_area.all():
        state = "unavailable" if not s.available else ("moving" if s.moving else "enabled" if s.enabled else "disabled")
        count, _size = counts.get(s.number, (0, 0))
        print(
            f"{s.number:>3}  {state:<12} {s.free_bytes() // _MB:>9} {s.total_bytes() // _MB:>9} "
            f"{s.free_space_limit_mb:>9} {count:>10}  {s.root}" + (f"  ({s.problem})" if s.problem else "")
        )
    app.db.close()
    return 0


def cmd_storage_move(args: argparse.Namespace, cfg: Config) -> int:
    """Move a storage to a new folder while the appliance runs: disable, copy, verify, switch, keep the old."""
    from appliance.db import Database
    from appliance.storage.move import move_storage, update_config_path

    db = Database(cfg.database)
    try:
        report = move_storage(db, Path(args.old), Path(args.new), settle=args.settle)
    finally:
        db.close()
    if cfg.source is not None and update_config_path(cfg.source, report.old, report.new):
        print(f"{cfg.source}: [[storage]] path changed to {report.new}")
    elif cfg.storages:
        print(
            f"change the [[storage]] path {report.old} to {report.new} in the config file (until then the"
            " appliance finds it by its old path)"
        )
    return 0


def cmd_storage_remove_old(args: argparse.Namespace, cfg: Config) -> int:
    """Remove the folder a storage was moved away from, after checking every indexed file in the new one."""
    from appliance.db import Database
    from appliance.storage.move import remove_old

    db = Database(cfg.database)
    try:
        remove_old(db, Path(args.old))
    finally:
        db.close()
    return 0


def cmd_maintenance_plan(args: argparse.Namespace, cfg: Config) -> int:
    """Print what the next archiving and deletion windows would do (a dry run)."""
    app = _app(cfg)
    upkeep = Upkeep(app, cfg, workers=0)
    plan = upkeep.engine.plan()
    for kind, when in plan.next_window.items():
        print(f"next {kind} window: {when:%a %Y-%m-%d %H:%M}" if when else f"{kind}: no window configured")
    print(f"compress ({plan.compression}): {len(plan.compress)} series")
    for uid in plan.compress:
        print(f"  compress {uid}")
    print(f"delete (store_days {cfg.deletion.store_days or 'never'}): {len(plan.delete)} series")
    for uid in plan.delete:
        print(f"  delete {uid}")
    for uid, why in plan.kept.items():
        print(f"  keep {uid}: {why}")
    for line in plan.low_space:
        print(f"low space now (deleted at once while serve runs): {line}")
    app.db.close()
    return 0


def cmd_maintenance_restart(args: argparse.Namespace, cfg: Config) -> int:
    """Re-process every series at the next window with the current setting."""
    app = _app(cfg)
    n = Upkeep(app, cfg, workers=0).engine.restart_archiving()
    print(
        f"archiving restarted: {n} series will be compressed again to {cfg.archiving.compression} at the next"
        " archiving window"
    )
    app.db.close()
    return 0


def cmd_maintenance_tasks(args: argparse.Namespace, cfg: Config) -> int:
    """List recent maintenance tasks with their progress."""
    from appliance.db import Database
    from appliance.maintenance.tasks import TaskStore

    db = Database(cfg.database)
    tasks = TaskStore(db).recent(args.limit)
    if not tasks:
        print("no maintenance tasks yet")
    for t in tasks:
        print(
            f"{t.id:>5}  {t.kind:<10} {t.state:<8} {t.done}/{t.total:<6} {t.created[:19]}  {t.reason}"
            + (f"  error: {t.error}" if t.error else "")
        )
    db.close()
    return 0


def cmd_email_test(args: argparse.Namespace, cfg: Config) -> int:
    """Send a test mail now and say whether the SMTP server took it."""
    from appliance.notify.email import send_now

    if not cfg.email.smtp_host:
        raise ApplianceError("[email] smtp_host is not set")
    error = send_now(
        cfg.email, "appliance test mail", "This is a test mail from the appliance: e-mail alerts reach you.\n"
    )
    if error:
        print(f"test mail not sent: {error}", file=sys.stderr)
        return 1
    print(f"test mail sent to {', '.join(cfg.email.to)} via {cfg.email.smtp_host}:{cfg.email.smtp_port}")
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``storage``, ``maintenance`` and ``email`` to the CLI's subcommands."""
    p = sub.add_parser("storage", help="storages of received files: list, move, remove-old")
    s_sub = p.add_subparsers(dest="storage_command", metavar="STORAGE_COMMAND", required=True)
    q = s_sub.add_parser("list", parents=[common], help="list storages with free space, limit and instances")
    q.set_defaults(func=cmd_storage_list)
    q = s_sub.add_parser(
        "move",
        parents=[common],
        help="move a storage to an empty folder while the appliance "
        "runs (copy, verify, switch; the old folder is kept)",
    )
    q.add_argument("old", metavar="OLD", help="the storage's folder now")
    q.add_argument("new", metavar="NEW", help="the empty or new folder it moves to")
    q.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds to let a running server stop writing to the storage before copying (default 5)",
    )
    q.set_defaults(func=cmd_storage_move)
    q = s_sub.add_parser(
        "remove-old",
        parents=[common],
        help="remove the folder a storage was moved away from, "
        "after checking that the new folder holds every indexed file",
    )
    q.add_argument("old", metavar="OLD", help="the folder 'storage move' kept")
    q.set_defaults(func=cmd_storage_remove_old)

    p = sub.add_parser("maintenance", help="archiving and deletion: plan, tasks, restart archiving")
    m_sub = p.add_subparsers(dest="maintenance_command", metavar="MAINTENANCE_COMMAND", required=True)
    q = m_sub.add_parser("plan", parents=[common], help="list what the next windows would compress or delete")
    q.set_defaults(func=cmd_maintenance_plan)
    q = m_sub.add_parser("tasks", parents=[common], help="list recent maintenance tasks and their progress")
    q.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    q.set_defaults(func=cmd_maintenance_tasks)
    q = m_sub.add_parser("restart", parents=[common], help="re-process every series at the next window")
    q.add_argument("kind", choices=("archiving",), help="the task kind to restart")
    q.set_defaults(func=cmd_maintenance_restart)

    p = sub.add_parser("email", help="e-mail alerts: test")
    e_sub = p.add_subparsers(dest="email_command", metavar="EMAIL_COMMAND", required=True)
    q = e_sub.add_parser("test", parents=[common], help="send a test mail to [email] to")
    q.set_defaults(func=cmd_email_test)
