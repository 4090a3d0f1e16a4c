"""DICOM worklist files: ``.wl`` files as DCMTK's ``wlmscpfs`` (and Orthanc's worklist plugin) keep them.

:func:`import_files` adds their items to the worklist, where the MWL SCP answers them exactly as items made by
HL7 orders; :class:`FolderWatcher` keeps the items of a folder of such files (``[worklist] folder``) in step
with it, as ``wlmscpfs -dfp`` reads its folder on every query; :func:`export_file` writes an item back as such
a file (used by ``bench/hl7`` to give Orthanc the same items).

A file is taken as ``wlmscpfs`` serves it: attributes it lacks are answered zero length (a missing Type 2
Referenced Study/Patient Sequence is added empty, as ``wlmscpfs`` does), and each gap is reported as a
warning naming the file. Only a file that is not DICOM, whose text cannot be decoded in its Specific
Character Set, or that has no Scheduled Procedure Step Sequence with an item, is refused, with the reason.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian

from appliance.db import WORKLIST
from appliance.errors import IncompleteItem, InvalidItem, NotFound, WorklistError
from appliance.worklist.items import TYPE2_SEQ, Attrs
from appliance.worklist.store import (
    SPS_SEQUENCE,
    ItemKey,
    SpsStatus,
    Worklist,
    from_dataset,
    new_uid,
    step_of,
    to_dataset,
)

LOGGER = logging.getLogger("appliance.worklist")

#: DCMTK's private SOP class of worklist files.
WORKLIST_FILE_CLASS = "1.2.276.0.7230010.3.1.0.1"

#: Values DCMTK's worklist clients need (``wlmscpfs`` without ``-dfr`` ignores files lacking one).
_TYPE1_TOP = ("PatientName", "PatientID", "StudyInstanceUID", "RequestedProcedureID")
_TYPE1_STEP = (
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "Modality",
    "ScheduledProcedureStepID",
)


@dataclass(frozen=True)
class FileItem:
    """One step of a worklist file, ready for :meth:`Worklist.put`."""

    attrs: Attrs
    status: str
    charset: str


def _decode_all(ds: Dataset) -> None:
    """Decode every text value now, so that bytes foreign to the character set are found here."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _decode_all(item)


def read_file(path: Path) -> tuple[list[FileItem], list[str]]:
    """Read one worklist file: its steps, and what it lacks (one line each).

    Raises
    ------
    WorklistError
        When the file is not DICOM, cannot be decoded in its character set, or has no
        Scheduled Procedure Step Sequence item.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # pydicom's guesses about a foreign file are a refusal here
            ds = dcmread(path, force=True)
            if not any(elem.keyword for elem in ds):  # force=True reads any bytes as some unknown elements
                raise ValueError("no DICOM attribute in it")
            if SPS_SEQUENCE not in ds:
                raise IncompleteItem(f"{path}: no Scheduled Procedure Step Sequence", SPS_SEQUENCE)
    except WorklistError:
        raise
    except Exception as exc:
        raise WorklistError(f"{path}: not a DICOM worklist file ({exc})") from exc
    try:
        with warnings.catch_warnings():
            # pydicom warns (and replaces characters) on bytes its character set cannot decode: refuse instead.
            warnings.simplefilter("error")
            _decode_all(ds)
            attrs = from_dataset(ds)
    except Exception as exc:
        raise InvalidItem(f"{path}: broken encoding ({exc})", "SpecificCharacterSet") from exc
    charset = ds.get("SpecificCharacterSet", "")
    charset = "\\".join(charset) if isinstance(charset, MultiValue | list) else str(charset or "")
    steps = attrs.pop(SPS_SEQUENCE, None) or []
    steps = [s for s in steps if s]
    if not steps:
        raise IncompleteItem(f"{path}: no Scheduled Procedure Step Sequence item", SPS_SEQUENCE)
    notes: list[str] = []
    for keyword in TYPE2_SEQ:
        if keyword not in attrs:
            attrs[keyword] = []  # wlmscpfs: "Added missing type 2 sequence attribute"
            notes.append(f"{keyword} absent (answered empty)")
    missing = [k for k in _TYPE1_TOP if not attrs.get(k)]
    items = []
    for step in steps:
        step = dict(step)
        missing += [
            f"{SPS_SEQUENCE} > {k}" for k in _TYPE1_STEP if not step.get(k) and f"{SPS_SEQUENCE} > {k}" not in missing
        ]
        raw_status = str(step.get("ScheduledProcedureStepStatus", "") or "").strip().upper()
        if not raw_status:
            step["_no_status"] = True  # answered as the file has it (absent), not as SCHEDULED
        elif raw_status not in SpsStatus.__members__:
            notes.append(f"Scheduled Procedure Step Status {raw_status!r} is not a defined term (taken as SCHEDULED)")
        step.pop("ScheduledProcedureStepStatus", None)
        status = raw_status if raw_status in SpsStatus.__members__ else SpsStatus.SCHEDULED.value
        items.append(FileItem({**attrs, SPS_SEQUENCE: [step]}, status, charset))
    if missing:
        notes.append(
            f"no value for {', '.join(missing)} (answered zero length; DCMTK-based modalities may ignore the item)"
        )
    return items, [f"{path}: {n}" for n in notes]


def import_file(
    worklist: Worklist, path: Path, source: str = "file", warnings_out: list[str] | None = None
) -> list[ItemKey]:
    """Add (or replace) the items of one DICOM worklist file.

    A file with several scheduled procedure steps becomes one item per step.
    The status is the file's Scheduled Procedure Step Status, else SCHEDULED.

    Parameters
    ----------
    worklist : Worklist
        Where the items go.
    path : Path
        The file.
    source : str
        Recorded with each item (``file``, or ``folder:<name>`` for a watched folder).
    warnings_out : list of str, optional
        Receives one line per gap of the file (also logged as warnings).

    Raises
    ------
    WorklistError
        When the file is refused (see :func:`read_file`); nothing of it is stored.
    """
    items, notes = read_file(path)
    for note in notes:
        LOGGER.warning("worklist file %s", note)
    if warnings_out is not None:
        warnings_out.extend(notes)
    keys = []
    with worklist.db.transaction() as conn:
        if source.startswith("folder:"):
            conn.execute(f"DELETE FROM {WORKLIST} WHERE source = ?", (source,))
        for n, item in enumerate(items):
            keys.append(
                worklist.put_as_is(conn, item.attrs, item.status, item.charset, source, fallback=f"{path.name}#{n + 1}")
            )
    return keys


def _wl_files(path: Path) -> Iterator[Path]:
    return iter(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".wl"))


def import_files(
    worklist: Worklist, paths: Iterable[Path], warnings_out: list[str] | None = None
) -> tuple[list[ItemKey], list[tuple[Path, str]]]:
    """Import every ``.wl`` file under the given files and folders (any depth).

    Parameters
    ----------
    worklist : Worklist
        Where the items go.
    paths : iterable of Path
        Files and folders.
    warnings_out : list of str, optional
        Receives the gaps of the files taken (see :func:`import_file`).

    Returns
    -------
    (list of ItemKey, list of (Path, str))
        The items stored, and the files refused with the reason.
    """
    stored: list[ItemKey] = []
    failed: list[tuple[Path, str]] = []
    for path in paths:
        files = _wl_files(path) if path.is_dir() else iter([path])
        for file in files:
            if not file.exists():
                failed.append((file, "does not exist"))
                continue
            try:
                stored += import_file(worklist, file, warnings_out=warnings_out)
            except WorklistError as exc:
                failed.append((file, str(exc).removeprefix(f"{file}: ")))
    return stored, failed


class FolderWatcher:
    """Keeps the worklist in step with a folder of ``.wl`` files (``[worklist] folder``).

    Every ``poll`` seconds the folder (any depth) is listed; a new or changed file replaces
    the items it gave before, a removed file takes its items with it, a refused file gives
    none (one warning per change). The items are recorded with source ``folder:<relative path>``.

    Parameters
    ----------
    worklist : Worklist
        Where the items go.
    folder : Path
        The folder watched.
    poll : float
        Seconds between two looks.
    """

    def __init__(self, worklist: Worklist, folder: Path, poll: float = 2.0) -> None:
        self.worklist = worklist
        self.folder = folder
        self.poll = poll
        self._seen: dict[str, tuple[int, int]] = {}
        self._scanned = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _source(self, rel: str) -> str:
        return f"folder:{rel}"

    def scan(self) -> int:
        """Look at the folder once and apply what changed; return how many files were (re)read or dropped."""
        now: dict[str, tuple[int, int]] = {}
        if self.folder.is_dir():
            for file in _wl_files(self.folder):
                try:
                    st = file.stat()
                except OSError:
                    continue
                now[file.relative_to(self.folder).as_posix()] = (st.st_mtime_ns, st.st_size)
        changed = 0
        if not self._scanned:
            self._scanned = True
            # Items of files removed while the appliance was stopped.
            with self.worklist.db.transaction() as conn:
                rows = conn.execute(f"SELECT DISTINCT source FROM {WORKLIST} WHERE source LIKE 'folder:%'")
                for (source,) in list(rows):
                    if source[len("folder:") :] not in now:
                        conn.execute(f"DELETE FROM {WORKLIST} WHERE source = ?", (source,))
                        changed += 1
        for rel in sorted(set(self._seen) - set(now)):
            with self.worklist.db.transaction() as conn:
                conn.execute(f"DELETE FROM {WORKLIST} WHERE source = ?", (self._source(rel),))
            LOGGER.info("worklist folder: %s removed, its items too", rel)
            changed += 1
        for rel, stamp in sorted(now.items()):
            if self._seen.get(rel) == stamp:
                continue
            changed += 1
            try:
                keys = import_file(self.worklist, self.folder / rel, self._source(rel))
                LOGGER.info("worklist folder: %s read, %d item(s)", rel, len(keys))
            except WorklistError as exc:
                LOGGER.warning("worklist folder: file refused, its items removed: %s", exc)
                with self.worklist.db.transaction() as conn:
                    conn.execute(f"DELETE FROM {WORKLIST} WHERE source = ?", (self._source(rel),))
        self._seen = now
        return changed

    def start(self) -> None:
        """Read the folder now, then watch it in a background thread."""
        self.scan()
        self._thread = threading.Thread(target=self._run, name="worklist-folder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.scan()
            except Exception:  # a database hiccup must not end the watching
                LOGGER.exception("worklist folder %s could not be read", self.folder)

    def stop(self) -> None:
        """Stop watching (the items stay)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def export_file(worklist: Worklist, key: ItemKey, path: Path) -> None:
    """Write one item, with its status, as a DICOM worklist file.

    Raises
    ------
    NotFound
        When the item does not exist.
    """
    found = worklist.item(key)
    if found is None:
        raise NotFound(f"no worklist item {key}")
    attrs, status, charset = found
    step: dict[str, Any] = step_of(attrs)
    step.pop("_no_status", None)
    step["ScheduledProcedureStepStatus"] = status
    ds = to_dataset(attrs)
    if charset:
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(WORKLIST_FILE_CLASS)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(new_uid())
    ds.save_as(path, enforce_file_format=True)
