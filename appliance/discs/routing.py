"""What the called AE title does with received instances: store only, one disc per association, or a group.

The table is data: ``[burn] routes`` maps a suffix of our AE title to a robot and a mode, with the design's four
built in (``_E``/``_P``: one disc per association on the Epson/Primera robot; ``_TE``/``_TP``: delayed groups).
The router listens to the core (:attr:`Appliance.stored_listeners`, :attr:`Appliance.released_listeners`) and
touches nothing of the DICOM side.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from appliance.config import BurnConfig
from appliance.core import Appliance, StoreResult
from appliance.db import describe
from appliance.discs.groups import GroupStore
from appliance.discs.jobs import JobStore

LOGGER = logging.getLogger(__name__)

STORE = "store"
ASSOCIATION = "association"
DELAYED = "delayed"


@dataclass(frozen=True)
class Route:
    """What one called AE title does."""

    ae_title: str
    mode: str
    robot: str = ""
    copies: int = 1


def routing_table(ae_title: str, burn: BurnConfig, robots: Collection[str]) -> dict[str, Route]:
    """Build the called-AE table from the configuration.

    Parameters
    ----------
    ae_title : str
        Our AE title; it only stores.
    burn : BurnConfig
        ``routes`` (suffix -> robot, mode, copies) and the default ``copies``.
    robots : collection of str
        Configured robot names. A route to a robot that is not configured only stores, with a warning, so
        nothing sent to it is lost.
    """
    table = {ae_title: Route(ae_title, STORE)}
    for suffix, spec in burn.routes.items():
        called = ae_title + suffix
        mode = str(spec.get("mode", ASSOCIATION))
        robot = str(spec.get("robot", ""))
        if mode != STORE and robot not in robots:
            LOGGER.warning(
                "%s routes to robot %r, which is not configured: instances sent to it are stored, not "
                "burned (configured robots: %s)",
                called,
                robot,
                ", ".join(sorted(robots)) or "none",
            )
            mode = STORE
        table[called] = Route(called, mode, robot, int(spec.get("copies") or burn.copies))
    return table


class Router:
    """Turns received instances into disc jobs or delayed groups, by called AE title.

    Parameters
    ----------
    routes : mapping of str to Route
        From :func:`routing_table`.
    jobs : JobStore
    groups : GroupStore
    group_by : str
        ``patient_id`` or ``study_uid``.
    delay : float
        Seconds of quiet before a group is published.
    on_job : callable, optional
        Called after a job was queued (wakes the job engine).
    on_group : callable, optional
        Called after a group changed (wakes the group timer).
    """

    def __init__(
        self,
        routes: Mapping[str, Route],
        jobs: JobStore,
        groups: GroupStore,
        group_by: str,
        delay: float,
        on_job: Callable[[], None] | None = None,
        on_group: Callable[[], None] | None = None,
    ) -> None:
        self.routes = dict(routes)
        self.jobs = jobs
        self.groups = groups
        self.group_by = group_by
        self.delay = delay
        self.on_job = on_job
        self.on_group = on_group
        # Work the database refused (read-only, locked, full), tried again by the retry thread: a modality that
        # was told its association ended well must still get its disc once the database takes writes again.
        self._pending: list[tuple[str, Callable[[], None]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    #: Seconds between attempts at work the database refused.
    RETRY_INTERVAL = 5.0

    def start(self) -> None:
        """Start the thread that retries refused work."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._retry_loop, name="burn-router-retry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop retrying; work still refused is logged with what to do about it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        with self._lock:
            pending, self._pending = self._pending, []
        for what, _ in pending:
            LOGGER.error(
                "stopping with %s still not done: the database refused it; queue the disc with 'appliance burn'", what
            )

    def pending(self) -> list[str]:
        """What is waiting for the database, in words."""
        with self._lock:
            return [what for what, _ in self._pending]

    def _attempt(self, what: str, action: Callable[[], None]) -> None:
        """Do ``action`` now, or keep it for the retry thread when the database refuses it."""
        try:
            action()
        except Exception as exc:
            LOGGER.error("%s failed: %s; it is tried again every %g s", what, describe(exc), self.RETRY_INTERVAL)
            with self._lock:
                self._pending.append((what, action))
            self._wake.set()

    def _retry_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            while not self._stop.wait(self.RETRY_INTERVAL):
                with self._lock:
                    pending, self._pending = self._pending, []
                started = time.monotonic()
                for index, (what, action) in enumerate(pending):
                    try:
                        action()
                    except Exception:
                        with self._lock:  # keep the order: the rest go back in front of newer refusals
                            self._pending[:0] = pending[index:]
                        break
                    LOGGER.info("%s done on a later attempt (%.1f s)", what, time.monotonic() - started)
                with self._lock:
                    if not self._pending:
                        break

    def attach(self, app: Appliance) -> None:
        """Listen to the core's store and association events."""
        app.stored_listeners.append(self.on_stored)
        app.released_listeners.append(self.on_released)

    def on_stored(self, result: StoreResult, calling_ae: str, called_ae: str, association_id: str) -> None:
        """A stored instance joins its delayed group (if its AE title has one) and restarts the group's timer."""
        route = self.routes.get(called_ae)
        if route is None or route.mode != DELAYED:
            return
        rec = result.record
        key = rec.study_uid if self.group_by == "study_uid" else rec.patient_id

        def join_group() -> None:
            self.groups.add(
                route.robot, key, rec.sop_uid, self.delay, called_ae, route.copies, rec.patient_id, rec.patient_name
            )
            if self.on_group is not None:
                self.on_group()

        self._attempt(f"adding instance {rec.sop_uid} to the delayed group {key} of {called_ae}", join_group)

    def on_released(self, called_ae: str, association_id: str, sop_uids: list[str], released: bool) -> None:
        """An association to a one-disc AE title ended: queue its instances as one job, unless it was aborted."""
        route = self.routes.get(called_ae)
        if route is None or route.mode != ASSOCIATION:
            return
        if not released:
            LOGGER.warning(
                "association %s to %s was aborted after %d instance(s): they are stored but no disc is "
                "burned (send again, or queue the study with 'appliance burn')",
                association_id,
                called_ae,
                len(sop_uids),
            )
            return

        def queue_job() -> None:
            self.jobs.create(
                route.robot,
                route.copies,
                sop_uids,
                ASSOCIATION,
                called_ae,
                reason=f"{len(sop_uids)} instance(s) received on {called_ae}",
            )
            if self.on_job is not None:
                self.on_job()

        self._attempt(
            f"queueing the disc job of association {association_id} to {called_ae} ({len(sop_uids)} instance(s))",
            queue_job,
        )
