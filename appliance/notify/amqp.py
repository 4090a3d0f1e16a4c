"""Messaging with a RabbitMQ server (AMQP 0-9-1): the home of ``pika``.

Two background threads, each with its own connection (pika connections are not shared
between threads), run by the AMQP child process of :mod:`appliance.notify.service`:

* :class:`Publisher` sends the outbox (:mod:`appliance.notify.outbox`) in order:
  persistent messages (delivery mode 2) with a stable message ID, one at a time under
  publisher confirms; its read position moves only past what the broker confirmed, so
  a broker that is down, restarting or blocking (resource alarm) loses nothing and
  ingest never waits for it: events pile up in the outbox and drain on reconnect.
* :class:`Consumer` takes worklist orders from the input queue and hands each body to
  a handler (the worklist core, wired by :mod:`appliance.cli`); a message is
  acknowledged after the change is committed, rejected without requeue (dead-lettered
  when the queue has a DLX) when it cannot be applied, and requeued only when the
  database could not be written.

:func:`check` and :func:`declare` serve ``appliance amqp test`` and ``appliance amqp declare``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from appliance.config import AmqpConfig
from appliance.db import describe
from appliance.errors import ApplianceError
from appliance.notify.log import AmqpLog
from appliance.notify.messages import Applied, render
from appliance.notify.outbox import MWL, SERIES, STUDY, Event, Outbox

LOGGER = logging.getLogger("appliance.amqp")
# pika logs every failed connection attempt as errors with tracebacks; the links report failures themselves,
# one line per new reason.
logging.getLogger("pika").setLevel(logging.CRITICAL)

#: The outbox read position of this publisher.
CHANNEL = "amqp"
#: Seconds a blocked connection (broker resource alarm) is kept before it is dropped and made again.
BLOCKED_TIMEOUT = 30.0
#: Seconds between two looks at the outbox when it is empty.
POLL_SECONDS = 0.1
#: Events read from the outbox at a time.
BATCH = 200
#: Nice value of the publishing thread.
PUBLISHER_NICE = 10
#: Seconds between two saves of the publisher's read position while it sends.
SAVE_SECONDS = 0.5


class AmqpError(ApplianceError):
    """The broker cannot be reached or used (``appliance amqp test`` / ``declare``)."""


def parameters(cfg: AmqpConfig, ssl_context: ssl.SSLContext | None, name: str) -> pika.ConnectionParameters:
    """Connection parameters from ``[amqp]``.

    Parameters
    ----------
    cfg : AmqpConfig
        The settings.
    ssl_context : ssl.SSLContext, optional
        Client TLS context when ``tls = true``.
    name : str
        Connection name shown by the broker (``rabbitmqctl list_connections client_properties``).
    """
    ssl_options = pika.SSLOptions(ssl_context, cfg.host) if ssl_context is not None else None
    return pika.ConnectionParameters(
        host=cfg.host,
        port=cfg.port,
        virtual_host=cfg.vhost,
        credentials=pika.PlainCredentials(cfg.user, cfg.password, erase_on_connect=False),
        heartbeat=cfg.heartbeat,
        socket_timeout=cfg.connect_timeout,
        stack_timeout=cfg.connect_timeout * 2,
        blocked_connection_timeout=BLOCKED_TIMEOUT,
        connection_attempts=1,
        ssl_options=ssl_options,
        client_properties={"connection_name": name, "product": "appliance"},
    )


def explain(exc: BaseException, cfg: AmqpConfig) -> str:
    """A readable reason for a pika or socket failure."""
    where = f"{cfg.host}:{cfg.port}"
    inner: BaseException = exc
    # pika wraps the cause in AMQPConnectionError(workflow failure(phase error(socket error))): unwrap it.
    for _ in range(5):
        if (
            isinstance(inner, pika.exceptions.AMQPConnectionError)
            and inner.args
            and isinstance(inner.args[0], BaseException)
        ):
            inner = inner.args[0]
        elif getattr(inner, "exceptions", None):
            inner = inner.exceptions[-1]  # type: ignore[attr-defined]
        elif isinstance(getattr(inner, "exception", None), BaseException):
            inner = inner.exception  # type: ignore[attr-defined]
        else:
            break
    if isinstance(inner, pika.exceptions.ProbableAuthenticationError | pika.exceptions.AuthenticationError):
        return f"the broker at {where} refused user {cfg.user!r} (wrong user or password)"
    if isinstance(inner, pika.exceptions.ProbableAccessDeniedError):
        return f"user {cfg.user!r} may not use virtual host {cfg.vhost!r} at {where} (or it does not exist)"
    if isinstance(inner, pika.exceptions.ConnectionBlockedTimeout):
        return f"the broker at {where} blocked publishing for over {BLOCKED_TIMEOUT:.0f} s (memory or disk alarm)"
    if isinstance(inner, pika.exceptions.ChannelClosedByBroker):
        hint = " ('appliance amqp declare' creates the exchanges and queues)" if inner.reply_code == 404 else ""
        return f"the broker at {where} refused: {inner.reply_code} {inner.reply_text}{hint}"
    if isinstance(inner, pika.exceptions.ConnectionClosedByBroker):
        return f"the broker at {where} closed the connection: {inner.reply_code} {inner.reply_text}"
    if isinstance(inner, pika.exceptions.AMQPConnectionError | pika.exceptions.StreamLostError):
        text = str(inner) or type(inner).__name__
        return f"no AMQP broker reachable at {where} ({text})"
    if isinstance(inner, ConnectionRefusedError):
        return f"no AMQP broker reachable at {where} (connection refused)"
    if isinstance(inner, OSError):
        return f"the broker at {where} cannot be reached: {inner.strerror or inner}"
    if isinstance(inner, ApplianceError):
        return str(inner)
    return f"{type(inner).__name__}: {inner}"


@dataclass
class LinkState:
    """What one connection is doing, for the staff page and the logs."""

    state: str = "stopped"
    last_error: str = ""
    since: float = field(default_factory=time.time)
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, state: str, error: str | None = None) -> None:
        with self.lock:
            if state != self.state:
                self.since = time.time()
            self.state = state
            if error is not None:
                self.last_error = error

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"state": self.state, "last_error": self.last_error, "since": self.since, "count": self.count}


class _Link:
    """A background thread that keeps one connection and reconnects after failures."""

    role = "link"

    def __init__(self, cfg: AmqpConfig, ssl_context: ssl.SSLContext | None) -> None:
        self.cfg = cfg
        self.ssl_context = ssl_context
        self.link = LinkState()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_logged = ""

    def start(self) -> None:
        """Start the thread (it connects in the background)."""
        self._stop.clear()
        self.link.set("connecting")
        self._thread = threading.Thread(target=self._run, name=f"amqp-{self.role}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to close its connection and end; wait up to ``timeout`` seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.link.set("stopped")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = BlockingConnection(parameters(self.cfg, self.ssl_context, f"appliance {self.role}"))
            except Exception as exc:
                self._failed(exc)
                self._stop.wait(self.cfg.reconnect_seconds)
                continue
            try:
                # BlockingConnection delivers its own blocked callbacks only between calls, never while a
                # publish waits for its confirm (exactly when the broker blocks us): listen on the I/O layer.
                impl = getattr(conn, "_impl", conn)
                impl.add_on_connection_blocked_callback(lambda *_: self._blocked(True))
                impl.add_on_connection_unblocked_callback(lambda *_: self._blocked(False))
                self._session(conn)
            except Exception as exc:
                self._failed(exc)
            finally:
                try:
                    if conn.is_open:
                        conn.close()
                except Exception:  # the connection is already gone: nothing to close
                    pass
            self._stop.wait(self.cfg.reconnect_seconds)

    def _connected(self) -> None:
        self.link.set("connected", "")
        if self._last_logged:
            LOGGER.info(
                "AMQP %s connected again to %s:%s (virtual host %s)",
                self.role,
                self.cfg.host,
                self.cfg.port,
                self.cfg.vhost,
            )
        else:
            LOGGER.info(
                "AMQP %s connected to %s:%s (virtual host %s)", self.role, self.cfg.host, self.cfg.port, self.cfg.vhost
            )
        self._last_logged = ""

    def _failed(self, exc: BaseException) -> None:
        if self._stop.is_set() and isinstance(exc, pika.exceptions.AMQPError):
            return
        text = explain(exc, self.cfg)
        self.link.set("disconnected", text)
        if text != self._last_logged:  # one line per new reason, not one per attempt
            LOGGER.error("AMQP %s: %s; trying again every %g s", self.role, text, self.cfg.reconnect_seconds)
            self._last_logged = text
        if not isinstance(exc, pika.exceptions.AMQPError | OSError | sqlite3.Error | ApplianceError):
            LOGGER.exception("AMQP %s failed", self.role, exc_info=exc)

    def _blocked(self, blocked: bool) -> None:
        if blocked:
            self.link.set("blocked", "the broker blocks publishing (memory or disk alarm)")
            LOGGER.warning(
                "AMQP %s: the broker blocks publishing (memory or disk alarm); events wait in the outbox", self.role
            )
        else:
            self.link.set("connected", "")
            LOGGER.info("AMQP %s: the broker takes messages again", self.role)

    def _session(self, conn: BlockingConnection) -> None:
        raise NotImplementedError


class Publisher(_Link):
    """Sends the outbox to the broker, in order, under publisher confirms.

    Parameters
    ----------
    cfg : AmqpConfig
        Where and what to send.
    outbox : Outbox
        The events.
    log : AmqpLog
        The message log.
    ssl_context : ssl.SSLContext, optional
        For ``tls = true``.
    """

    role = "publisher"

    def __init__(
        self, cfg: AmqpConfig, outbox: Outbox, log: AmqpLog, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(cfg, ssl_context)
        self.outbox = outbox
        self.log = log
        self.routes: dict[str, tuple[str, str]] = {}
        if cfg.notify_new_study:
            self.routes[STUDY] = (cfg.request_exchange, cfg.new_study_routing_key)
        if cfg.notify_new_series:
            self.routes[SERIES] = (cfg.request_exchange, cfg.new_series_routing_key)
        if cfg.notify_mwl_status:
            self.routes[MWL] = (cfg.ris_exchange, cfg.mwl_state_routing_key)
        #: Last event the broker confirmed, and the last one whose position is stored.
        self._sent = self._saved = 0
        self._saved_at = 0.0
        self._logged: list[tuple[str, tuple[object, ...]]] = []

    @property
    def sent(self) -> int:
        """The last event the broker confirmed."""
        return self._sent

    def start(self) -> None:
        """Start sending from the stored read position."""
        self._sent = self._saved = self.outbox.position(CHANNEL)
        super().start()

    def _run(self) -> None:
        # On a busy machine sending yields the processor to the store (Linux: the nice value is per thread);
        # events wait in the outbox meanwhile, which is what it is for.
        with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed: the same priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PUBLISHER_NICE)
        super()._run()

    def _session(self, conn: BlockingConnection) -> None:
        channel = conn.channel()
        channel.confirm_delivery()
        # The read position is saved without an fsync (and at most every SAVE_SECONDS): a power cut can only
        # lose its newest moves, whose messages then go out again (at least once, same message IDs). An fsync
        # per move would double the fsyncs of ingest, which commits each instance with its events.
        self.outbox.db.conn.execute("PRAGMA synchronous=NORMAL")
        self._connected()
        try:
            while not self._stop.is_set():
                events = self.outbox.pending(CHANNEL, BATCH, after=self._sent)
                if not events:
                    self._save()
                    conn.process_data_events(time_limit=POLL_SECONDS)
                    continue
                self._send(channel, events)
                if time.monotonic() - self._saved_at > SAVE_SECONDS:
                    self._save()
        finally:
            self._save()  # what the broker confirmed is never sent again, even when the next one failed

    def _send(self, channel: BlockingChannel, events: list[Event]) -> None:
        for event in events:
            if self._stop.is_set():
                return
            route = self.routes.get(event.kind)
            if route is not None:
                body = self._publish(channel, event, route)
                self._logged += self.log.rows(
                    "out", f"{route[0]} / {route[1]}", event.message_id, "published", "", body
                )
                with self.link.lock:
                    self.link.count += 1
            self._sent = event.id

    def _save(self) -> None:
        """Store the read position (and the message log rows) in one transaction."""
        self._saved_at = time.monotonic()
        if self._sent <= self._saved:
            return
        try:
            self.outbox.advance(CHANNEL, self._sent, self._logged)
        except sqlite3.Error as exc:  # kept in memory; saved with the next move
            LOGGER.error("AMQP publisher: the outbox position cannot be saved: %s", describe(exc))
            return
        self._saved = self._sent
        self._logged = []
        self.log.purge_if_due()

    def _publish(self, channel: BlockingChannel, event: Event, route: tuple[str, str]) -> bytes:
        counts: dict[str, object] = {}
        if self.cfg.format == "json":
            counts = dict(
                self.outbox.study_counts(event.study_uid)
                if event.kind == STUDY
                else self.outbox.series_counts(event.uid)
                if event.kind == SERIES
                else {}
            )
        body, content_type = render(event, self.cfg.format, counts)
        props = pika.BasicProperties(
            content_type=content_type,
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=event.message_id,
            timestamp=int(time.time()),
            type={STUDY: "new_study", SERIES: "new_series", MWL: "mwl_status"}[event.kind],
            app_id="appliance",
        )
        # Blocks until the broker confirms (raises NackError when it refuses): order is kept.
        channel.basic_publish(route[0], route[1], body, props)
        return body


#: Applies one input body; raises on failure (see :class:`Consumer`).
InputHandler = Callable[[bytes], Applied]


class Consumer(_Link):
    """Takes worklist orders from the input queue.

    Parameters
    ----------
    cfg : AmqpConfig
        Queue, prefetch, size limit.
    handler : callable
        Applies one body and returns :class:`~appliance.notify.messages.Applied`; raises
        :class:`sqlite3.Error` when the database cannot be written (the message is requeued), anything
        else for a message that cannot be applied (it is rejected without requeue).
    log : AmqpLog
        The message log.
    ssl_context : ssl.SSLContext, optional
        For ``tls = true``.
    """

    role = "consumer"
    #: Seconds to wait before a message the database could not take goes back to the queue.
    retry_delay = 1.0

    def __init__(
        self, cfg: AmqpConfig, handler: InputHandler, log: AmqpLog, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(cfg, ssl_context)
        self.handler = handler
        self.log = log
        self._log_rows: list[tuple[str, tuple[object, ...]]] = []

    def _session(self, conn: BlockingConnection) -> None:
        channel = conn.channel()
        channel.basic_qos(prefetch_count=self.cfg.prefetch)
        cancelled: list[bool] = []
        # The broker cancels the consumer when the queue is deleted: start over (and say so) rather than idle.
        channel.add_on_cancel_callback(lambda *_: cancelled.append(True))
        channel.basic_consume(self.cfg.mwl_queue, self._on_message)
        self._connected()
        try:
            while not self._stop.is_set():
                conn.process_data_events(time_limit=0.25)
                self._write_log()
                if cancelled:
                    raise AmqpError(f"the broker cancelled the consumer of queue {self.cfg.mwl_queue} (deleted?)")
        finally:
            self._write_log()

    def _on_message(self, channel: BlockingChannel, method: Any, props: Any, body: bytes) -> None:
        message_id = (props.message_id or "") if props is not None else ""
        address = self.cfg.mwl_queue
        limit = self.cfg.max_message_kb * 1024
        if len(body) > limit:
            self._reject(
                channel,
                method.delivery_tag,
                message_id,
                body,
                f"message too large ({len(body)} bytes, limit {self.cfg.max_message_kb} KiB)",
            )
            return
        try:
            handled = self.handler(body)
        except sqlite3.Error as exc:
            LOGGER.error(
                "AMQP input %s could not be applied, the database cannot be written: %s; it goes back to the queue",
                message_id or "(no message ID)",
                describe(exc),
            )
            self._stop.wait(self.retry_delay)
            channel.basic_nack(method.delivery_tag, requeue=True)
            return
        except Exception as exc:
            if not isinstance(exc, ApplianceError):
                LOGGER.exception("AMQP input %s could not be processed", message_id or "(no message ID)")
            self._reject(channel, method.delivery_tag, message_id, body, str(exc) or type(exc).__name__)
            return
        channel.basic_ack(method.delivery_tag)
        with self.link.lock:
            self.link.count += 1
        LOGGER.info("AMQP input <%s> %s from %s: %s", handled.kind, message_id, address, handled.summary)
        self._log(address, message_id, "applied", handled.summary, body)

    def _reject(self, channel: BlockingChannel, tag: int, message_id: str, body: bytes, reason: str) -> None:
        channel.basic_reject(tag, requeue=False)
        LOGGER.warning(
            "AMQP input %s from %s rejected: %s", message_id or "(no message ID)", self.cfg.mwl_queue, reason
        )
        self._log(self.cfg.mwl_queue, message_id, "rejected", reason, body)

    def _log(self, address: str, message_id: str, outcome: str, text: str, body: bytes) -> None:
        # Written in batches (every quarter second at most): one more fsync'd transaction per message would
        # halve the input rate; a power cut can only lose the newest log rows, never a worklist change.
        self._log_rows += self.log.rows("in", address, message_id, outcome, text if outcome == "rejected" else "", body)

    def _write_log(self) -> None:
        rows, self._log_rows = self._log_rows, []
        try:
            self.log.write(rows)
        except sqlite3.Error as exc:
            LOGGER.error(
                "AMQP input: %d message(s) could not be written to the message log: %s", len(rows), describe(exc)
            )


class Links:
    """The publisher and the consumer (threads of the AMQP process, :mod:`appliance.notify.service`).

    Parameters
    ----------
    cfg : AmqpConfig
        The settings.
    outbox : Outbox
        The events to send.
    log : AmqpLog
        The message log.
    handler : callable, optional
        The input handler; None: no consumer.
    ssl_context : ssl.SSLContext, optional
        For ``tls = true``.
    """

    def __init__(
        self,
        cfg: AmqpConfig,
        outbox: Outbox,
        log: AmqpLog,
        handler: InputHandler | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.publisher = Publisher(cfg, outbox, log, ssl_context)
        self.consumer = Consumer(cfg, handler, log, ssl_context) if handler is not None else None

    def start(self) -> None:
        """Start both threads; they connect in the background."""
        self.publisher.start()
        if self.consumer is not None:
            self.consumer.start()

    def stop(self) -> None:
        """Close both connections."""
        if self.consumer is not None:
            self.consumer.stop()
        self.publisher.stop()

    def snapshot(self) -> dict[str, Any]:
        """State of both links; the publisher's with the last event the broker confirmed (``sent``)."""
        return {
            "publisher": {**self.publisher.link.snapshot(), "sent": self.publisher.sent},
            "consumer": self.consumer.link.snapshot() if self.consumer is not None else None,
        }


# -- appliance amqp test / declare --------------------------------------------------------------------------


def _connect(cfg: AmqpConfig, ssl_context: ssl.SSLContext | None) -> BlockingConnection:
    try:
        return BlockingConnection(parameters(cfg, ssl_context, "appliance cli"))
    except Exception as exc:
        raise AmqpError(explain(exc, cfg)) from None


def _names(cfg: AmqpConfig) -> tuple[list[str], list[str]]:
    return [cfg.ris_exchange, cfg.request_exchange], [cfg.mwl_queue, cfg.mwl_changed_queue, cfg.studies_queue]


def check(cfg: AmqpConfig, ssl_context: ssl.SSLContext | None = None) -> list[tuple[str, bool, str]]:
    """Connect and look (passively) for the exchanges and queues.

    Returns
    -------
    list of (name, present, text)
        One line per exchange and queue.

    Raises
    ------
    AmqpError
        The broker cannot be reached or refuses us.
    """
    conn = _connect(cfg, ssl_context)
    lines: list[tuple[str, bool, str]] = []
    try:
        exchanges, queues = _names(cfg)
        for name in exchanges:
            channel = conn.channel()  # a failed passive declare closes its channel
            try:
                channel.exchange_declare(name, passive=True)
                lines.append((f"exchange {name}", True, "present"))
                channel.close()
            except pika.exceptions.ChannelClosedByBroker as exc:
                lines.append((f"exchange {name}", False, f"missing ({exc.reply_text})"))
        for name in queues:
            channel = conn.channel()
            try:
                frame = channel.queue_declare(name, passive=True)
                role = " (input)" if name == cfg.mwl_queue else ""
                lines.append(
                    (
                        f"queue {name}{role}",
                        True,
                        f"present, {frame.method.message_count} message(s), {frame.method.consumer_count} consumer(s)",
                    )
                )
                channel.close()
            except pika.exceptions.ChannelClosedByBroker as exc:
                lines.append((f"queue {name}", False, f"missing ({exc.reply_text})"))
    finally:
        conn.close()
    return lines


def declare(cfg: AmqpConfig, ssl_context: ssl.SSLContext | None = None) -> list[str]:
    """Create the exchanges (direct), queues and bindings, durable and not auto-delete.

    Returns
    -------
    list of str
        What was declared.

    Raises
    ------
    AmqpError
        The broker cannot be reached, or refuses (e.g. an existing exchange or queue with other settings).
    """
    conn = _connect(cfg, ssl_context)
    done: list[str] = []
    try:
        channel = conn.channel()
        for name in _names(cfg)[0]:
            channel.exchange_declare(name, exchange_type="direct", durable=True, auto_delete=False)
            done.append(f"exchange {name} (direct, durable)")
        bindings = [
            (cfg.mwl_queue, cfg.ris_exchange, [cfg.mwl_routing_key]),
            (cfg.mwl_changed_queue, cfg.ris_exchange, [cfg.mwl_state_routing_key]),
            (cfg.studies_queue, cfg.request_exchange, [cfg.new_study_routing_key, cfg.new_series_routing_key]),
        ]
        for queue, exchange, keys in bindings:
            channel.queue_declare(queue, durable=True, auto_delete=False)
            for key in keys:
                channel.queue_bind(queue, exchange, routing_key=key)
            done.append(f"queue {queue} (durable) bound to {exchange} with {', '.join(keys)}")
    except pika.exceptions.AMQPError as exc:
        raise AmqpError(explain(exc, cfg)) from None
    finally:
        if conn.is_open:
            conn.close()
    return done
