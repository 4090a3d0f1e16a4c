"""The forwarding worker: in the ``[maintenance] forwarding`` windows, send what waits, in batches.

One association per batch (:class:`Transport`, DICOM in :mod:`appliance.dicom.forward`), then, with
``storage_commitment``, one N-ACTION asking the regional server to commit the batch; the N-EVENT-REPORT
(same association or a new one to us) marks each instance committed or failed. Failures are tried again
with a doubling pause. The worker runs in its own thread and never touches ingest, burning or the web:
it only reads stored files and its own queue rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pydicom.uid import generate_uid

from appliance.config import ForwardingConfig
from appliance.core import Appliance
from appliance.forwarding.queue import ForwardQueue, Waiting
from appliance.index import StoredInstance

LOGGER = logging.getLogger("appliance.forwarding")


def new_uid() -> str:
    """A new Transaction UID."""
    return str(generate_uid())


@dataclass
class BatchResult:
    """What one association did: the instances accepted, and the others with the reason."""

    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """A Storage Commitment report: committed SOP Instance UIDs and failed ones with their reason."""

    transaction_uid: str
    committed: list[str]
    failed: dict[str, str]


class Transport(Protocol):
    """How batches reach the regional server (DICOM: :class:`appliance.dicom.forward.DicomTransport`)."""

    def send(self, instances: list[StoredInstance]) -> BatchResult:
        """C-STORE the instances over one association; raises ConnectionError when none can be made."""
        ...

    def commit(
        self, instances: list[StoredInstance], transaction_uid: str, reported: threading.Event | None = None
    ) -> Report | None:
        """Ask for Storage Commitment of the instances; the report when it came on the same association.

        ``reported`` is set when the report came on a new association meanwhile: no need to wait longer
        for one on this association. Raises ConnectionError when the request could not be made or was refused.
        """
        ...


class Forwarder:
    """The background worker.

    Parameters
    ----------
    app : Appliance
        The core (the index, to find each instance's file).
    config : ForwardingConfig
        ``[forwarding]``.
    queue : ForwardQueue
        The persisted queue.
    transport : Transport
        Sends batches and commitment requests.
    window_open : callable
        Whether the ``[maintenance] forwarding`` schedule allows sending now.
    """

    def __init__(
        self,
        app: Appliance,
        config: ForwardingConfig,
        queue: ForwardQueue,
        transport: Transport,
        window_open: Callable[[], bool],
        poll: float = 1.0,
    ) -> None:
        self.app = app
        self.config = config
        self.queue = queue
        self.transport = transport
        self.window_open = window_open
        self.poll = poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error = ""
        #: Transactions whose commitment request is under way -> set when their report is applied.
        self._awaited: dict[str, threading.Event] = {}

    def start(self) -> None:
        """Start the worker thread.

        Instances sent before this start whose commitment report has not come are sent again at once: a
        report addressed to an appliance that was stopped (or killed) is lost, waiting ``commitment_wait``
        for it would only delay them.
        """
        if self.config.storage_commitment:
            again = self.queue.expire_commitments(
                time.time(), 0.0, 0.0, "no storage commitment report before the appliance restarted"
            )
            if again:
                LOGGER.info(
                    "forwarding: %d instance(s) sent before the restart without a commitment report are sent again",
                    again,
                )
        self._thread = threading.Thread(target=self._run, name="forwarding", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the batch in flight."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Look at the queue now (after a restart or retry from the staff page)."""
        self._wake.set()

    def on_report(self, report: Report) -> bool:
        """Apply a Storage Commitment report that came on a new association; False when not ours."""
        ours = self.queue.apply_report(
            report.transaction_uid, report.committed, report.failed, self.config.retry_min, self.config.retry_max
        )
        if ours:
            LOGGER.info(
                "forwarding: regional server committed %d, failed %d (transaction %s)",
                len(report.committed),
                len(report.failed),
                report.transaction_uid,
            )
            awaited = self._awaited.get(report.transaction_uid)
            if awaited is not None:
                awaited.set()
        return ours

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception as exc:  # the queue's database refusing, a bug: say it, wait, go on
                LOGGER.exception("forwarding: %s", exc)
                worked = False
            if not worked:
                self._wake.wait(self.poll)
                self._wake.clear()

    def run_once(self) -> bool:
        """Send one batch if the window is open and something is due; whether anything was attempted."""
        if self.config.storage_commitment:
            self.queue.expire_commitments(
                time.time() - self.config.commitment_wait, self.config.retry_min, self.config.retry_max
            )
        if not self.window_open():
            return False
        waiting = self.queue.take(self.config.batch_size)
        if not waiting:
            return False
        self._batch(waiting)
        return True

    def _batch(self, waiting: list[Waiting]) -> None:
        instances, gone = [], []
        for item in waiting:
            found = self.app.index.lookup(item.sop_uid)
            (instances.append(found) if found is not None else gone.append(item.sop_uid))
        if gone:  # deleted between the query and now: the delete trigger removes their rows too
            LOGGER.info("forwarding: %d instance(s) deleted before they were sent", len(gone))
        if not instances:
            return
        cfg = self.config
        try:
            result = self.transport.send(instances)
        except ConnectionError as exc:
            self.last_error = str(exc)
            LOGGER.error(
                "forwarding to %s (%s:%d) failed, %d instance(s) wait: %s",
                cfg.ae_title,
                cfg.host,
                cfg.port,
                len(instances),
                exc,
            )
            self.queue.mark_failed({i.sop_uid: str(exc) for i in instances}, cfg.retry_min, cfg.retry_max)
            return
        if result.failed:
            self.last_error = next(iter(result.failed.values()))
            self.queue.mark_failed(result.failed, cfg.retry_min, cfg.retry_max)
        if not result.sent:
            return
        # The transaction is recorded before it is asked for: the report may come back (on a new association)
        # before the N-ACTION's own answer.
        transaction = new_uid() if cfg.storage_commitment else ""
        self.queue.mark_sent(result.sent, transaction)
        LOGGER.info(
            "forwarding: %d instance(s) sent to %s, %d failed%s",
            len(result.sent),
            cfg.ae_title,
            len(result.failed),
            f", commitment asked (transaction {transaction})" if transaction else "",
        )
        if not transaction:
            return
        sent = [i for i in instances if i.sop_uid in set(result.sent)]
        # A report on a new association ends the wait for one on the requesting association at once.
        self._awaited[transaction] = reported = threading.Event()
        try:
            report = self.transport.commit(sent, transaction, reported)
        except ConnectionError as exc:
            self.last_error = str(exc)
            LOGGER.error(
                "forwarding: storage commitment request to %s failed, the batch is sent again: %s", cfg.ae_title, exc
            )
            self.queue.mark_failed(
                {uid: f"storage commitment request failed: {exc}" for uid in result.sent}, cfg.retry_min, cfg.retry_max
            )
            return
        finally:
            self._awaited.pop(transaction, None)
        if report is not None:
            self.on_report(report)
