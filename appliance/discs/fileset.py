"""DICOM File-sets for discs: transfer syntaxes per media profile, transcoding, DICOMDIR, validation.

A disc's DICOM part is written in two steps. Each instance is first *staged* in a transfer syntax its PS3.11
profile allows: a file already in one is hard-linked from the store (the store never rewrites a file, so the
link is safe and costs no space or time), any other is transcoded losslessly to Explicit VR Little Endian.
Then :mod:`appliance.discs.dicomdir` lays out the File IDs (``PT000000/ST000000/SE000000/IM000000``) and writes the
DICOMDIR from each instance's header with pydicom's record definitions, and the staged files are moved under those
IDs. :func:`validate_fileset` then reads the result back the way a receiving workstation would: with DCMTK's
dcmdump and pydicom's :class:`~pydicom.fileset.FileSet`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
)

import appliance.codecs  # noqa: F401  (sets pydicom's decoder order: pylibjpeg first, GDCM last)
from appliance.budget import Budget, BudgetExceeded
from appliance.discs.dicomdir import (
    SOP_CLASS,
    SOP_INSTANCE,
    TRANSFER_SYNTAX,
    Entry,
    build_dicomdir,
    read_fields,
    write_dicomdir,
)
from appliance.errors import AuthoringError, InvalidDataset
from appliance.validate import check_file

LOGGER = logging.getLogger(__name__)

_JPEG = frozenset({ExplicitVRLittleEndian, JPEGLosslessSV1, JPEGBaseline8Bit, JPEGExtended12Bit})
_J2K = frozenset({ExplicitVRLittleEndian, JPEG2000Lossless, JPEG2000})
_GENERAL = frozenset({ExplicitVRLittleEndian})

#: Transfer syntaxes each PS3.11 profile allows on the medium (as DCMTK's dcmmkdir enforces them).
PROFILE_SYNTAXES: Mapping[str, frozenset[str]] = {
    "STD-GEN-CD": _GENERAL,
    "STD-GEN-DVD-RAM": _GENERAL,
    "STD-GEN-BD": _GENERAL,
    "STD-GEN-DVD-JPEG": _JPEG,
    "STD-GEN-BD-JPEG": _JPEG,
    "STD-GEN-USB-JPEG": _JPEG,
    "STD-GEN-DVD-J2K": _J2K,
    "STD-GEN-BD-J2K": _J2K,
    "STD-GEN-USB-J2K": _J2K,
}
_FILE_ID = re.compile(r"^[A-Z0-9_]{1,8}$")
_TAG_IN_MESSAGE = re.compile(r"\(([0-9A-Fa-f]{4}),\s*([0-9A-Fa-f]{4})\)")
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def allowed_syntaxes(profile: str) -> frozenset[str]:
    """Transfer syntaxes a profile allows; unknown profiles raise :class:`KeyError`."""
    return PROFILE_SYNTAXES[profile]


@dataclass(frozen=True)
class StagedInstance:
    """An instance ready for a disc: its staged file and the transfer syntax that file is in."""

    sop_uid: str
    path: Path
    transfer_syntax: str
    size: int
    transcoded: bool


def stage_instance(
    source: Path,
    target: Path,
    sop_uid: str,
    transfer_syntax: str,
    allowed: frozenset[str] | None,
    budget: Budget | None = None,
) -> StagedInstance:
    """Put one stored instance at ``target`` in an allowed transfer syntax (``allowed`` None: as it is).

    With a ``budget``, the conversion runs in its worker process, within its memory and time (a few
    times the file's size more memory, and a minute more per 100 MB): an instance that needs more
    fails with the reason instead of exhausting the appliance.

    Raises
    ------
    AuthoringError
        The stored file is missing, fails :func:`appliance.validate.check_file`, or cannot be decoded for
        transcoding.
    BudgetExceeded
        The conversion needed more memory or time than ``budget`` allows.
    OSError
        The staging disk failed (the caller maps a full disk to a clear job error).
    """
    if not source.is_file():
        raise AuthoringError(f"instance {sop_uid} is no longer in the store ({source} is missing)")
    try:
        # Checked before pydicom reads it whole (here or in the DICOMDIR): nesting too deep for pydicom's
        # recursive reader fails this instance's job with the reason instead of exhausting memory.
        check_file(source)
    except InvalidDataset as exc:
        raise AuthoringError(f"instance {sop_uid} cannot be put on a disc: {exc}") from exc
    if allowed is None or transfer_syntax in allowed:
        _link_or_copy(source, target)
        return StagedInstance(sop_uid, target, transfer_syntax, target.stat().st_size, False)
    try:
        if budget is None:
            transcode(source, target)
        else:
            size_mb = source.stat().st_size // (1024 * 1024)
            budget.run(
                transcode,
                source,
                target,
                what=f"converting instance {sop_uid}",
                extra_mb=8 * size_mb,
                seconds=budget.seconds + 0.6 * size_mb,
            )
    except (OSError, BudgetExceeded):
        raise
    except Exception as exc:  # codecs raise many types on data they cannot decode
        raise AuthoringError(
            f"instance {sop_uid} cannot be converted from transfer syntax {transfer_syntax} "
            f"to Explicit VR Little Endian: {exc}"
        ) from exc
    return StagedInstance(sop_uid, target, ExplicitVRLittleEndian, target.stat().st_size, True)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not supported: copy instead
        shutil.copyfile(source, target)


def transcode(source: Path, target: Path) -> None:
    """Rewrite a Part 10 file in Explicit VR Little Endian, keeping its SOP Instance UID (a lossless change).

    Compressed pixel data is decoded (pylibjpeg, pydicom's RLE); a big endian file has its OW/OF/OL/OD/OV
    values byte-swapped; implicit VR and deflated files are simply re-encoded.
    """
    ds = dcmread(source)
    ts = UID(ds.file_meta.TransferSyntaxUID)
    if ts.is_compressed:
        ds.decompress(generate_instance_uid=False)
    elif not ts.is_little_endian:
        _swap_to_little_endian(ds)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # dcmwrite, not save_as: save_as refuses to change the byte order, which _swap_to_little_endian has done.
    dcmwrite(target, ds, enforce_file_format=True)


def _swap_to_little_endian(ds: Dataset) -> None:
    for elem in ds.iterall():
        width = _SWAP_WIDTH.get(str(elem.VR))
        if width and isinstance(elem.value, bytes | bytearray) and len(elem.value) % width == 0:
            elem.value = np.frombuffer(elem.value, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def write_fileset(root: Path, fileset_id: str, staged: Sequence[StagedInstance]) -> dict[str, Path]:
    """Write a File-set of the staged instances under ``root`` (which must not hold one yet).

    The DICOMDIR is made from each instance's header (:mod:`appliance.discs.dicomdir`, linear in the number of
    instances); the staged files are then moved under the File IDs it chose, so pixel data is never read or copied.

    Returns
    -------
    dict of str to Path
        SOP Instance UID -> the file's place in the File-set.

    Raises
    ------
    AuthoringError
        An instance lacks what a directory record needs and no value can be supplied.
    """
    invented: dict[str, int] = {}
    entries = [Entry(item.path, item.transfer_syntax) for item in staged]
    root.mkdir(parents=True, exist_ok=True)
    try:
        file_ids = write_dicomdir(root, fileset_id, entries, _supplier(invented))
    except ValueError as exc:
        raise AuthoringError(f"the instances cannot be listed in a DICOMDIR: {exc}") from exc
    if invented:
        LOGGER.warning(
            "DICOMDIR of %s: made up missing record values (%s), as dcmmkdir --invent does",
            fileset_id,
            ", ".join(f"{k} x{n}" for k, n in sorted(invented.items())),
        )
    placed: dict[str, Path] = {}
    folders: set[Path] = set()
    for item, components in zip(staged, file_ids, strict=True):
        target = root.joinpath(*components)
        if target.parent not in folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            folders.add(target.parent)
        os.replace(item.path, target)
        placed[item.sop_uid] = target
    return placed


def unlistable(staged: Sequence[StagedInstance]) -> list[StagedInstance]:
    """The instances that cannot be listed in a DICOMDIR even with stand-in values, each tried on its own.

    Only worth calling after :func:`write_fileset` failed: it reads every header again.
    """
    bad = []
    for item in staged:
        try:
            build_dicomdir("CHECK", [Entry(item.path, item.transfer_syntax)], _supplier({}))
        except Exception:  # pydicom's record makers raise more than ValueError on odd headers
            bad.append(item)
    return bad


def _supplier(invented: dict[str, int]) -> Callable[[Dataset, ValueError], bool]:
    """The ``fix`` of :func:`~appliance.discs.dicomdir.build_dicomdir`: stand-in values, counted in ``invented``."""

    def fix(ds: Dataset, exc: ValueError) -> bool:
        return _supply_missing(ds, str(exc), invented)

    return fix


def _supply_missing(ds: Dataset, message: str, invented: dict[str, int]) -> bool:
    match = _TAG_IN_MESSAGE.search(message)
    if not match:
        return False
    keyword = keyword_for_tag(int(match.group(1) + match.group(2), 16))
    if not keyword or (keyword in ds and ds[keyword].VM != 0):
        return False
    value = _invent(ds, keyword)
    if value is None:
        return False
    setattr(ds, keyword, value)
    invented[keyword] = invented.get(keyword, 0) + 1
    return True


def _invent(ds: Dataset, keyword: str) -> str | None:
    """A stand-in record value, the same for every instance of a study or series."""
    if keyword == "PatientID":
        return "UNKNOWN"
    if keyword == "Modality":
        return "OT"
    vr = dictionary_VR(keyword)
    if vr == "DA":
        for other in ("StudyDate", "SeriesDate", "ContentDate", "AcquisitionDate"):
            if ds.get(other):
                return str(ds.get(other))
        return dt.date.today().strftime("%Y%m%d")
    if vr == "TM":
        return str(ds.get("SeriesTime") or "000000")
    if vr in ("IS", "DS"):
        return "1"
    if vr in ("CS", "SH", "LO", "ST", "LT", "UT", "PN"):
        return "UNKNOWN"
    return None


def validate_fileset(root: Path, allowed: frozenset[str], dcmdump: str | None = None) -> int:
    """Check a written File-set as a receiving workstation reads it.

    ``dcmdump`` (DCMTK) must read the DICOMDIR without error; every record that references a file must name a
    conformant File ID (at most 8 components of at most 8 characters ``A-Z 0-9 _``), the file must exist, and
    its SOP Class, SOP Instance and transfer syntax must match the record and the profile.

    Parameters
    ----------
    root : Path
        The File-set's root folder (holding ``DICOMDIR``).
    allowed : frozenset of str
        Transfer syntaxes of the media profile.
    dcmdump : str, optional
        Path of DCMTK's dcmdump; the check is skipped when None.

    Returns
    -------
    int
        Number of instances checked.

    Raises
    ------
    AuthoringError
        Listing the first problems found.
    """
    dicomdir = root / "DICOMDIR"
    problems: list[str] = []
    if dcmdump:
        proc = subprocess.run(
            [dcmdump, "-q", str(dicomdir)], capture_output=True, text=True, errors="replace", timeout=300
        )
        if proc.returncode != 0 or "E:" in proc.stderr:
            problems.append(f"dcmdump cannot read the DICOMDIR: {proc.stderr.strip()[:300] or proc.returncode}")
    try:
        dicomdir_ds = dcmread(dicomdir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a missing file is reported below, once, with its File ID
            FileSet(dicomdir_ds)  # the record tree and its offsets must load
    except Exception as exc:
        raise AuthoringError(f"DICOMDIR in {root} cannot be read: {exc}") from exc
    count = 0
    for record in dicomdir_ds.get("DirectoryRecordSequence", []):
        if "ReferencedFileID" not in record:
            continue
        count += 1
        value = record.ReferencedFileID
        components = [str(value)] if isinstance(value, str) else [str(c) for c in value]
        file_id = "\\".join(components)
        if len(components) > 8 or not all(_FILE_ID.match(c) for c in components):
            problems.append(f"File ID {file_id} is not a PS3.10 File ID")
            continue
        try:
            found = identity(root.joinpath(*components))
        except FileNotFoundError:
            problems.append(f"{file_id}: the file is missing")
            continue
        except Exception as exc:
            problems.append(f"{file_id}: {exc}")
            continue
        record_ts = str(record.get("ReferencedTransferSyntaxUIDInFile", ""))
        checks = {
            "SOP Instance UID": (found[0], str(record.get("ReferencedSOPInstanceUIDInFile", ""))),
            "SOP Class UID": (found[1], str(record.get("ReferencedSOPClassUIDInFile", ""))),
            "transfer syntax": (found[2], record_ts),
        }
        for what, (in_file, in_record) in checks.items():
            if in_file != in_record:
                problems.append(f"{file_id}: {what} {in_file} differs from the DICOMDIR's {in_record}")
        if record_ts not in allowed:
            problems.append(f"{file_id}: transfer syntax {record_ts} is not allowed by the media profile")
        if len(problems) > 10:
            break
    if problems:
        raise AuthoringError(f"File-set in {root} is not valid: " + "; ".join(problems[:10]))
    return count


def identity(path: Path) -> tuple[str, str, str]:
    """SOP Instance UID, SOP Class UID and transfer syntax of a file (a raw scan, else pydicom)."""
    fields = read_fields(path)
    if fields and SOP_INSTANCE in fields and SOP_CLASS in fields:
        uid, sop_class, ts = (
            fields[t].rstrip(b"\x00 ").decode("ascii", "replace") for t in (SOP_INSTANCE, SOP_CLASS, TRANSFER_SYNTAX)
        )
        return uid, sop_class, ts
    header = dcmread(path, stop_before_pixels=True)
    return str(header.SOPInstanceUID), str(header.SOPClassUID), str(header.file_meta.TransferSyntaxUID)


def find_dcmdump() -> str | None:
    """DCMTK's dcmdump, if installed (pynetdicom installs same-named scripts elsewhere, so look in system folders)."""
    return shutil.which("dcmdump", path="/usr/bin:/usr/local/bin:/bin")
