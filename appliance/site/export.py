"""Study and series downloads: a zip holding a DICOM file-set with DICOMDIR, or the pictures as JPEG files.

The DICOM zip is a file-set as on a patient CD, written by the disc's file-set writer
(:func:`appliance.discs.fileset.write_fileset`: ``DICOMDIR`` at the top, the instances under 8-character upper-case
File IDs, missing record values made up as ``dcmmkdir --invent`` does), the instances either as received or
re-encoded JPEG Lossless (``[web] zip_compression``, by :mod:`appliance.codecs`), and a ``README.TXT`` telling a
lay person what the files are. Files no DICOMDIR record can be made for (not DICOM at all) go to an ``OTHER``
folder. The JPEG zip holds one picture per instance (first frame) in a folder per series.

Zips are written to a temporary file in ``<data_dir>/cache/zips`` and handed to the caller as an open file
that is already unlinked, so nothing is left behind even if the download is cut. At most
``[web] max_zip_builds`` are built at once: a build reads and (with compression) encodes every instance,
which is the heaviest thing the web site does.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pydicom.uid import UID, JPEGLosslessSV1

from appliance import codecs
from appliance.core import IMPLEMENTATION_VERSION
from appliance.discs.fileset import StagedInstance, identity, stage_instance, unlistable, write_fileset
from appliance.errors import ApplianceError, CodecError
from appliance.site.imaging import VIEW_SIZE, picture
from appliance.validate import check_file

LOGGER = logging.getLogger(__name__)

#: File-set ID of a download's DICOMDIR.
FILESET_ID = "PATIENTDISC"

README = """\
These are medical images in DICOM format, the format used by hospitals.

* DICOMDIR lists every image; open it (or this whole folder) with a DICOM viewer,
  for example a free one such as Weasis, Horos, MicroDicom or the viewer of your doctor.
* The images are in the folders beside DICOMDIR. Their names are short codes, as on a CD.
* To see the pictures without a DICOM viewer, download the JPEG zip from the same page.

Keep these files private: they contain your name and your medical images.
{extra}"""


class Busy(ApplianceError):
    """Too many downloads are being prepared; try again shortly."""


@dataclass(frozen=True)
class ZipItem:
    """One instance to put in a zip."""

    file: Path
    series_label: str
    number: int


def _safe(text: str, fallback: str) -> str:
    """A file-name-safe form of ``text`` (ASCII letters, digits, ``-`` and ``_``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:40]
    return cleaned or fallback


class Exporter:
    """Builds download zips.

    Parameters
    ----------
    work_dir : Path
        Folder of the temporary zips and staging folders (emptied at start).
    compression : {"none", "jpeg-lossless"}
        How instances go into the DICOM zip.
    max_builds : int
        Zips built at the same time.
    wait : float
        Seconds a request waits for a free build slot before :class:`Busy` is raised.
    """

    def __init__(self, work_dir: Path, compression: str = "none", max_builds: int = 2, wait: float = 30.0) -> None:
        self.work_dir = work_dir
        self.compression = compression
        self.wait = wait
        self._slots = threading.BoundedSemaphore(max_builds)
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True, exist_ok=True)

    def _slot(self) -> None:
        if not self._slots.acquire(timeout=self.wait):
            raise Busy("too many downloads are being prepared at the moment; please try again in a minute")

    def _temp(self) -> IO[bytes]:
        # Opened, then unlinked at once: the caller streams it and closing it frees the space.
        handle = tempfile.NamedTemporaryFile(dir=self.work_dir, suffix=".zip", delete=False)  # noqa: SIM115
        Path(handle.name).unlink()
        return handle

    def dicom_zip(self, items: Sequence[ZipItem]) -> IO[bytes]:
        """A zip of a DICOM file-set with DICOMDIR and README.TXT, rewound and ready to read.

        Raises
        ------
        Busy
            When no build slot frees up in time.
        """
        self._slot()
        try:
            out = self._temp()
            with tempfile.TemporaryDirectory(dir=self.work_dir) as staging:
                written = Path(staging) / "fileset"
                left_out = self._write_fileset(items, Path(staging) / "pool", written)
                extra = (
                    "\nThe images are compressed without loss (JPEG Lossless).\n"
                    if self.compression == "jpeg-lossless"
                    else ""
                )
                if left_out:
                    extra += "\nThe OTHER folder holds files that DICOMDIR cannot list; open them one by one.\n"
                with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                    zf.writestr("README.TXT", README.format(extra=extra).replace("\n", "\r\n"))
                    for path in sorted(written.rglob("*")):
                        if path.is_file():
                            zf.write(path, path.relative_to(written).as_posix())
                    for n, path in enumerate(left_out, start=1):
                        zf.write(path, f"OTHER/FILE{n:04d}")
            out.seek(0)
            return out
        finally:
            self._slots.release()

    def _write_fileset(self, items: Sequence[ZipItem], pool: Path, root: Path) -> list[Path]:
        """Write the file-set of ``items`` under ``root`` as a disc's (:func:`appliance.discs.fileset.write_fileset`).

        Returns the files that could not go in it (kept in the zip all the same): unreadable ones, and any that
        no DICOMDIR record can be made for even with stand-in values.
        """
        pool.mkdir()
        staged: list[StagedInstance] = []
        source: dict[Path, Path] = {}
        left_out: list[Path] = []
        for n, item in enumerate(items):
            try:
                staged.append(self._stage(item.file, pool / f"{n:08d}"))
                source[staged[-1].path] = item.file
            except Exception as exc:  # an unreadable file must not sink the whole download
                LOGGER.warning("instance %s is outside the DICOMDIR of the download: %s", item.file.name, exc)
                left_out.append(item.file)
        try:
            write_fileset(root, FILESET_ID, staged)
        except OSError:
            raise
        except Exception:  # rare: find the instances no record can be made for, then write the rest
            bad = unlistable(staged)
            for inst in bad:
                LOGGER.warning(
                    "instance %s is outside the DICOMDIR of the download: no directory record can be made for it",
                    source[inst.path].name,
                )
            left_out += [source[inst.path] for inst in bad]
            write_fileset(root, FILESET_ID, [inst for inst in staged if inst not in bad])
        return left_out

    def _stage(self, file: Path, target: Path) -> StagedInstance:
        """Put one instance at ``target``: JPEG Lossless when so configured and possible, else as received."""
        check_file(file)  # before any pydicom read: see appliance.validate.check_file
        sop_uid, _, transfer_syntax = identity(file)
        if self.compression == "jpeg-lossless" and not UID(transfer_syntax).is_compressed:
            try:
                data = codecs.recode_file(codecs.read_stored(file), JPEGLosslessSV1, IMPLEMENTATION_VERSION)
            except CodecError as exc:  # e.g. 32-bit or YBR_FULL_422 pixels: the file goes as received
                LOGGER.info("instance %s goes into the download as received: %s", sop_uid, exc)
            else:
                target.write_bytes(data)
                return StagedInstance(sop_uid, target, JPEGLosslessSV1, len(data), True)
        return stage_instance(file, target, sop_uid, transfer_syntax, None)

    def jpeg_zip(self, items: Sequence[ZipItem]) -> IO[bytes]:
        """A zip of one JPEG per instance (first frame) in a folder per series, rewound and ready to read.

        Raises
        ------
        Busy
            When no build slot frees up in time.
        """
        self._slot()
        try:
            out = self._temp()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
                zf.writestr(
                    "README.TXT",
                    "Pictures of your images, one JPEG per image, a folder per series.\r\n"
                    "They are for looking at only; doctors need the DICOM download.\r\n",
                )
                for item in items:
                    data, _ = picture(item.file, VIEW_SIZE)
                    zf.writestr(f"{item.series_label}/IMG{item.number:04d}.jpg", data)
            out.seek(0)
            return out
        finally:
            self._slots.release()


def series_label(number: str, description: str, index: int) -> str:
    """Folder name of a series in the JPEG zip: ``S01_CT_series_1``."""
    digits = int(number) if number.strip().isdigit() else index
    return f"S{digits:02d}_{_safe(description, 'series')}"


def zip_name(kind: str, study_date: str, accession: str, suffix: str = "") -> str:
    """Download file name without the patient's name: ``study-20240105-A100-dicom.zip``."""
    parts = ["study", _safe(study_date, "nodate")]
    if accession.strip():
        parts.append(_safe(accession, ""))
    if suffix:
        parts.append(suffix)
    parts.append(kind)
    return "-".join(p for p in parts if p) + ".zip"
