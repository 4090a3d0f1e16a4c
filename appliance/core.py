"""The appliance core: one object that stores, indexes, answers queries and finds files.

Protocol front ends (DICOM, HL7, web) call :class:`Appliance` and translate its
answers; it knows nothing of sockets. It is built once by the CLI (the
composition root) from the configuration.
"""

from __future__ import annotations

import functools
import io
import logging
import re
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from appliance import __version__
from appliance.config import Config, NodeConfig
from appliance.db import Database, describe
from appliance.errors import IndexFailure, InvalidDataset, OutOfResources
from appliance.index import Index, InstanceRecord, StoredInstance, extract
from appliance.nodes import NodeRegistry
from appliance.part10 import file_meta
from appliance.query import find, match_instances
from appliance.scan import instance_record
from appliance.storage import Storages
from appliance.store import Spool
from appliance.validate import check_structure, inflate
from appliance.worklist.hl7log import MessageLog
from appliance.worklist.mpps import MppsService
from appliance.worklist.store import Worklist

if TYPE_CHECKING:  # pragma: no cover
    from appliance.conversion import ConversionService
    from appliance.forwarding.search import ExtendedSearch

LOGGER = logging.getLogger(__name__)

IMPLEMENTATION_VERSION = f"APPLIANCE_{__version__}"[:16]
_CLEAN_MARKER = "running"
_SQLITE_FULL = 13

#: Suffix of a called AE title -> what happens to the instances received under it.
BURN_SUFFIXES = {"_E": "epson", "_P": "primera", "_TE": "epson", "_TP": "primera"}


class StoreOutcome(Enum):
    """What :meth:`Appliance.store` did with an instance."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    REPLACED = "replaced"


@dataclass(frozen=True)
class Incoming:
    """A received data set for :meth:`Appliance.store_batch` (the arguments of :meth:`Appliance.store`)."""

    dataset: bytes | memoryview | Spool
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class _Written:
    """A data set of a batch on disk, not indexed yet."""

    rec: InstanceRecord
    rel: str
    size: int
    transfer_syntax: str


@dataclass(frozen=True)
class StoreResult:
    """The result of storing one instance."""

    outcome: StoreOutcome
    record: InstanceRecord
    path: str


#: Called after every stored instance: (result, calling AE, called AE, association id).
StoredListener = Callable[[StoreResult, str, str, str], None]
#: Called with a Storage Commitment report that came to our listener: (Transaction UID, committed SOP Instance
#: UIDs, failed ones with their reason); returns whether the transaction was the listener's.
CommitmentListener = Callable[[str, list[str], dict[str, str]], bool]
#: Called when an association that stored something ends:
#: (called AE, association id, SOP Instance UIDs, released normally rather than aborted).
ReleasedListener = Callable[[str, str, list[str], bool], None]


class Appliance:
    """The store, the index and the policies around them.

    Parameters
    ----------
    config : Config
        The loaded configuration.
    client_tls : callable, optional
        Makes the client TLS context for outgoing associations to nodes with ``tls = true``.
    """

    def __init__(self, config: Config, client_tls: Callable[[], ssl.SSLContext] | None = None) -> None:
        self.config = config
        self.client_tls = client_tls
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(config.database)
        self.index = Index(self.db)
        self.store_area = Storages(
            self.db,
            config.store_dir,
            config.dicom.free_space_limit_mb,
            config.storages,
            Path(config.temp_dir) if config.temp_dir else None,
        )
        self.worklist = Worklist(self.db, config.worklist, config.hl7.reject_merged_ids)
        self.mpps = MppsService(self.db, self.worklist)
        self.hl7_log = MessageLog(self.db, config.hl7.log_retention_days)
        self.stored_listeners: list[StoredListener] = []
        self.released_listeners: list[ReleasedListener] = []
        self.commitment_listeners: list[CommitmentListener] = []
        #: ``[forwarding] extended_search``: C-FIND also asks the regional PACS, C-MOVE/C-GET fetch from it.
        self.extended_search: ExtendedSearch | None = None
        #: Conversions for retrieve and DICOMweb receivers, in budgeted worker processes (set by the CLI; None:
        #: in this process, without a budget).
        self.conversions: ConversionService | None = None
        #: Called when a received instance could not be saved: (SOP Instance UID, calling AE, the error).
        self.save_failed_listeners: list[Callable[[str, str, Exception], None]] = []
        self._received: dict[str, list[str]] = {}
        self._received_lock = threading.Lock()

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover from an unclean stop, then mark the data folder as in use."""
        marker = self.config.data_dir / _CLEAN_MARKER
        self.finish_deletions()
        if marker.exists():
            LOGGER.warning("the previous run did not stop cleanly: checking store and index agree")
            self.reconcile()  # before tmp/ is cleaned: it may finish renames a power cut undid
        self.store_area.clean_tmp()
        marker.write_text("appliance is running; this file is removed on a clean stop\n")

    def stop(self) -> None:
        """Mark a clean stop and close the database."""
        try:
            (self.config.data_dir / _CLEAN_MARKER).unlink(missing_ok=True)
        except OSError as exc:  # a data disk gone read-only: the next start reconciles, which is right
            LOGGER.error("cannot mark the stop as clean: %s", exc)
        self.db.close()

    def reconcile(self) -> tuple[int, int]:
        """Make the index and the files agree after a crash.

        A file renamed into the store but not yet indexed was never acknowledged;
        it is complete (it was flushed before the rename), so it is indexed rather
        than thrown away. An indexed file still under ``tmp/`` (a power cut undid its
        rename) is moved into place. Index rows whose file is gone are dropped.

        Returns
        -------
        tuple of int
            (files indexed, rows dropped).
        """
        on_disk = set(self.store_area.iter_files())
        # A storage that is unavailable (unmounted) keeps its rows: its files are not gone, only out of reach.
        indexed = {p for p in self.index.all_paths() if self.store_area.is_available(p)}
        for rel in indexed - on_disk:
            if self.store_area.finish_interrupted(rel):
                LOGGER.warning("stored file %s was still under tmp/: moved into place", rel)
                on_disk.add(rel)
        added = 0
        for rel in sorted(on_disk - indexed):
            try:
                ds = dcmread(self.store_area.path(rel), stop_before_pixels=True)
                rec = extract(ds)
                ts = str(ds.file_meta.TransferSyntaxUID)
                if self.index.lookup(rec.sop_uid) is not None:
                    self.store_area.delete(rel)  # a copy already indexed elsewhere
                    continue
                size = self.store_area.path(rel).stat().st_size
                # The sender is in the file (Source AE Title); the AE title it called is not.
                self.index.record(rec, ts, rel, size, str(ds.file_meta.get("SourceApplicationEntityTitle", "")))
                added += 1
            except Exception as exc:
                LOGGER.error("unreadable file %s left in the store is removed: %s", rel, exc)
                self.store_area.delete(rel)
        dropped = self.index.remove_paths(indexed - on_disk)
        if added or dropped:
            LOGGER.warning("reconciled store: %d file(s) indexed, %d row(s) without a file dropped", added, dropped)
        return added, dropped

    def finish_deletions(self) -> int:
        """Remove the files of deletions a crash interrupted (their index rows are gone already)."""
        rows = self.db.conn.execute("SELECT path FROM deletion_journal").fetchall()
        for (rel,) in rows:
            if self.store_area.is_available(rel):
                self.store_area.delete(rel)
        if rows:
            with self.db.transaction() as conn:
                conn.executemany(
                    "DELETE FROM deletion_journal WHERE path = ?",
                    [r for r in rows if self.store_area.is_available(r[0])],
                )
            LOGGER.warning("finished %d file deletion(s) an interruption left undone", len(rows))
        return len(rows)

    # -- policy -----------------------------------------------------------------------------------

    def ae_titles(self) -> set[str]:
        """Every AE title this node answers to: the main title and its burn forms ([burn] routes)."""
        base = self.config.dicom.ae_title
        return {base} | {base + suffix for suffix in (*BURN_SUFFIXES, *self.config.burn.routes)}

    @functools.cached_property
    def node_registry(self) -> NodeRegistry:
        """Known nodes: the config file's and those added in the staff UI (see :mod:`appliance.nodes`)."""
        return NodeRegistry(self.db, self.config.dicom.nodes)

    def node(self, ae_title: str) -> NodeConfig | None:
        """The known node with this AE title (config file first, then the nodes added in the staff UI)."""
        return self.node_registry.get(ae_title)

    def may(self, calling_ae: str, right: str) -> bool:
        """Whether ``calling_ae`` may use a service (store, find, move, get, mwl)."""
        node = self.node(calling_ae)
        if node is not None:
            return node.may(right)
        return self.config.dicom.accept_any_ae

    def may_associate(self, calling_ae: str) -> bool:
        """Whether an association from ``calling_ae`` is accepted at all."""
        return self.config.dicom.accept_any_ae or self.node(calling_ae) is not None

    # -- store ------------------------------------------------------------------------------------

    def store(
        self,
        dataset: bytes | memoryview | Spool,
        transfer_syntax: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        calling_ae: str = "",
        called_ae: str = "",
        association_id: str = "",
    ) -> StoreResult:
        """Store one received data set durably and index it.

        The file is flushed and renamed into place and the index committed before
        this returns, so the caller may acknowledge the instance.

        Parameters
        ----------
        dataset : bytes, memoryview or Spool
            The data set as received (no file meta), encoded in ``transfer_syntax``; a large one
            spooled to a temporary file as it arrived (the caller discards the spool), or a view of a
            STOW-RS body.
        transfer_syntax, sop_class_uid, sop_instance_uid : str
            From the presentation context and the C-STORE request.
        calling_ae, called_ae, association_id : str
            Who sent it, to which of our AE titles, on which association.

        Raises
        ------
        InvalidDataset
            The data set cannot be parsed or lacks a UID; nothing is stored.
        OutOfResources
            The store's disk is below the free-space limit, or the database's disk is full; nothing is stored.
        IndexFailure
            The index could not be written; the file is removed again.
        """
        rec, meta = self._prepare(dataset, transfer_syntax, sop_class_uid, sop_instance_uid, calling_ae)
        if self._is_duplicate(rec, calling_ae):
            result = StoreResult(StoreOutcome.DUPLICATE, rec, "")
        else:
            rel = self._write(rec, meta, dataset, calling_ae)
            size = len(meta) + len(dataset)
            try:
                replaced = self.index.record(rec, transfer_syntax, rel, size, calling_ae, called_ae)
            except Exception as exc:
                raise self._index_failed(rec, rel, calling_ae, exc) from exc
            result = self._stored(rec, rel, replaced)
        self._announce(result, calling_ae, called_ae, association_id)
        return result

    def store_batch(
        self,
        items: Sequence[Incoming],
        calling_ae: str = "",
        called_ae: str = "",
        association_id: str = "",
        threads: int = 4,
    ) -> list[StoreResult | Exception]:
        """Store several received data sets, as :meth:`store` each, with one index transaction for all.

        Each data set is checked, written and flushed to disk (``threads`` at a time: their flushes overlap);
        then every written one is indexed in one transaction, flushed once. When that transaction fails, each
        is indexed on its own, so one bad instance does not cost the others. Every result is durable when
        this returns, as with :meth:`store`; listeners hear of the instances in the order given.

        Parameters
        ----------
        items : sequence of Incoming
            The data sets with their transfer syntax and UIDs, as :meth:`store` takes them.
        calling_ae, called_ae, association_id : str
            As for :meth:`store`.
        threads : int
            Data sets checked and written at the same time.

        Returns
        -------
        list of StoreResult or Exception
            For each item, what :meth:`store` would return, or the exception it would raise (nothing of that
            item is stored then).
        """

        def written(item: Incoming) -> _Written | StoreResult | Exception:
            try:
                rec, meta = self._prepare(
                    item.dataset, item.transfer_syntax, item.sop_class_uid, item.sop_instance_uid, calling_ae
                )
                if self._is_duplicate(rec, calling_ae):
                    return StoreResult(StoreOutcome.DUPLICATE, rec, "")
                rel = self._write(rec, meta, item.dataset, calling_ae)
                return _Written(rec, rel, len(meta) + len(item.dataset), item.transfer_syntax)
            except Exception as exc:
                return exc

        if threads > 1 and len(items) > 1:
            with ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="store") as pool:
                outcomes: list[_Written | StoreResult | Exception] = list(pool.map(written, items))
        else:
            outcomes = [written(item) for item in items]
        # An instance whose UID came earlier in the batch is stored after it, alone: the duplicate policy then
        # sees the first (and an overwrite replaces it), as when they come one after the other.
        seen: set[str] = set()
        later: list[int] = []
        for number, outcome in enumerate(outcomes):
            if isinstance(outcome, Exception):
                continue
            uid = outcome.rec.sop_uid if isinstance(outcome, _Written) else outcome.record.sop_uid
            if uid in seen:
                later.append(number)
                if isinstance(outcome, _Written):
                    self.store_area.delete(outcome.rel)
            seen.add(uid)
        batch = [(n, o) for n, o in enumerate(outcomes) if isinstance(o, _Written) and n not in later]
        results: dict[int, StoreResult | Exception] = {
            n: o for n, o in enumerate(outcomes) if not isinstance(o, _Written) and n not in later
        }
        entries = [(w.rec, w.transfer_syntax, w.rel, w.size, calling_ae, called_ae) for _, w in batch]
        try:
            replaced_all: list[str | Exception | None] = list(self.index.record_many(entries)) if entries else []
        except Exception as exc:
            LOGGER.warning(
                "the index could not record %d instances at once (%s): recording them one by one",
                len(entries),
                describe(exc),
            )
            replaced_all = []
            for entry in entries:
                try:
                    replaced_all.append(self.index.record(*entry))
                except Exception as one:
                    replaced_all.append(one)
        for (number, w), replaced in zip(batch, replaced_all, strict=True):
            if isinstance(replaced, Exception):
                results[number] = self._index_failed(w.rec, w.rel, calling_ae, replaced)
            else:
                results[number] = self._stored(w.rec, w.rel, replaced)
        for number in sorted(results):
            result = results[number]
            if isinstance(result, StoreResult):
                self._announce(result, calling_ae, called_ae, association_id)
        for number in later:
            item = items[number]
            try:
                results[number] = self.store(
                    item.dataset,
                    item.transfer_syntax,
                    item.sop_class_uid,
                    item.sop_instance_uid,
                    calling_ae,
                    called_ae,
                    association_id,
                )
            except Exception as exc:
                results[number] = exc
        ordered = [results[number] for number in range(len(items))]
        return ordered

    def _prepare(
        self,
        dataset: bytes | memoryview | Spool,
        transfer_syntax: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        calling_ae: str,
    ) -> tuple[InstanceRecord, bytes]:
        """Check a data set and read what the index keeps; its record and file meta (InvalidDataset)."""
        ts = UID(transfer_syntax)
        rec: InstanceRecord | None = None
        # A spooled data set is read through a mapping: only the pages holding element headers are touched.
        data = dataset.mapped() if isinstance(dataset, Spool) else dataset
        if not ts.is_deflated:
            # One pass over the bytes checks the structure and reads the indexed values (appliance.scan);
            # pydicom decodes only what that pass leaves to it (None).
            rec = instance_record(data, ts.is_implicit_VR, ts.is_little_endian)  # type: ignore[arg-type]
        else:
            # pydicom inflates and reads without checking lengths or depth: check the inflated bytes first.
            check_structure(inflate(data), False, True)
        meta = file_meta(sop_class_uid, sop_instance_uid, transfer_syntax, IMPLEMENTATION_VERSION, calling_ae)
        if rec is None:
            try:
                ds = dcmread(io.BytesIO(meta + data), stop_before_pixels=True)
            except Exception as exc:
                raise InvalidDataset(f"data set cannot be parsed: {exc}") from exc
            rec = extract(ds)
        if self.config.dicom.invalid_uids == "reject":
            _check_uids(rec, sop_instance_uid)
        if rec.sop_uid != sop_instance_uid:
            LOGGER.warning(
                "SOP Instance UID in the data set (%s) differs from the C-STORE request (%s); keeping the data set's",
                rec.sop_uid,
                sop_instance_uid,
            )
            meta = file_meta(
                rec.sop_class_uid or sop_class_uid, rec.sop_uid, transfer_syntax, IMPLEMENTATION_VERSION, calling_ae
            )
        return rec, meta

    def _is_duplicate(self, rec: InstanceRecord, calling_ae: str) -> bool:
        if self.index.lookup(rec.sop_uid) is not None and not self.config.dicom.overwrite:
            LOGGER.warning("duplicate instance %s from %s ignored (overwrite is off)", rec.sop_uid, calling_ae)
            return True
        return False

    def _write(self, rec: InstanceRecord, meta: bytes, dataset: bytes | memoryview | Spool, calling_ae: str) -> str:
        # Meta and data set go to the file as two chunks: no copy of the data set to join them.
        try:
            return self.store_area.write([meta, dataset])
        except Exception as exc:
            self._save_failed(rec.sop_uid, calling_ae, exc)
            raise

    def _index_failed(self, rec: InstanceRecord, rel: str, calling_ae: str, exc: Exception) -> Exception:
        """Remove the file the index could not record; the error to raise."""
        self.store_area.delete(rel)
        failure: Exception = IndexFailure(f"index could not record {rec.sop_uid}: {describe(exc)}")
        if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == _SQLITE_FULL:
            # The database shares a full disk with a storage: out of resources (0xA700), like the file.
            failure = OutOfResources(f"index could not record {rec.sop_uid}: {describe(exc)}")
        self._save_failed(rec.sop_uid, calling_ae, failure)
        return failure

    def _stored(self, rec: InstanceRecord, rel: str, replaced: str | None) -> StoreResult:
        if replaced:
            self.store_area.delete(replaced)
            LOGGER.info("instance %s replaced (overwrite is on)", rec.sop_uid)
        return StoreResult(StoreOutcome.REPLACED if replaced else StoreOutcome.STORED, rec, rel)

    def _announce(self, result: StoreResult, calling_ae: str, called_ae: str, association_id: str) -> None:
        rec = result.record
        if association_id:
            with self._received_lock:
                self._received.setdefault(association_id, []).append(rec.sop_uid)
        for listener in self.stored_listeners:
            try:
                listener(result, calling_ae, called_ae, association_id)
            except Exception:
                LOGGER.exception("a store listener failed for %s", rec.sop_uid)

    def _save_failed(self, sop_uid: str, calling_ae: str, exc: Exception) -> None:
        for listener in self.save_failed_listeners:
            try:
                listener(sop_uid, calling_ae, exc)
            except Exception:
                LOGGER.exception("a save-error listener failed for %s", sop_uid)

    def association_ended(self, called_ae: str, association_id: str, released: bool = True) -> None:
        """Tell the listeners that an association which stored instances has ended."""
        with self._received_lock:
            received = self._received.pop(association_id, [])
        if not received:
            return
        for listener in self.released_listeners:
            try:
                listener(called_ae, association_id, received, released)
            except Exception:
                LOGGER.exception("an association listener failed for %s", association_id)

    # -- query and retrieve -----------------------------------------------------------------------

    def find(self, identifier: Dataset, level: str, limit: int = 0) -> Iterator[Dataset]:
        """Answer a C-FIND identifier at a query level (see :func:`appliance.query.find`)."""
        return find(self.db.conn, identifier, level, self.config.dicom.ae_title, limit)

    def retrieve(self, identifier: Dataset, level: str) -> list[StoredInstance]:
        """Instances named by a C-MOVE/C-GET identifier, in study/series/instance order.

        With the extended search, what is held only by the regional PACS is first moved here from it.
        """
        found = [StoredInstance(*row) for row in match_instances(self.db.conn, identifier, level)]
        search = self.extended_search
        if not found and search is not None and search.fetch(identifier, level):
            found = [StoredInstance(*row) for row in match_instances(self.db.conn, identifier, level)]
            search.fetched([i.sop_uid for i in found])
        return found

    def commitment(self, references: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str, int]]]:
        """Which referenced instances are safely stored (Storage Commitment, PS3.4 J.3.3).

        An instance counts as committed when the index holds it under the same SOP Class and its file
        is in place (files are fsynced and renamed before they are indexed, so this is durable).

        Parameters
        ----------
        references : list of (str, str)
            (SOP Class UID, SOP Instance UID) pairs asked about.

        Returns
        -------
        (list, list)
            The committed pairs, and the failed ones with their Failure Reason: 0x0112 no such
            object instance, 0x0119 class/instance conflict, 0x0110 processing failure (file missing).
        """
        committed: list[tuple[str, str]] = []
        failed: list[tuple[str, str, int]] = []
        for sop_class, sop_uid in references:
            found = self.index.lookup(sop_uid)
            if found is None:
                failed.append((sop_class, sop_uid, 0x0112))
            elif found.sop_class_uid != sop_class:
                failed.append((sop_class, sop_uid, 0x0119))
            elif not self.file_path(found).is_file():
                failed.append((sop_class, sop_uid, 0x0110))
            else:
                committed.append((sop_class, sop_uid))
        return committed, failed

    def file_path(self, instance: StoredInstance) -> Path:
        """Absolute path of a stored instance's file."""
        return self.store_area.path(instance.path)


#: A UID as PS3.5 9.1 allows it: digits and dots, no empty component, at most 64 characters (leading zeros in a
#: component are tolerated: some modalities write them, and they harm nothing).
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def _check_uids(rec: InstanceRecord, requested: str) -> None:
    """Refuse a data set whose identifying UIDs are not UIDs (``[dicom] invalid_uids = "reject"``)."""
    for name, value in (
        ("Study Instance UID", rec.study_uid),
        ("Series Instance UID", rec.series_uid),
        ("SOP Instance UID", rec.sop_uid),
        ("SOP Class UID", rec.sop_class_uid),
        ("Affected SOP Instance UID", requested),
    ):
        if value and (len(value) > 64 or not _UID.fullmatch(value)):
            # Reason first: the error comment of the answer keeps only 64 characters.
            raise InvalidDataset(f"{name} is not a valid UID (digits and dots, at most 64): {value[:80]!r}")
