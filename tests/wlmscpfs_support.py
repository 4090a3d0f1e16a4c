"""DCMTK ``wlmscpfs`` as a reference worklist server for tests, and worklist files to feed it.

:class:`Wlmscpfs` serves a folder of ``.wl`` files the way a site runs it (``-dfp`` folder with one
sub-folder per called AE title and a ``lockfile``); :func:`write_wl` writes an item as such a file.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from conftest import HOST, free_port

WORKLIST_FILE_CLASS = "1.2.276.0.7230010.3.1.0.1"


def write_wl(path: Path, ds: Dataset) -> Path:
    """Write a data set as a DCMTK worklist file (explicit VR little endian, DCMTK's worklist SOP class)."""
    ds = Dataset(ds)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(WORKLIST_FILE_CLASS)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(f"2.25.{abs(hash(path.name)) + 1}")
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


class Wlmscpfs:
    """A running ``wlmscpfs`` on a free port, serving ``files`` under called AE title ``aet``.

    Parameters
    ----------
    root : Path
        A folder of its own (the ``-dfp`` folder is made in it).
    files : list of Path
        The ``.wl`` files to serve (copied).
    aet : str
        The called AE title queries must use.
    options : str
        Extra command-line options (e.g. ``-dfr`` to serve incomplete files too).
    """

    def __init__(self, root: Path, files: list[Path], aet: str = "WLMSCPFS", *options: str) -> None:
        exe = shutil.which("wlmscpfs", path="/usr/bin:/bin")
        assert exe, "DCMTK wlmscpfs is not installed (scripts/test.sh installs dcmtk)"
        self.aet = aet
        self.port = free_port()
        folder = root / "wlmscpfs" / aet
        folder.mkdir(parents=True)
        for file in files:
            shutil.copy(file, folder / file.name)
        (folder / "lockfile").touch()
        self.log = (root / "wlmscpfs.log").open("w")
        # -csk: answer with the file's Specific Character Set (the default answers with none).
        args: list[Any] = [exe, "-dfp", str(folder.parent), "-csk", *options, str(self.port)]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            assert self.proc.poll() is None, f"wlmscpfs ended: {(root / 'wlmscpfs.log').read_text()}"
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "wlmscpfs does not listen"
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
