"""CLI parts of messaging: ``appliance amqp test|declare`` and the AMQP service of ``serve``.

Kept apart from :mod:`appliance.cli` so that it stays readable; :mod:`appliance.cli` remains the
composition root and calls :func:`build_amqp` and :func:`add_parsers`.
"""

from __future__ import annotations

import argparse
import ssl
from typing import Any

from appliance.config import Config


def _ssl_context(cfg: Config) -> ssl.SSLContext | None:
    if not cfg.amqp.tls:
        return None
    from appliance import tls_contexts

    return tls_contexts.broker_context(cfg)


def build_amqp(app: Any, cfg: Config) -> Any:
    """Set which events the outbox records and make the AMQP service of ``serve`` (None when off).

    Call before the DICOM ports open: from then on every new study, series and step status change is
    recorded in the transaction that makes it.
    """
    from appliance.notify.outbox import MWL, SERIES, STUDY, Outbox

    outbox = Outbox(app.db)
    a = cfg.amqp
    kinds = (
        {k for k, on in ((STUDY, a.notify_new_study), (SERIES, a.notify_new_series), (MWL, a.notify_mwl_status)) if on}
        if a.enabled
        else set()
    )
    outbox.configure(kinds)
    if not a.enabled:
        return None
    from appliance.notify.service import AmqpService

    return AmqpService(cfg, outbox, consume=a.consume)


def cmd_amqp_test(args: argparse.Namespace, cfg: Config) -> int:
    """Connect to the broker and say which exchanges and queues are missing."""
    from appliance.notify.amqp import check

    a = cfg.amqp
    lines = check(a, _ssl_context(cfg))
    print(f"connected to {a.host}:{a.port}, virtual host {a.vhost!r}, as {a.user!r}{' (TLS)' if a.tls else ''}")
    for name, ok, text in lines:
        print(f"{'ok     ' if ok else 'MISSING'} {name}: {text}")
    missing = [name for name, ok, _ in lines if not ok]
    if missing:
        print(f"{len(missing)} missing: create them with 'appliance amqp declare' or on the broker")
        return 1
    if not a.enabled:
        print("note: [amqp] enabled is false, 'appliance serve' does not use the broker")
    return 0


def cmd_amqp_declare(args: argparse.Namespace, cfg: Config) -> int:
    """Create the exchanges, queues and bindings (durable, not auto-delete)."""
    from appliance.notify.amqp import declare

    for line in declare(cfg.amqp, _ssl_context(cfg)):
        print(f"declared {line}")
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``amqp test`` and ``amqp declare``."""
    p = sub.add_parser("amqp", help="messaging with a RabbitMQ server: test, declare")
    amqp_sub = p.add_subparsers(dest="amqp_command", metavar="AMQP_COMMAND", required=True)
    q = amqp_sub.add_parser(
        "test", parents=[common], help="connect to the [amqp] broker and say which exchanges and queues are missing"
    )
    q.set_defaults(func=cmd_amqp_test)
    q = amqp_sub.add_parser(
        "declare", parents=[common], help="create the [amqp] exchanges, queues and bindings (durable, not auto-delete)"
    )
    q.set_defaults(func=cmd_amqp_declare)
