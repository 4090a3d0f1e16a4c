"""Deletion: series past ``store_days``, and the oldest series while a storage is low on space.

One series is deleted in one transaction that drops its index rows, writes one audit-log line (who, what,
why) and lists its files in ``deletion_journal``; then the files go, the listeners (thumbnails) are told, and
the journal rows are cleared. A crash after the commit leaves files that the next start removes from the
journal (:meth:`appliance.core.Appliance.finish_deletions`); before it, nothing changed. So no index row ever
points at a removed file, and no deleted instance comes back. :mod:`appliance.maintenance.rules` says which
series are kept.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from appliance.config import DeletionConfig
from appliance.db import Database
from appliance.index import Index, StoredInstance
from appliance.maintenance import rules
from appliance.storage import Storage, Storages, split

LOGGER = logging.getLogger(__name__)
_MB = 1024 * 1024

#: Called after a series' files are gone: (series UID, its instances, whether its study is gone too).
DeletedListener = Callable[[str, list[StoredInstance], bool], None]


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Deleter:
    """Chooses and deletes series.

    Parameters
    ----------
    db, index, storages
        The appliance's database, index and storages.
    config : DeletionConfig
        ``[deletion]``.
    today : callable, optional
        Today's date, for patient-link validity (the token clock).
    forwarding_commitment : bool
        ``[forwarding] storage_commitment``: a series counts as forwarded once committed (else once sent).
    """

    def __init__(
        self,
        db: Database,
        index: Index,
        storages: Storages,
        config: DeletionConfig,
        today: Callable[[], date] | None = None,
        forwarding_commitment: bool = True,
    ) -> None:
        self.db = db
        self.index = index
        self.storages = storages
        self.config = config
        self.today = today or date.today
        self.forwarding_commitment = forwarding_commitment
        self.listeners: list[DeletedListener] = []

    def _kept(self, uids: list[str]) -> dict[str, str]:
        return rules.protected(
            self.db.conn,
            uids,
            self.config.delete_shared,
            self.config.remove_not_forwarded,
            self.today(),
            self.forwarding_commitment,
        )

    def candidates(self, now: datetime | None = None) -> tuple[list[str], dict[str, str]]:
        """Series past ``store_days`` (by their newest instance's receipt), oldest first, and those of them kept
        with the reason."""
        if self.config.store_days <= 0:
            return [], {}
        now = now or datetime.now(UTC)
        cutoff = _stamp(now - timedelta(days=self.config.store_days))
        rows = self.db.conn.execute(
            "SELECT s.series_uid FROM series s JOIN instances i ON i.series_fk = s.id GROUP BY s.id"
            " HAVING MAX(i.received) <= ? ORDER BY MAX(i.received), s.id",
            (cutoff,),
        )
        uids = [r[0] for r in rows]
        kept = self._kept(uids)
        return [u for u in uids if u not in kept], kept

    def due(self, now: datetime | None = None) -> list[str]:
        """Series the deletion window deletes."""
        return self.candidates(now)[0]

    def delete_series(self, series_uid: str, why: str, actor: str = "maintenance") -> int:
        """Delete one series: index rows, audit line and journal in one transaction, then the files.

        Returns
        -------
        int
            Instances deleted (0 when the series was gone already).
        """

        def in_transaction(conn: sqlite3.Connection, instances: list[StoredInstance]) -> None:
            now = _stamp(datetime.now(UTC))
            conn.executemany(
                "INSERT OR REPLACE INTO deletion_journal (path, sop_uid, at) VALUES (?, ?, ?)",
                [(i.path, i.sop_uid, now) for i in instances],
            )
            size = sum(i.size for i in instances)
            conn.execute(
                "INSERT INTO audit_log (time, actor, action, study_uid, detail, outcome) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    now,
                    actor,
                    "series.delete",
                    instances[0].study_uid,
                    f"series {series_uid}: {len(instances)} instance(s), {size // 1024} kB; {why}"[:500],
                    "success",
                ),
            )

        instances = self.index.delete_series(series_uid, in_transaction)
        if not instances:
            return 0
        for inst in instances:
            if self.storages.is_available(inst.path):
                self.storages.delete(inst.path)
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM deletion_journal WHERE path = ?", [(i.path,) for i in instances])
        study_gone = self.index.study(instances[0].study_uid) is None
        for listener in self.listeners:
            try:
                listener(series_uid, instances, study_gone)
            except Exception:
                LOGGER.exception("a deletion listener failed for %s", series_uid)
        LOGGER.info("deleted series %s (%d instance(s)): %s", series_uid, len(instances), why)
        return len(instances)

    # -- low space ----------------------------------------------------------------------------------

    def low_storages(self) -> list[Storage]:
        """Available storages whose free space is below ``low_space_threshold_mb``."""
        if not self.config.low_space_removal:
            return []
        limit = self.config.low_space_threshold_mb * _MB
        return [s for s in self.storages.all() if s.available and s.free_bytes() < limit]

    def oldest_on(self, storage: Storage, limit: int = 50) -> list[str]:
        """The oldest series (by newest receipt) with files on a storage, that may be deleted."""
        if storage.number == 0:
            where = "i.path NOT LIKE '@%'"
            args: tuple[object, ...] = ()
        else:
            where = "i.path LIKE ?"
            args = (f"@{storage.number}/%",)
        rows = self.db.conn.execute(
            f"SELECT s.series_uid FROM series s JOIN instances i ON i.series_fk = s.id WHERE s.id IN"
            f" (SELECT DISTINCT series_fk FROM instances i WHERE {where}) GROUP BY s.id"
            f" ORDER BY MAX(i.received), s.id LIMIT ?",
            (*args, limit * 4),
        )
        uids = [r[0] for r in rows]
        kept = self._kept(uids)
        return [u for u in uids if u not in kept][:limit]

    def free_low_space(self) -> int:
        """Delete the oldest series of each low storage until it is above the threshold; instances deleted."""
        deleted = 0
        limit = self.config.low_space_threshold_mb * _MB
        for storage in self.low_storages():
            tried: set[str] = set()
            while storage.free_bytes() < limit:
                batch = [u for u in self.oldest_on(storage) if u not in tried]
                if not batch:
                    LOGGER.error(
                        "storage %d at %s is below %d MB free and nothing more may be deleted",
                        storage.number,
                        storage.root,
                        self.config.low_space_threshold_mb,
                    )
                    break
                for uid in batch:
                    tried.add(uid)
                    deleted += self.delete_series(
                        uid,
                        f"low space: storage {storage.number} had {storage.free_bytes() // _MB} MB free,"
                        f" threshold {self.config.low_space_threshold_mb} MB",
                    )
                    if storage.free_bytes() >= limit:
                        break
        return deleted


def storage_of(path: str) -> int:
    """The storage number of an index path."""
    return split(path)[0]
