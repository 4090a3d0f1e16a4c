"""Command-line interface, console script ``appliance``; the composition root.

This is the only module that picks concrete parts (listeners, robots, TLS
contexts) and wires them together from the configuration.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from appliance import __version__, permissions
from appliance.cli import amqp as cli_amqp
from appliance.cli import forwarding as cli_forwarding
from appliance.cli import upkeep as cli_upkeep
from appliance.cli import web as cli_web
from appliance.config import Config, load_config
from appliance.db import Database, describe
from appliance.errors import ApplianceError, DatabaseError, ListenerError
from appliance.lock import DataFolderLock
from appliance.log import setup_logging
from appliance.names import display_name
from tls import TLSError

LOGGER = logging.getLogger("appliance")

Command = Callable[[argparse.Namespace, Config], int]


def cmd_serve(args: argparse.Namespace, cfg: Config) -> int:
    """Run every enabled service until SIGTERM/SIGINT."""
    from appliance import conversion, tls_contexts
    from appliance.core import Appliance
    from appliance.dicom.server import DicomNode
    from appliance.discs.publishing import build_publishing

    # A read-only data folder or database ends the start here with one line naming it, before the log file
    # or anything else is written there (the first write would end in a traceback).
    db = Database(cfg.database)
    try:
        db.check_writable()
    finally:
        db.close()
    # Before the log, the reconcile and the cleaning of store/tmp: a second instance must touch nothing.
    lock = DataFolderLock(cfg.data_dir)
    lock.acquire()
    # Patient data is for the service user and its group only: earlier runs' loose modes are taken away.
    storages = (cfg.store_dir, *(Path(s.path) for s in cfg.storages), *([Path(cfg.temp_dir)] if cfg.temp_dir else []))
    changed = permissions.make_private(cfg.data_dir, skip=(*storages, *_hot_folders(cfg)))
    setup_logging(cfg.log_level, cfg.log_dir, cfg.log_max_mb, cfg.log_backups)
    if changed:
        LOGGER.info("%d file(s) and folder(s) in %s made private (no access for other users)", changed, cfg.data_dir)
    hl7_tls = bool(cfg.hl7.port and cfg.hl7.tls)
    server_tls = tls_contexts.server_context(cfg) if cfg.dicom.tls_port or hl7_tls else None
    for warning in tls_contexts.expiry_warnings(cfg):
        LOGGER.warning(warning)
    app = Appliance(cfg, client_tls=lambda: tls_contexts.client_context(cfg))
    app.start()
    # Decoding received instances for a retrieve or DICOMweb receiver: budgeted worker processes ([limits]).
    app.conversions = conversion.from_config(cfg.limits)
    app.conversions.start()  # its workers import the codecs meanwhile: the first retrieve does not wait
    stop = threading.Event()

    def _signal(signum: int, _frame: Any) -> None:
        LOGGER.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    node = DicomNode(app, server_tls)
    # Attaches the patient-token store listener before the node opens its ports; serves [web] port.
    web = cli_web.build_web(app, cfg)
    # Listens to the core before the node opens its ports, so no instance misses its burn route.
    publishing = build_publishing(app, cfg, links=web.site.links.link)  # the patient link's QR code on labels
    web.site.discs.use_publishing(publishing)  # the burn queue and robots pages use the running engine and robots
    upkeep = cli_upkeep.build_upkeep(app, cfg, web.site)  # archiving, deletion, storage checks
    forwarder = cli_forwarding.build_forwarding(app, cfg)
    # Sets the outbox triggers before the node opens its ports, so no new study or series goes unreported.
    messaging = cli_amqp.build_amqp(app, cfg)
    web.site.admin.messaging = messaging
    hl7_listener = None
    if cfg.hl7.port:
        from hl7.listener import HL7Listener

        hl7_listener = HL7Listener(app, server_tls if hl7_tls else None)
    folder_watcher = None
    if cfg.worklist.folder:
        from appliance.worklist.files import FolderWatcher

        folder_watcher = FolderWatcher(app.worklist, Path(cfg.worklist.folder), cfg.worklist.folder_poll)
    try:
        if folder_watcher is not None:
            folder_watcher.start()
        node.start()
        web.start()
        publishing.start()
        upkeep.start()
        if forwarder is not None:
            forwarder.start()
        if messaging is not None:
            messaging.start()
        if hl7_listener is not None:
            try:
                hl7_listener.start()
            except OSError as exc:
                raise ListenerError.port("HL7", "[hl7] port", cfg.hl7.bind, cfg.hl7.port, exc) from None
        LOGGER.info("appliance %s running, data in %s", __version__, cfg.data_dir.resolve())
        # A signal may be delivered to any of the threads; CPython then only flags it, and the main thread
        # runs the handler when it next wakes. An untimed wait might never wake: poll.
        while not stop.wait(0.5):
            pass
    finally:
        if hl7_listener is not None:
            hl7_listener.stop()
        if folder_watcher is not None:
            folder_watcher.stop()
        web.stop()
        if forwarder is not None:
            forwarder.stop()
        node.stop()
        upkeep.stop()
        publishing.stop()
        if messaging is not None:
            messaging.stop()
        app.conversions.close()
        app.stop()
        LOGGER.info("appliance stopped")
        lock.release()
    return 0


def _hot_folders(cfg: Config) -> list[Path]:
    """The robots' hot folders: a vendor bridge shares them, their modes are the administrator's."""
    return [Path(str(table["hotfolder"])) for table in cfg.robots.values() if table.get("hotfolder")]


def cmd_echo(args: argparse.Namespace, cfg: Config) -> int:
    """C-ECHO a node and say Online/Offline with the reason."""
    from appliance.dicom.scu import echo

    result = echo(
        args.host,
        args.port,
        args.aet,
        args.calling_aet or cfg.dicom.ae_title,
        args.timeout,
        _client_tls(cfg) if args.tls else None,
    )
    print(f"{args.aet}@{args.host}:{args.port}: {result}")
    return 0 if result.online else 1


def cmd_import(args: argparse.Namespace, cfg: Config) -> int:
    """Send every DICOM file under PATH by C-STORE and print a report."""
    from appliance.dicom.scu import import_files

    root = Path(args.path)
    if not root.exists():
        raise ApplianceError(f"{root} does not exist")
    port = args.port or cfg.dicom.port
    try:
        report = import_files(
            root,
            args.host,
            port,
            args.aet or cfg.dicom.ae_title,
            args.calling_aet or "IMPORT",
            args.timeout,
            _client_tls(cfg) if args.tls else None,
        )
    except ConnectionError as exc:
        print(f"cannot send to {args.host}:{port}: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 0 if not report.failed and not report.unreadable else 1


def _client_tls(cfg: Config) -> Any:
    from appliance import tls_contexts

    return tls_contexts.client_context(cfg)


def cmd_tls_init(args: argparse.Namespace, cfg: Config) -> int:
    """Create a CA, a server and a client certificate with keys."""
    import tls

    print(
        tls.cmd_init(
            args.dir,
            args.host or [],
            args.ip or [],
            org=args.org,
            country=args.country,
            days=args.days,
            overwrite=args.force,
        )
    )
    return 0


def cmd_tls_show(args: argparse.Namespace, cfg: Config) -> int:
    """Print a certificate's subject, validity and whether a key matches it."""
    import tls

    print(tls.cmd_show(args.file, args.key))
    return 0


def _worklist(cfg: Config) -> Any:
    from appliance.worklist.store import Worklist

    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    return Worklist(Database(cfg.database), cfg.worklist, cfg.hl7.reject_merged_ids)


def cmd_worklist_import(args: argparse.Namespace, cfg: Config) -> int:
    """Add worklist items from DICOM worklist files (.wl) or folders of them."""
    from appliance.worklist.files import import_files

    notes: list[str] = []
    stored, failed = import_files(_worklist(cfg), [Path(p) for p in args.paths], notes)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    for path, reason in failed:
        print(f"refused: {path}: {reason}", file=sys.stderr)
    print(f"{len(stored)} worklist item(s) imported, {len(failed)} file(s) refused")
    return 0 if not failed else 1


def cmd_worklist_list(args: argparse.Namespace, cfg: Config) -> int:
    """List worklist steps."""
    rows = _worklist(cfg).items(args.status, args.patient, args.date, args.station, args.limit)
    if not rows:
        print("no worklist items")
        return 0
    print(
        f"{'ID':>6}  {'STATUS':<12} {'START':<15} {'STATION':<16} {'MOD':<4} {'PATIENT ID':<16} "
        f"{'PATIENT NAME':<28} {'ACCESSION':<16} STUDY UID / SPS ID"
    )
    for r in rows:
        print(
            f"{r.id:>6}  {r.status:<12} {r.start_date + ' ' + r.start_time[:6]:<15} {r.station_aet:<16} "
            f"{r.modality:<4} {r.patient_id:<16} {display_name(r.patient_name, '-')[:28]:<28} {r.accession:<16} "
            f"{r.study_uid} / {r.sps_id}"
        )
    return 0


def cmd_worklist_delete(args: argparse.Namespace, cfg: Config) -> int:
    """Delete steps by ID, or every step of a study."""
    wl = _worklist(cfg)
    if not args.ids and not args.study:
        raise ApplianceError("name the steps to delete (IDs from 'appliance worklist list') or --study UID")
    n = wl.delete_steps(args.ids) if args.ids else 0
    if args.study:
        n += wl.delete_study(args.study)
    print(f"{n} worklist step(s) deleted")
    return 0


def cmd_worklist_purge(args: argparse.Namespace, cfg: Config) -> int:
    """Delete every COMPLETED, DISCONTINUED and CANCELED step."""
    print(f"{_worklist(cfg).purge()} worklist step(s) deleted")
    return 0


def cmd_worklist_reset(args: argparse.Namespace, cfg: Config) -> int:
    """Set steps back to SCHEDULED."""
    print(f"{_worklist(cfg).reset(args.ids)} worklist step(s) set to SCHEDULED")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (also read by the documentation test)."""
    parser = argparse.ArgumentParser(
        prog="appliance", description="DICOM store / worklist appliance that publishes patient discs."
    )
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help="config file (default: $APPLIANCE_CONFIG, else ./appliance.toml, else built-in defaults)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", parents=[common], help="run every enabled service until SIGTERM/SIGINT")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("echo", parents=[common], help="C-ECHO a DICOM node and say Online/Offline with the reason")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("aet", help="the node's AE title")
    p.add_argument("--tls", action="store_true", help="connect with TLS using the [tls] client certificate")
    p.add_argument("--calling-aet", help="our AE title in the request (default: [dicom] ae_title)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    p.set_defaults(func=cmd_echo)

    p = sub.add_parser("import", parents=[common], help="send every DICOM file under PATH by C-STORE")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--host", default="127.0.0.1", help="receiver address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="receiver port (default: [dicom] port)")
    p.add_argument("--aet", help="receiver AE title (default: [dicom] ae_title)")
    p.add_argument("--calling-aet", help="our AE title (default IMPORT)")
    p.add_argument("--tls", action="store_true", help="connect with TLS using the [tls] client certificate")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer (default 30)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("tls", help="certificate tooling: init, show")
    tls_sub = p.add_subparsers(dest="tls_command", metavar="TLS_COMMAND", required=True)
    q = tls_sub.add_parser("init", parents=[common], help="create a CA, a server and a client certificate in DIR")
    q.add_argument("dir", metavar="DIR")
    q.add_argument("--host", action="append", help="a host name peers use to reach the appliance (repeatable)")
    q.add_argument("--ip", action="append", help="an IP address peers use to reach the appliance (repeatable)")
    q.add_argument("--org", default="Appliance", help="organisation name in the certificates")
    q.add_argument("--country", help="two-letter country code")
    q.add_argument("--days", type=int, default=825, help="validity of the server and client certificates")
    q.add_argument("--force", action="store_true", help="replace existing files (this makes a new CA)")
    q.set_defaults(func=cmd_tls_init)
    q = tls_sub.add_parser("show", parents=[common], help="show a certificate and check a key against it")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--key", metavar="KEY", help="private key to check against the certificate")
    q.set_defaults(func=cmd_tls_show)

    p = sub.add_parser("worklist", help="manage the Modality Worklist: import, list, delete, purge, reset")
    wl_sub = p.add_subparsers(dest="worklist_command", metavar="WORKLIST_COMMAND", required=True)
    q = wl_sub.add_parser("import", parents=[common], help="add items from DICOM worklist files (.wl) or folders")
    q.add_argument("paths", metavar="PATH", nargs="+")
    q.set_defaults(func=cmd_worklist_import)
    q = wl_sub.add_parser("list", parents=[common], help="list worklist steps, earliest start first")
    q.add_argument("--status", help="only this status (SCHEDULED, STARTED, COMPLETED, DISCONTINUED, CANCELED)")
    q.add_argument("--patient", help="patient ID, or name (prefix, or pattern with * and ?)")
    q.add_argument("--date", help="start date YYYYMMDD or range YYYYMMDD-YYYYMMDD")
    q.add_argument("--station", help="Scheduled Station AE Title")
    q.add_argument("--limit", type=int, default=0, help="at most this many (default: all)")
    q.set_defaults(func=cmd_worklist_list)
    q = wl_sub.add_parser("delete", parents=[common], help="delete steps by ID, or a whole item with --study")
    q.add_argument("ids", metavar="ID", nargs="*", type=int, help="step IDs from 'appliance worklist list'")
    q.add_argument("--study", metavar="UID", help="delete every step of this Study Instance UID")
    q.set_defaults(func=cmd_worklist_delete)
    q = wl_sub.add_parser("purge", parents=[common], help="delete every COMPLETED, DISCONTINUED and CANCELED step")
    q.set_defaults(func=cmd_worklist_purge)
    q = wl_sub.add_parser("reset", parents=[common], help="set steps back to SCHEDULED")
    q.add_argument("ids", metavar="ID", nargs="+", type=int, help="step IDs from 'appliance worklist list'")
    q.set_defaults(func=cmd_worklist_reset)
    from appliance.cli import discs as cli_discs

    cli_discs.add_parsers(sub, common)
    cli_web.add_parsers(sub, common)
    cli_upkeep.add_parsers(sub, common)
    cli_forwarding.add_parsers(sub, common)
    cli_amqp.add_parsers(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``appliance`` console script."""
    args = build_parser().parse_args(argv)
    cfg: Config | None = None
    # Every file a command writes (database, logs, thumbnails, discs, labels) is private to the service user.
    previous_umask = permissions.apply_umask()
    try:
        cfg = load_config(args.config)
        if args.command != "serve":
            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
            # Commands explain failures themselves; pynetdicom's own errors would repeat them.
            logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
        result: int = args.func(args, cfg)
        return result
    except ApplianceError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return exc.exit_code
    except TLSError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except sqlite3.Error as exc:  # e.g. a command that writes while the database is read-only
        print(f"appliance: {describe(exc, f'database {cfg.database}' if cfg else 'the database')}", file=sys.stderr)
        return DatabaseError.exit_code
    finally:
        os.umask(previous_umask)  # for callers in the same process (tests); a command's process ends here
