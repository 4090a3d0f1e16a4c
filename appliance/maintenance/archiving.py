"""Archiving: compressing stored series to ``[archiving] compression``, one instance at a time, crash-safe.

For each instance: the stored file is read, recoded by :func:`appliance.codecs.recode_file` (the one place that
chooses codecs; every UID kept, lossy marked), written as a *new* file (temporary name, flushed, renamed) in
the same storage, the index row switched to it in one transaction, and only then the old file removed. A crash
at any point leaves the index pointing at a complete file: before the switch at the old one (the new file is an
unindexed copy, which the start-up reconcile removes as a duplicate), after it at the new one (the old file is
the duplicate). A series is remembered with the compression it was archived to: new instances of it are
compressed at the next window, and a changed compression re-processes it only after ``appliance maintenance
restart archiving`` (:meth:`Archiver.restart`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from appliance import codecs
from appliance.config import ArchivingConfig
from appliance.db import Database
from appliance.errors import CodecError, OutOfResources
from appliance.index import Index, StoredInstance
from appliance.storage import Storages, join, split

LOGGER = logging.getLogger(__name__)

#: Longest pause archiving makes for arriving images before it compresses the next instance anyway.
YIELD_MAX = 10.0
#: Called after an instance got a new file: (instance as it was, new index path).
RecodedListener = Callable[[StoredInstance, str], None]


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def recode_into(path: str, root: str, target: str, implementation_version: str) -> tuple[str, int]:
    """Recode a stored file (:func:`appliance.codecs.recode_file`) and write the result durably into the storage
    at ``root`` (temporary name, fsync, rename); returns (path inside the storage, size).

    Top-level so that a pool's worker process runs it: the big bytes and the flush stay out of the server process.
    """
    from pathlib import Path

    from appliance.store import FileStore

    data = codecs.recode_file(codecs.read_stored(Path(path)), target, implementation_version)
    return FileStore(Path(root)).write([data], enforce_limit=False), len(data)


def _nice_worker(parent: int) -> None:
    """Process pool initializer: archiving gives way to ingest and the web pages, and a worker ends with the
    server (a SIGKILLed server cannot shut its pool down)."""
    import threading
    import time

    os.nice(19)

    def _watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=_watch, daemon=True).start()


@dataclass(frozen=True)
class SeriesResult:
    """What archiving did to one series."""

    compressed: int
    skipped: int
    saved: int
    detail: str


class Archiver:
    """Finds series due for compression and compresses them.

    Parameters
    ----------
    db, index, storages
        The appliance's database, index and storages.
    config : ArchivingConfig
        ``[archiving]``.
    implementation_version : str
        Implementation Version Name written into new file meta.
    pool : Executor, optional
        Runs the recoding (a process pool uses both cores); default: in the calling thread.
    """

    def __init__(
        self,
        db: Database,
        index: Index,
        storages: Storages,
        config: ArchivingConfig,
        implementation_version: str,
        pool: Executor | None = None,
        workers: int = 2,
    ) -> None:
        self.db = db
        self.index = index
        self.storages = storages
        self.config = config
        self.implementation_version = implementation_version
        self.pool = pool
        self.workers = workers
        self.target = codecs.archive_syntax(config.compression)
        self.listeners: list[RecodedListener] = []
        #: Whether images are arriving right now: archiving then gives way (see :data:`YIELD_MAX`).
        self.busy: Callable[[], bool] = lambda: False

    def due(self, now: datetime | None = None) -> list[str]:
        """Series with instances to compress: received at least ``uncompressed_days`` ago, not archived to
        another compression (see :meth:`restart`), oldest first."""
        if self.target is None:
            return []
        now = now or datetime.now(UTC)
        cutoff = _stamp(now - timedelta(days=self.config.uncompressed_days))
        rows = self.db.conn.execute(
            "SELECT s.series_uid, i.transfer_syntax FROM series s JOIN instances i ON i.series_fk = s.id"
            " LEFT JOIN archived_series a ON a.series_uid = s.series_uid"
            " WHERE (a.series_uid IS NULL OR a.compression = ?) AND i.transfer_syntax != ? AND i.received <= ?"
            " GROUP BY s.series_uid, i.transfer_syntax ORDER BY MIN(s.id)",
            (self.config.compression, str(self.target), cutoff),
        )
        return list(dict.fromkeys(uid for uid, ts in rows if codecs.should_archive(ts, self.target)))

    def restart(self) -> int:
        """Forget which compression each series was archived to, so the next window re-processes all."""
        with self.db.transaction() as conn:
            return int(conn.execute("DELETE FROM archived_series").rowcount)

    def process_series(self, series_uid: str) -> SeriesResult:
        """Compress every instance of a series that still needs it (safe to repeat after a crash)."""
        target = self.target
        if target is None:
            return SeriesResult(0, 0, 0, "compression is none")
        compressed = skipped = saved = 0
        reasons: list[str] = []
        todo = [
            i for i in self.index.instances_of("SERIES", series_uid) if codecs.should_archive(i.transfer_syntax, target)
        ]
        # Recoding (and writing the new files) runs ahead in the pool, both cores; the index is switched here,
        # several instances per transaction, in order.
        ahead = 2 * self.workers if self.pool is not None else 1
        queue: deque[tuple[StoredInstance, Future[tuple[str, int]]]] = deque()
        ready: list[tuple[StoredInstance, str, int]] = []

        def settle() -> None:
            nonlocal skipped
            inst, future = queue.popleft()
            try:
                inner, size = future.result()
                ready.append((inst, join(split(inst.path)[0], inner), size))
            except (CodecError, OutOfResources, OSError) as exc:
                skipped += 1
                if len(reasons) < 3:
                    reasons.append(f"{inst.sop_uid}: {exc}")
                LOGGER.warning("archiving left %s as it is: %s", inst.sop_uid, exc)

        def switch() -> None:
            nonlocal compressed, saved
            if ready:
                n, gained = self._switch(ready, str(target))
                compressed += n
                saved += gained
                ready.clear()

        for inst in todo:
            self._give_way()
            queue.append((inst, self._submit(inst, str(target))))
            while len(queue) >= ahead:
                settle()
            if len(ready) >= ahead:
                switch()
        while queue:
            settle()
        switch()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO archived_series (series_uid, compression, at) VALUES (?, ?, ?)"
                " ON CONFLICT (series_uid) DO UPDATE SET compression = excluded.compression, at = excluded.at",
                (series_uid, self.config.compression, _stamp(datetime.now(UTC))),
            )
        detail = f"{compressed} compressed, {skipped} left as they were, {saved // 1024} kB saved"
        if reasons:
            detail += "; " + "; ".join(reasons)
        return SeriesResult(compressed, skipped, saved, detail)

    def _give_way(self) -> None:
        """Wait while images arrive (ingest first), but start one instance at least every :data:`YIELD_MAX` s."""
        waited = 0.0
        while waited < YIELD_MAX and self.busy():
            time.sleep(0.1)
            waited += 0.1

    def _submit(self, inst: StoredInstance, target: str) -> Future[tuple[str, int]]:
        number, _ = split(inst.path)
        args = (
            str(self.storages.path(inst.path)),
            str(self.storages.get(number).root),
            target,
            self.implementation_version,
        )
        if self.pool is not None and self.storages.is_available(inst.path):
            return self.pool.submit(recode_into, *args)
        done: Future[tuple[str, int]] = Future()
        try:
            if not self.storages.is_available(inst.path):
                raise OutOfResources(f"its storage is unavailable ({inst.path})")
            done.set_result(recode_into(*args))
        except Exception as exc:
            done.set_exception(exc)
        return done

    def _switch(self, ready: list[tuple[StoredInstance, str, int]], target: str) -> tuple[int, int]:
        """Point the index at the new files (one transaction), then remove the old ones; (instances, bytes saved)."""
        try:
            switched = self.index.replace_files([(i.sop_uid, i.path, new, target, size) for i, new, size in ready])
        except BaseException:
            for _inst, new, _size in ready:
                self.storages.delete(new)
            raise
        count = saved = 0
        for (inst, new, size), ok in zip(ready, switched, strict=True):
            if not ok:  # replaced or deleted while we worked: our copy is not wanted
                self.storages.delete(new)
                continue
            self.storages.delete(inst.path)
            count += 1
            saved += inst.size - size
            for listener in self.listeners:
                try:
                    listener(inst, new)
                except Exception:
                    LOGGER.exception("an archiving listener failed for %s", inst.sop_uid)
        return count, saved


def process_pool(workers: int) -> Executor:
    """A pool of ``workers`` niced processes for recoding (spawned: the server's threads are not forked)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_nice_worker,
        initargs=(os.getpid(),),
    )
