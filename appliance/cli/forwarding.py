"""Wiring of forwarding to the regional PACS, and ``appliance forwarding status|restart|retry``."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from appliance.config import Config
from appliance.core import Appliance
from appliance.db import Database
from appliance.forwarding.queue import ForwardQueue
from appliance.forwarding.search import ExtendedSearch
from appliance.forwarding.worker import Forwarder, Report


def window(cfg: Config) -> Callable[[], bool]:
    """Whether the ``[maintenance] forwarding`` windows allow sending now (always, without that table)."""
    windows = getattr(getattr(cfg, "maintenance", None), "forwarding", None)
    if windows is None:
        return lambda: True
    from appliance.maintenance.windows import Schedule

    schedule = Schedule(windows)
    return lambda: schedule.is_open(dt.datetime.now())


def build_forwarding(app: Appliance, cfg: Config) -> Forwarder | None:
    """The forwarding worker of ``[forwarding]`` (None when disabled); new instances are queued from now on.

    Also sets up the extended search (``extended_search = true``) on the core.
    """
    queue = ForwardQueue(app.db)
    queue.set_enabled(cfg.forwarding.enabled)
    if cfg.forwarding.extended_search:
        from appliance.dicom.regional import DicomRegional

        fwd = cfg.forwarding
        search = ExtendedSearch(
            DicomRegional(fwd, cfg.dicom.ae_title, app.client_tls),
            cfg.dicom.ae_title,
            fwd.ae_title,
            fwd.dicom_timeout_ms / 1000,
        )
        search.fetched_listeners.append(queue.mark_held_regionally)
        app.extended_search = search
    if not cfg.forwarding.enabled:
        return None
    from appliance.dicom.forward import DicomTransport

    transport = DicomTransport(app, cfg.forwarding, app.client_tls)
    forwarder = Forwarder(app, cfg.forwarding, queue, transport, window(cfg))
    app.commitment_listeners.append(lambda txn, done, failed: forwarder.on_report(Report(txn, done, failed)))
    return forwarder


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")


def cmd_status(args: argparse.Namespace, cfg: Config) -> int:
    """Print the forwarding queue: instances and series per state, oldest waiting, last error."""
    db = Database(cfg.database)
    try:
        status = ForwardQueue(db).status()
    finally:
        db.close()
    fwd = cfg.forwarding
    print(
        f"forwarding {'to ' + fwd.ae_title + '@' + fwd.host + ':' + str(fwd.port) if fwd.enabled else 'is off'}"
        f"{', storage commitment' if fwd.enabled and fwd.storage_commitment else ''}"
    )
    print("state       instances  series")
    for state in ("queued", "sent", "committed", "failed"):
        print(f"{state:<11} {status.counts[state]:>9}  {status.series[state]:>6}")
    if status.oldest_waiting is not None:
        waited = (time.time() - status.oldest_waiting) / 60
        print(f"oldest waiting since {_when(status.oldest_waiting)} ({waited:.0f} min)")
    if status.last_error:
        print(f"last error (next try {_when(status.last_error_at)}): {status.last_error}")
    return 1 if status.counts["failed"] else 0


def cmd_restart(args: argparse.Namespace, cfg: Config) -> int:
    """Queue every stored instance again (the manual's RESTART): the regional server gets everything anew."""
    db = Database(cfg.database)
    try:
        count = ForwardQueue(db).restart()
    finally:
        db.close()
    print(f"{count} instance(s) queued for forwarding; the running appliance sends them in its next window")
    return 0


def cmd_retry(args: argparse.Namespace, cfg: Config) -> int:
    """Try failed instances now instead of after their pause."""
    db = Database(cfg.database)
    try:
        count = ForwardQueue(db).retry_failed()
    finally:
        db.close()
    print(f"{count} failed instance(s) will be tried again at once")
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``forwarding status|restart|retry``."""
    p = sub.add_parser("forwarding", help="forwarding to the regional PACS: status, restart, retry")
    fwd_sub = p.add_subparsers(dest="forwarding_command", metavar="FORWARDING_COMMAND", required=True)
    q = fwd_sub.add_parser("status", parents=[common], help="instances and series per state, last error")
    q.set_defaults(func=cmd_status)
    q = fwd_sub.add_parser("restart", parents=[common], help="queue every stored instance again (send all anew)")
    q.set_defaults(func=cmd_restart)
    q = fwd_sub.add_parser("retry", parents=[common], help="try the failed instances now")
    q.set_defaults(func=cmd_retry)
