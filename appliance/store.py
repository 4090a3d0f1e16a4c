"""The file store: received instances as Part 10 files, written so that none is ever half there.

A file is written under ``tmp/``, flushed to disk (``fsync``) and renamed into its
final place, so a reader or a crash sees either nothing or the whole file. Each
receipt gets a fresh name (``YYYY/MM/DD/<uuid>.dcm``), so overwriting an instance
never touches the old file before the index points at the new one.

The temporary file has the same ``<uuid>`` (``tmp/<uuid>.part``). The rename itself
is not flushed (a directory ``fsync`` per instance would add a third disk flush to
every C-STORE): after a power cut, an instance whose index row was committed is
either in its place or, complete, still under ``tmp/``, and :meth:`FileStore.finish_interrupted`
moves it into place before ``tmp/`` is cleaned.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import shutil
import uuid
from datetime import datetime
from pathlib import Path

from appliance.errors import OutOfResources

LOGGER = logging.getLogger(__name__)

TMP = "tmp"


class Spool:
    """A large data set written to a temporary file as it arrives, instead of being held in memory.

    The receive path opens one (:meth:`FileStore.spool`) once a C-STORE's data set passes a few
    megabytes; :meth:`FileStore.write` copies it into the stored file in the kernel
    (``os.sendfile``), and the structure check reads it through :meth:`mapped` (headers only are
    touched, so the pixel data never enters the process's memory). :meth:`discard` removes it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
        self.size = 0
        self._map: mmap.mmap | None = None

    @classmethod
    def received(cls, path: Path) -> Spool:
        """A data set that another receiver (pynetdicom) wrote to ``path`` as it arrived.

        :meth:`discard` removes the file, as for a spool of ours.
        """
        spool = cls.__new__(cls)
        spool.path = path
        spool.fd = os.open(path, os.O_RDONLY)
        spool.size = os.fstat(spool.fd).st_size
        spool._map = None
        return spool

    def __len__(self) -> int:
        return self.size

    def write(self, chunk: bytes | memoryview) -> None:
        """Append received bytes (OSError when the disk refuses them)."""
        view = memoryview(chunk)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
            self.size += written

    def mapped(self) -> mmap.mmap | bytes:
        """The data set, mapped read-only (pages are read from the file only where they are looked at)."""
        if self._map is None:
            if not self.size:
                return b""  # an empty file cannot be mapped
            self._map = mmap.mmap(self.fd, self.size, prot=mmap.PROT_READ)
        return self._map

    def discard(self) -> None:
        """Close and remove the temporary file (idempotent)."""
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a view of it still exists: the GC unmaps it later
                self._map.close()
            self._map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.path.unlink(missing_ok=True)


class FileStore:
    """Part 10 files on a local file system.

    Parameters
    ----------
    root : Path
        Folder of the store; created when missing.
    free_space_limit_mb : int
        Writes are refused while the file system has less free space than this.
    tmp : Path, optional
        Folder incoming files are written to first (``[appliance] temp_dir``); default ``root/tmp``. On
        another file system a finished file is copied into ``root/tmp`` and renamed from there.
    """

    def __init__(self, root: Path, free_space_limit_mb: int = 0, tmp: Path | None = None) -> None:
        self.root = Path(root)
        self.tmp = Path(tmp) if tmp is not None else self.root / TMP
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.free_space_limit = free_space_limit_mb * 1024 * 1024
        #: Day folders known to exist: a mkdir per instance is a wasted system call (recreated if removed).
        self._folders: set[Path] = set()

    def free_bytes(self) -> int:
        """Free space on the store's file system, in bytes."""
        return shutil.disk_usage(self.root).free

    def check_space(self, incoming: int = 0) -> None:
        """Raise :class:`OutOfResources` when ``incoming`` bytes would cross the free-space limit."""
        free = self.free_bytes()
        if free - incoming < self.free_space_limit:
            raise OutOfResources(
                f"store disk has {free // (1024 * 1024)} MB free, limit is {self.free_space_limit // (1024 * 1024)} MB"
            )

    def spool(self) -> Spool:
        """A new temporary file for a large data set being received (see :class:`Spool`)."""
        return Spool(self.tmp / f"{uuid.uuid4().hex}.spool")

    def write(self, chunks: list[bytes | memoryview | Spool], enforce_limit: bool = True) -> str:
        """Write one file durably and return its path relative to the store root.

        Parameters
        ----------
        chunks : list of bytes or Spool
            The file's content, in order; a :class:`Spool` is copied by the kernel, not read into memory.
        enforce_limit : bool
            False for a file that replaces a bigger one (archiving): only a full disk stops it.

        Raises
        ------
        OutOfResources
            When the limit would be crossed or the disk fills during the write;
            nothing is left behind.
        """
        size = sum(len(c) for c in chunks)
        if enforce_limit:
            self.check_space(size)
        name = uuid.uuid4().hex
        rel = f"{datetime.now():%Y/%m/%d}/{name}.dcm"
        final = self.root / rel
        tmp = self.tmp / f"{name}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                for chunk in chunks:
                    if isinstance(chunk, Spool):
                        offset = 0
                        while offset < chunk.size:
                            sent = os.sendfile(fd, chunk.fd, offset, chunk.size - offset)
                            if not sent:
                                raise OSError(5, "spooled data set is shorter than received")
                            offset += sent
                        continue
                    view = memoryview(chunk)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            self._rename(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):  # on a read-only disk the clean-up fails too: keep the first error
                tmp.unlink(missing_ok=True)
            if exc.errno in (28, 122):  # ENOSPC, EDQUOT
                raise OutOfResources(f"store disk is full: {exc.strerror}") from exc
            if exc.errno == 30:  # EROFS
                raise OutOfResources(f"store disk is read-only: {exc.strerror}") from exc
            raise
        return rel

    def _rename(self, tmp: Path, final: Path) -> None:
        folder = final.parent
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
        try:
            os.replace(tmp, final)
        except FileNotFoundError:
            if not tmp.exists():
                raise
            self._folders.discard(folder)  # the day folder was removed behind our back
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        except OSError as exc:
            if exc.errno != 18:  # EXDEV: temp_dir on another file system
                raise
            self._copy_in(tmp, final)

    def _copy_in(self, tmp: Path, final: Path) -> None:
        """Bring a finished file from a temp_dir on another file system: copy, flush, rename, remove."""
        local = self.root / TMP / tmp.name
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "rb") as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(local, final)
        except BaseException:
            local.unlink(missing_ok=True)
            raise
        tmp.unlink(missing_ok=True)

    def finish_interrupted(self, rel: str) -> bool:
        """Move a complete file whose rename a crash may have undone into place; True if there was one.

        Only for files the index refers to: their rows were committed after the file was
        flushed, so ``tmp/<uuid>.part`` is whole (see the module docstring).
        """
        final = self.root / rel
        name = f"{Path(rel).stem}.part"
        tmp = next((t for t in (self.root / TMP / name, self.tmp / name) if t.exists()), None)
        if final.exists() or tmp is None:
            return False
        self._rename(tmp, final)
        return True

    def path(self, rel: str) -> Path:
        """Absolute path of a stored file."""
        return self.root / rel

    def delete(self, rel: str) -> None:
        """Remove a stored file, if it is there."""
        (self.root / rel).unlink(missing_ok=True)

    def clean_tmp(self) -> int:
        """Remove unfinished writes left by a crash; return how many there were."""
        count = 0
        for folder in dict.fromkeys((self.tmp, self.root / TMP)):
            if not folder.is_dir():
                continue
            for leftover in folder.iterdir():
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)
                    count += 1
        if count:
            LOGGER.warning("removed %d unfinished file(s) left in %s by an interrupted store", count, self.tmp)
        return count

    def iter_files(self) -> list[str]:
        """Every stored file, as paths relative to the root (excluding ``tmp/``)."""
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root and TMP in dirnames:
                dirnames.remove(TMP)
            for name in filenames:
                if name.endswith(".dcm"):
                    found.append(os.path.relpath(os.path.join(dirpath, name), self.root))
        return found
