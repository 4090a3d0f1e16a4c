"""DICOM worklist files: ``.wl`` files as DCMTK's ``wlmscpfs`` (and Orthanc's worklist plugin) keep them.

:func:`import_files` adds their items to the worklist, where the MWL SCP answers them exactly as items made by
HL7 orders; :func:`export_file` writes an item back as such a file (used by ``bench/hl7`` to give Orthanc
the same items).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian

from appliance.errors import IncompleteItem, NotFound, WorklistError
from appliance.worklist.store import SPS_SEQUENCE, ItemKey, Worklist, from_dataset, new_uid, step_of, to_dataset

#: DCMTK's private SOP class of worklist files.
WORKLIST_FILE_CLASS = "1.2.276.0.7230010.3.1.0.1"


def import_file(worklist: Worklist, path: Path) -> list[ItemKey]:
    """Add (or replace) the items of one DICOM worklist file.

    A file with several scheduled procedure steps becomes one item per step.
    The status is the file's Scheduled Procedure Step Status, else SCHEDULED.

    Raises
    ------
    WorklistError
        When the file is not DICOM or an item would be incomplete; nothing of
        the file is stored.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a foreign file is reported below, not warned about
            ds = dcmread(path, force=True)
            attrs = from_dataset(ds)
    except Exception as exc:
        raise WorklistError(f"{path}: not a DICOM worklist file ({exc})") from exc
    charset = ds.get("SpecificCharacterSet", "")
    charset = "\\".join(charset) if isinstance(charset, MultiValue | list) else str(charset or "")
    steps = attrs.pop(SPS_SEQUENCE, None) or []
    if not steps:
        raise IncompleteItem(f"{path}: no Scheduled Procedure Step Sequence", SPS_SEQUENCE)
    keys = []
    with worklist.db.transaction() as conn:
        for step in steps:
            step = dict(step)
            status = str(step.pop("ScheduledProcedureStepStatus", "") or "SCHEDULED").strip().upper()
            try:
                keys.append(worklist.put(conn, {**attrs, SPS_SEQUENCE: [step]}, status, charset, "file"))
            except WorklistError as exc:
                raise type(exc)(f"{path}: {exc}", exc.attribute) from exc
    return keys


def import_files(worklist: Worklist, paths: Iterable[Path]) -> tuple[list[ItemKey], list[tuple[Path, str]]]:
    """Import every ``.wl`` file under the given files and folders (any depth).

    Returns
    -------
    (list of ItemKey, list of (Path, str))
        The items stored, and the files refused with the reason.
    """
    stored: list[ItemKey] = []
    failed: list[tuple[Path, str]] = []
    for path in paths:
        files: Iterator[Path] = iter(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".wl")) \
            if path.is_dir() else iter([path])
        for file in files:
            if not file.exists():
                failed.append((file, "does not exist"))
                continue
            try:
                stored += import_file(worklist, file)
            except WorklistError as exc:
                failed.append((file, str(exc)))
    return stored, failed


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
    step_of(attrs)["ScheduledProcedureStepStatus"] = status
    ds = to_dataset(attrs)
    if charset:
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(WORKLIST_FILE_CLASS)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(new_uid())
    ds.save_as(path, enforce_file_format=True)
