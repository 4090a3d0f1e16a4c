"""Several storage folders behind the one interface of :class:`~appliance.store.FileStore`.

Each storage has a number kept in the ``storages`` table. Index paths of storage 0 (the ``data_dir`` store,
the only one before ``[[storage]]`` existed) are plain relative paths, so existing stores keep working without
migration; those of storage ``n`` start with ``@n/``. A path in the database therefore survives a storage
being moved: only the table's folder changes.

Each storage folder holds a marker file (:data:`MARKER`) with its number. A folder that is missing, empty
where files were, or without its marker (an unmounted share shows the empty mount point) is *unavailable*:
it takes no files, its index rows stay, and it is reported. New files go to the first enabled, available
storage with room above its free-space limit; when none has room the write raises
:class:`~appliance.errors.OutOfResources` (C-STORE answers 0xA700).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.config import StorageConfig
from appliance.db import Database
from appliance.errors import ConfigError, OutOfResources
from appliance.store import TMP, FileStore, Spool

LOGGER = logging.getLogger(__name__)

#: File in each storage folder naming its storage number.
MARKER = ".appliance-storage"
_MB = 1024 * 1024


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def split(rel: str) -> tuple[int, str]:
    """An index path as (storage number, path inside that storage)."""
    if rel.startswith("@"):
        number, _, inner = rel[1:].partition("/")
        if number.isdigit():
            return int(number), inner
    return 0, rel


def join(number: int, inner: str) -> str:
    """The index path of ``inner`` in storage ``number``."""
    return inner if number == 0 else f"@{number}/{inner}"


@dataclass
class Storage:
    """One storage folder as the running appliance sees it."""

    number: int
    root: Path
    #: Takes new files (config and the admin's switch; false while a move runs).
    enabled: bool
    free_space_limit_mb: int
    #: The folder is there and is this storage (its marker matches).
    available: bool = True
    #: Why it is unavailable.
    problem: str = ""
    moving: str = ""
    store: FileStore | None = None

    def free_bytes(self) -> int:
        """Free space on the storage's file system (0 when unavailable)."""
        try:
            return shutil.disk_usage(self.root).free
        except OSError:
            return 0

    def total_bytes(self) -> int:
        """Size of the storage's file system (0 when unavailable)."""
        try:
            return shutil.disk_usage(self.root).total
        except OSError:
            return 0


#: Called with (storage, problem) when a storage becomes unavailable, or with problem "" when it is back.
AvailabilityListener = Callable[[Storage, str], None]
#: Called with the storage when a write found no storage with room (the free-space limit is reached).
FullListener = Callable[[Storage], None]


class Storages:
    """The configured storages; reads and writes by index path.

    Parameters
    ----------
    db : Database
        Holds the ``storages`` table.
    default_root : Path
        The ``data_dir`` store (storage 0).
    default_limit_mb : int
        Its free-space limit when no ``[[storage]]`` names it ([dicom] free_space_limit_mb).
    configured : sequence of StorageConfig
        ``[[storage]]`` entries; empty: storage 0 only.
    temp_dir : Path, optional
        ``[appliance] temp_dir``: where incoming files are written before they move into a storage.

    Raises
    ------
    ConfigError
        When ``temp_dir`` cannot be created or written (checked here, at start).
    """

    def __init__(
        self,
        db: Database,
        default_root: Path,
        default_limit_mb: int,
        configured: Sequence[StorageConfig] = (),
        temp_dir: Path | None = None,
    ) -> None:
        self.db = db
        self.temp_dir = Path(temp_dir) if temp_dir else None
        if self.temp_dir is not None:
            check_temp_dir(self.temp_dir)
        self.availability_listeners: list[AvailabilityListener] = []
        self.full_listeners: list[FullListener] = []
        self._lock = threading.Lock()
        self._default_root = Path(default_root)
        self._configured = list(configured)
        if not self._configured:
            self._configured = [StorageConfig(str(self._default_root), True, default_limit_mb)]
        self._by_number: dict[int, Storage] = {}
        self._order: list[int] = []
        self._setup()

    # -- set-up and refresh -------------------------------------------------------------------------

    def _setup(self) -> None:
        conn = self.db.conn
        now = _now()
        with self.db.transaction() as tx:
            if tx.execute("SELECT 1 FROM storages WHERE id = 0").fetchone() is None:
                tx.execute(
                    "INSERT INTO storages (id, path, free_space_limit_mb, source, created, updated)"
                    " VALUES (0, ?, 0, 'default', ?, ?)",
                    (str(self._default_root), now, now),
                )
            for entry in self._configured:
                row = tx.execute(
                    "SELECT id, path FROM storages WHERE path = ? OR moved_from = ?", (entry.path, entry.path)
                ).fetchone()
                if row is None:
                    tx.execute(
                        "INSERT INTO storages (path, free_space_limit_mb, created, updated) VALUES (?, ?, ?, ?)",
                        (entry.path, entry.free_space_limit_mb, now, now),
                    )
                elif row["path"] != entry.path:
                    LOGGER.warning(
                        "storage %s was moved to %s (appliance storage move): using %s; change the"
                        " [[storage]] path in the config file",
                        entry.path,
                        row["path"],
                        row["path"],
                    )
        configured_numbers = []
        for entry in self._configured:
            row = conn.execute(
                "SELECT * FROM storages WHERE path = ? OR moved_from = ?", (entry.path, entry.path)
            ).fetchone()
            configured_numbers.append(row["id"])
            self._by_number[row["id"]] = Storage(
                row["id"],
                Path(row["path"]),
                entry.enabled and bool(row["enabled"]) and not row["moving"],
                entry.free_space_limit_mb,
                moving=row["moving"],
            )
        # Storages no longer configured (or added in the staff UI) stay readable; UI-added ones may take files.
        for row in conn.execute("SELECT * FROM storages ORDER BY id"):
            if row["id"] in self._by_number:
                continue
            if row["id"] == 0 and not self._has_rows(0) and not _holds_files(Path(row["path"])):
                continue  # the data_dir store, replaced by [[storage]] before it held anything
            takes = row["source"] == "ui" and bool(row["enabled"]) and not row["moving"]
            self._by_number[row["id"]] = Storage(
                row["id"], Path(row["path"]), takes, row["free_space_limit_mb"], moving=row["moving"]
            )
        extra = [n for n in self._by_number if n not in configured_numbers]
        self._order = configured_numbers + sorted(extra)
        for storage in self._by_number.values():
            self._open(storage, first=True)

    def _has_rows(self, number: int) -> bool:
        if number == 0:
            sql = "SELECT 1 FROM instances WHERE path NOT LIKE '@%' LIMIT 1"
            row = self.db.conn.execute(sql).fetchone()
        else:
            row = self.db.conn.execute(
                "SELECT 1 FROM instances WHERE path LIKE ? LIMIT 1", (f"@{number}/%",)
            ).fetchone()
        return row is not None

    def _open(self, storage: Storage, first: bool = False) -> None:
        """Check a storage's folder and marker; set it up on first use; report a change of availability."""
        problem = self._check(storage)
        was = storage.available
        storage.available = not problem
        storage.problem = problem
        if storage.available and storage.store is None:
            storage.store = FileStore(storage.root, storage.free_space_limit_mb, self.temp_dir)
        if storage.available and not was and not first:
            LOGGER.warning("storage %d at %s is available again", storage.number, storage.root)
            self._tell(storage, "")
        if not storage.available and (first or was):
            LOGGER.error(
                "storage %d at %s is unavailable: %s; its files stay in the index and are not written to",
                storage.number,
                storage.root,
                problem,
            )
            self._tell(storage, problem)

    def _tell(self, storage: Storage, problem: str) -> None:
        for listener in self.availability_listeners:
            try:
                listener(storage, problem)
            except Exception:
                LOGGER.exception("a storage listener failed")

    def _check(self, storage: Storage) -> str:
        marker = storage.root / MARKER
        try:
            if marker.is_file():
                number = marker.read_text().split()[0]
                if number != str(storage.number):
                    return f"the folder belongs to storage {number}, not {storage.number}"
                return ""
        except (OSError, IndexError) as exc:
            return f"its marker {MARKER} cannot be read ({exc})"
        row = self.db.conn.execute("SELECT initialized FROM storages WHERE id = ?", (storage.number,)).fetchone()
        initialized = bool(row and row[0])
        holds_files = _holds_files(storage.root)
        has_rows = self._has_rows(storage.number)
        if initialized or (has_rows and not holds_files):
            # Files were here (or the index says so): an absent or empty folder is a disk or share that is not
            # mounted. Never set up an empty folder in its place: the index rows stay, the storage waits.
            if not storage.root.exists():
                return "the folder does not exist (disk or share not mounted?)"
            if has_rows and not holds_files:
                return (
                    f"the folder is empty (no {MARKER}) while the index holds files in it (disk or share not mounted?)"
                )
            return f"the folder has no {MARKER} (disk or share not mounted?)"
        # First use (or an existing data_dir store from before storages): claim the folder. A [[storage]] folder
        # is created only inside a folder that exists: a missing parent is more likely a share not mounted yet
        # than a place to start a new storage on the system disk (the data_dir store makes its parents).
        created = not storage.root.exists()
        if created and storage.number != 0 and not storage.root.parent.is_dir():
            return (
                f"neither the folder nor its parent {storage.root.parent} exists (disk or share not mounted?);"
                " create the folder to start a new storage there"
            )
        try:
            storage.root.mkdir(parents=True, exist_ok=True)
            tmp = marker.with_suffix(".part")
            tmp.write_text(f"{storage.number}\nappliance storage; do not remove\n")
            os.replace(tmp, marker)
        except OSError as exc:
            return f"the folder cannot be set up: {exc.strerror or exc}"
        with self.db.transaction() as tx:
            tx.execute("UPDATE storages SET initialized = 1, updated = ? WHERE id = ?", (_now(), storage.number))
        if has_rows:
            LOGGER.info(
                "storage %d: marked %s, whose files were indexed before storages had markers",
                storage.number,
                storage.root,
            )
        else:
            LOGGER.info(
                "storage %d: %s %s as a new, empty storage (the index holds no file in it)",
                storage.number,
                "created" if created else "set up",
                storage.root,
            )
        return ""

    def refresh(self) -> None:
        """Re-read the admin's switches and moves from the database and re-check every folder.

        Called periodically by the serve process, so that ``appliance storage move`` in another process and
        an unmounted share are seen without a restart.
        """
        rows = {r["id"]: r for r in self.db.conn.execute("SELECT * FROM storages")}
        with self._lock:
            for number, row in rows.items():
                storage = self._by_number.get(number)
                if storage is None and number == 0:
                    continue  # the unused data_dir store (see _setup)
                if storage is None:  # added in the staff UI by another process
                    storage = Storage(number, Path(row["path"]), False, row["free_space_limit_mb"])
                    self._by_number[number] = storage
                    self._order.append(number)
                configured = self._configured_entry(number)
                if Path(row["path"]) != storage.root:
                    LOGGER.warning("storage %d now lives at %s (was %s)", number, row["path"], storage.root)
                    storage.root = Path(row["path"])
                    storage.store = None
                    storage.available = False
                base = configured.enabled if configured is not None else row["source"] == "ui"
                enabled = base and bool(row["enabled"]) and not row["moving"]
                if enabled != storage.enabled:
                    LOGGER.info(
                        "storage %d at %s %s new files%s",
                        number,
                        storage.root,
                        "takes" if enabled else "takes no",
                        f" (moving to {row['moving']})" if row["moving"] else "",
                    )
                storage.enabled = enabled
                storage.moving = row["moving"]
                if configured is None:
                    storage.free_space_limit_mb = row["free_space_limit_mb"]
                    if storage.store is not None:
                        storage.store.free_space_limit = storage.free_space_limit_mb * _MB
        for storage in list(self._by_number.values()):
            self._open(storage)

    def _configured_entry(self, number: int) -> StorageConfig | None:
        for entry, n in zip(self._configured, self._order, strict=False):
            if n == number:
                return entry
        return None

    # -- what the rest of the appliance calls (the FileStore interface) -------------------------------

    def all(self) -> list[Storage]:
        """Every known storage, in the order new files try them."""
        return [self._by_number[n] for n in self._order]

    def get(self, number: int) -> Storage:
        """One storage by number (KeyError when unknown)."""
        return self._by_number[number]

    @property
    def first(self) -> Storage:
        """The first storage in order."""
        return self._by_number[self._order[0]]

    @property
    def tmp(self) -> Path:
        """Where incoming files are written first (temp_dir, else the first storage's ``tmp/``)."""
        if self.temp_dir is not None:
            return self.temp_dir
        return self.first.root / TMP

    @property
    def free_space_limit(self) -> int:
        """The first storage's free-space limit in bytes."""
        return self.first.free_space_limit_mb * _MB

    @free_space_limit.setter
    def free_space_limit(self, value: int) -> None:
        self.first.free_space_limit_mb = value // _MB
        if self.first.store is not None:
            self.first.store.free_space_limit = value

    def writable(self) -> list[Storage]:
        """Enabled, available storages in order."""
        return [s for s in self.all() if s.enabled and s.available and s.store is not None]

    def spool(self) -> Spool:
        """A new temporary file for a large data set being received (:class:`~appliance.store.Spool`), in
        :meth:`spool_folder`."""
        return Spool(self.spool_folder() / f"{uuid.uuid4().hex}.spool")

    def spool_folder(self) -> Path:
        """Where data sets being received are written: ``temp_dir`` or the first writable storage's ``tmp/``
        (created if missing), so that the stored file is made from them on the same file system."""
        writable = self.writable()
        folder = self.temp_dir or (writable[0].root if writable else self.first.root) / TMP
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write(self, chunks: list[bytes | memoryview | Spool]) -> str:
        """Write one file durably into the first storage with room; return its index path.

        Raises
        ------
        OutOfResources
            No enabled storage has room above its limit (or none is available); nothing is left behind.
        """
        reasons = []
        candidates = self.writable()
        for storage in candidates:
            assert storage.store is not None
            try:
                return join(storage.number, storage.store.write(chunks))
            except OutOfResources as exc:
                reasons.append(f"storage {storage.number} ({storage.root}): {exc}")
        if candidates:
            for listener in self.full_listeners:
                try:
                    listener(candidates[-1])
                except Exception:
                    LOGGER.exception("a storage listener failed")
        if not reasons:
            raise OutOfResources("no storage takes new files (all are disabled or unavailable)")
        raise OutOfResources("; ".join(reasons))

    def check_space(self, incoming: int = 0) -> None:
        """Raise :class:`OutOfResources` when no writable storage has room for ``incoming`` bytes."""
        reasons = []
        for storage in self.writable():
            assert storage.store is not None
            try:
                storage.store.check_space(incoming)
                return
            except OutOfResources as exc:
                reasons.append(str(exc))
        raise OutOfResources("; ".join(reasons) or "no storage takes new files")

    def path(self, rel: str) -> Path:
        """Absolute path of a stored file."""
        number, inner = split(rel)
        storage = self._by_number.get(number)
        if storage is None:
            raise KeyError(f"index path {rel!r} names unknown storage {number}")
        return storage.root / inner

    def is_available(self, rel: str) -> bool:
        """Whether the storage of an index path is mounted and readable."""
        storage = self._by_number.get(split(rel)[0])
        return storage is not None and storage.available

    def delete(self, rel: str) -> None:
        """Remove a stored file, if it is there."""
        self.path(rel).unlink(missing_ok=True)

    def finish_interrupted(self, rel: str) -> bool:
        """See :meth:`FileStore.finish_interrupted`."""
        number, inner = split(rel)
        storage = self._by_number.get(number)
        if storage is None or storage.store is None:
            return False
        return storage.store.finish_interrupted(inner)

    def clean_tmp(self) -> int:
        """Remove unfinished writes of every available storage."""
        return sum(s.store.clean_tmp() for s in self.all() if s.store is not None and s.available)

    def iter_files(self) -> list[str]:
        """Every stored file of the available storages, as index paths."""
        found: list[str] = []
        for storage in self.all():
            if storage.store is not None and storage.available:
                found.extend(join(storage.number, rel) for rel in storage.store.iter_files())
        return found

    def free_bytes(self) -> int:
        """Free bytes of the first writable storage (the first storage when none is)."""
        writable = self.writable()
        return (writable[0] if writable else self.first).free_bytes()

    def instance_counts(self) -> dict[int, tuple[int, int]]:
        """Instances and bytes per storage number, from the index."""
        counts: dict[int, tuple[int, int]] = {n: (0, 0) for n in self._by_number}
        sql = (
            "SELECT CASE WHEN path LIKE '@%' THEN CAST(substr(path, 2, instr(path, '/') - 2) AS INTEGER)"
            " ELSE 0 END AS n, COUNT(*), COALESCE(SUM(size), 0) FROM instances GROUP BY n"
        )
        for number, count, size in self.db.conn.execute(sql):
            counts[number] = (count, size)
        return counts

    # -- admin switches -----------------------------------------------------------------------------

    def set_enabled(self, number: int, enabled: bool) -> None:
        """The admin's switch: a disabled storage takes no new files (still read)."""
        with self.db.transaction() as tx:
            if (
                tx.execute(
                    "UPDATE storages SET enabled = ?, updated = ? WHERE id = ?", (int(enabled), _now(), number)
                ).rowcount
                == 0
            ):
                raise KeyError(f"no storage {number}")
        self.refresh()

    def add(self, path: Path, free_space_limit_mb: int = 2048) -> int:
        """Add a storage (staff UI); it takes files after the configured ones. Returns its number."""
        path = Path(path)
        if not path.is_absolute():
            raise ConfigError(f"storage path {path} must be absolute")
        now = _now()
        with self.db.transaction() as tx:
            if tx.execute("SELECT 1 FROM storages WHERE path = ?", (str(path),)).fetchone():
                raise ConfigError(f"{path} is a storage already")
            number = int(
                tx.execute(
                    "INSERT INTO storages (path, source, free_space_limit_mb, created, updated)"
                    " VALUES (?, 'ui', ?, ?, ?) RETURNING id",
                    (str(path), free_space_limit_mb, now, now),
                ).fetchone()[0]
            )
        self.refresh()
        return number


def _holds_files(root: Path) -> bool:
    try:
        return root.is_dir() and any(p.name not in (TMP, MARKER) for p in root.iterdir())
    except OSError:
        return False


def check_temp_dir(folder: Path) -> None:
    """Make sure ``temp_dir`` exists (created if missing) and takes a flushed file.

    Raises
    ------
    ConfigError
        Naming the folder and why.
    """
    probe = folder / f".probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"[appliance] temp_dir {folder} cannot be used: {exc.strerror or exc}") from None
