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
from appliance.storage import Storages

LOGGER = logging.getLogger(__name__)

#: Called after an instance got a new file: (instance as it was, new index path).
RecodedListener = Callable[[StoredInstance, str], None]


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def recode_path(path: str, target: str, implementation_version: str) -> bytes:
    """A stored file recoded by :func:`appliance.codecs.recode_file`; top-level, so a process pool can run it."""
    from pathlib import Path

    return codecs.recode_file(codecs.read_stored(Path(path)), target, implementation_version)


def _nice_worker(parent: int) -> None:
    """Process pool initializer: archiving gives way to ingest and the web pages, and a worker ends with the
    server (a SIGKILLed server cannot shut its pool down)."""
    import threading
    import time

    os.nice(10)

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

    def __init__(self, db: Database, index: Index, storages: Storages, config: ArchivingConfig,
                 implementation_version: str, pool: Executor | None = None, workers: int = 2) -> None:
        self.db = db
        self.index = index
        self.storages = storages
        self.config = config
        self.implementation_version = implementation_version
        self.pool = pool
        self.workers = workers
        self.target = codecs.archive_syntax(config.compression)
        self.listeners: list[RecodedListener] = []

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
            (self.config.compression, str(self.target), cutoff))
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
        todo = [i for i in self.index.instances_of("SERIES", series_uid)
                if codecs.should_archive(i.transfer_syntax, target)]
        # Recoding runs ahead in the pool (both cores); files are switched one by one, in order, here.
        ahead = 2 * self.workers if self.pool is not None else 1
        queue: deque[tuple[StoredInstance, Future[bytes]]] = deque()

        def settle() -> None:
            nonlocal compressed, skipped, saved
            inst, future = queue.popleft()
            try:
                saved += self._switch(inst, future.result(), str(target))
                compressed += 1
            except (CodecError, OutOfResources, OSError) as exc:
                skipped += 1
                if len(reasons) < 3:
                    reasons.append(f"{inst.sop_uid}: {exc}")
                LOGGER.warning("archiving left %s as it is: %s", inst.sop_uid, exc)

        for inst in todo:
            queue.append((inst, self._submit(inst, str(target))))
            while len(queue) >= ahead:
                settle()
        while queue:
            settle()
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO archived_series (series_uid, compression, at) VALUES (?, ?, ?)"
                         " ON CONFLICT (series_uid) DO UPDATE SET compression = excluded.compression, at = excluded.at",
                         (series_uid, self.config.compression, _stamp(datetime.now(UTC))))
        detail = f"{compressed} compressed, {skipped} left as they were, {saved // 1024} kB saved"
        if reasons:
            detail += "; " + "; ".join(reasons)
        return SeriesResult(compressed, skipped, saved, detail)

    def _submit(self, inst: StoredInstance, target: str) -> Future[bytes]:
        if self.pool is not None and self.storages.is_available(inst.path):
            return self.pool.submit(recode_path, str(self.storages.path(inst.path)), target,
                                    self.implementation_version)
        done: Future[bytes] = Future()
        try:
            if not self.storages.is_available(inst.path):
                raise OutOfResources(f"its storage is unavailable ({inst.path})")
            done.set_result(recode_path(str(self.storages.path(inst.path)), target, self.implementation_version))
        except Exception as exc:
            done.set_exception(exc)
        return done

    def _switch(self, inst: StoredInstance, new: bytes, target: str) -> int:
        new_rel = self.storages.write_beside(inst.path, [new])
        try:
            switched = self.index.replace_file(inst.sop_uid, inst.path, new_rel, target, len(new))
        except BaseException:
            self.storages.delete(new_rel)
            raise
        if not switched:  # replaced or deleted while we worked: our copy is not wanted
            self.storages.delete(new_rel)
            return 0
        self.storages.delete(inst.path)
        for listener in self.listeners:
            try:
                listener(inst, new_rel)
            except Exception:
                LOGGER.exception("an archiving listener failed for %s", inst.sop_uid)
        return inst.size - len(new)


def process_pool(workers: int) -> Executor:
    """A pool of ``workers`` niced processes for recoding (spawned: the server's threads are not forked)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_nice_worker, initargs=(os.getpid(),))
