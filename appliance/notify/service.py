"""The AMQP service of ``appliance serve``: the publisher and the consumer in a child process of their own.

Publishing is Python work (pika frames every message, waits for every confirm): in the
process that receives images it would take the GIL from the store threads each time an
event goes out, and those wait for it after every fsync. In a child process it runs on
another core and ingest only pays for the outbox rows its transactions write
(bench/amqp). The child works on the same database file (SQLite takes several
processes), sends its log records and its state here, and ends with the parent, even
when the parent is killed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import sqlite3
import threading
from typing import Any

from appliance.config import Config
from appliance.db import Database, describe
from appliance.notify.outbox import Outbox

LOGGER = logging.getLogger("appliance.amqp")

#: Seconds between two state reports of the child.
_REPORT_SECONDS = 0.1


def _child(cfg: Config, consume: bool, stop: Any, states: Any, logs: Any, parent: int) -> None:
    """Run the AMQP links until ``stop`` is set or the parent process is gone."""
    import logging.handlers
    import signal

    # Ctrl-C and a service manager's SIGTERM reach the whole process group: the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    from appliance.log import level_number

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(logging.handlers.QueueHandler(logs))
    root.setLevel(level_number(cfg.log_level))

    from appliance.notify.amqp import InputHandler, Links
    from appliance.notify.log import AmqpLog

    db = Database(cfg.database)
    handler: InputHandler | None = None
    if consume:
        import functools

        from appliance.notify.messages import apply_message
        from appliance.worklist.store import Worklist

        worklist = Worklist(db, cfg.worklist, cfg.hl7.reject_merged_ids)
        handler = functools.partial(apply_message, worklist=worklist, hl7=cfg.hl7)
    context = None
    if cfg.amqp.tls:
        from appliance import tls_contexts

        context = tls_contexts.broker_context(cfg)
    links = Links(cfg.amqp, Outbox(db), AmqpLog(db, cfg.amqp.log_retention_days), handler, context)
    links.start()
    last: dict[str, Any] = {}
    try:
        while not stop.wait(_REPORT_SECONDS) and os.getppid() == parent:
            now = links.snapshot()
            if now != last:
                states.put(now)
                last = now
    finally:
        orphan = os.getppid() != parent
        if orphan:
            # Nobody reads the queues any more (the child holds their read ends too): exit without flushing.
            states.cancel_join_thread()
            logs.cancel_join_thread()
        links.stop()
        if not orphan:
            states.put({**links.snapshot(), "stopped": True})
        db.close()


class AmqpService:
    """Starts, watches and stops the AMQP child process.

    Parameters
    ----------
    cfg : Config
        The whole configuration (the child opens the database and, for TLS, the certificates).
    outbox : Outbox
        The outbox on this process's database, for the backlog.
    consume : bool
        Take worklist orders from the input queue.
    """

    def __init__(self, cfg: Config, outbox: Outbox, consume: bool = True) -> None:
        self.cfg = cfg
        self.consume = consume
        self._ctx = multiprocessing.get_context("spawn")  # never fork a process full of threads
        self._stop = self._ctx.Event()
        self._states: Any = self._ctx.Queue()
        self._logs: Any = self._ctx.Queue()
        self._process: Any = None
        self._listener: threading.Thread | None = None
        self._state: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._outbox = outbox

    def start(self) -> None:
        """Start the child; it connects in the background."""
        self._stop.clear()
        self._state = {
            "publisher": {"state": "starting", "last_error": "", "count": 0, "sent": 0},
            "consumer": {"state": "starting", "last_error": "", "count": 0} if self.consume else None,
        }
        self._process = self._ctx.Process(
            target=_child,
            name="appliance-amqp",
            daemon=True,
            args=(self.cfg, self.consume, self._stop, self._states, self._logs, os.getpid()),
        )
        self._process.start()
        self._listener = threading.Thread(target=self._relay_logs, name="amqp-log-relay", daemon=True)
        self._listener.start()

    def _relay_logs(self) -> None:
        while True:
            try:
                record = self._logs.get(timeout=0.5)
            except queue.Empty:
                if self._process is None or not self._process.is_alive():
                    return
                continue
            except (EOFError, OSError):
                return
            if record is None:
                return
            logging.getLogger(record.name).handle(record)

    def stop(self, timeout: float = 20.0) -> None:
        """Ask the child to close its connections and end; wait, then end it by force."""
        if self._process is None:
            return
        self._stop.set()
        self._process.join(timeout)
        if self._process.is_alive():
            LOGGER.warning("the AMQP process did not stop within %g s: ending it", timeout)
            self._process.terminate()
            self._process.join(5)
        self._read_states()
        self._logs.put(None)
        if self._listener is not None:
            self._listener.join(5)
        self._process = None

    def _read_states(self) -> None:
        with self._lock:
            while True:
                try:
                    self._state = self._states.get_nowait()
                except (queue.Empty, EOFError, OSError):
                    return

    def status(self) -> dict[str, Any]:
        """State of both links (connected, connecting, disconnected, blocked; last error) and the backlog."""
        self._read_states()
        with self._lock:
            state = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self._state.items()}
        if self._process is not None and not self._process.is_alive() and not state.get("stopped"):
            state["publisher"] = {
                **state.get("publisher", {}),
                "state": "stopped",
                "last_error": f"the AMQP process ended (exit code {self._process.exitcode})",
            }
        publisher = state.get("publisher") or {}
        try:
            sent = max(int(publisher.get("sent", 0)), self._outbox.position("amqp"))
            backlog: int | str = self._outbox.count_after(sent)
        except sqlite3.Error as exc:
            backlog = f"unknown ({describe(exc)})"
        a = self.cfg.amqp
        return {
            "broker": f"{a.host}:{a.port} {a.vhost}",
            "publisher": publisher,
            "consumer": state.get("consumer"),
            "backlog": backlog,
        }
