"""The download zip's file-set is written by the disc's file-set writer and read by DCMTK."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLosslessSV1

from appliance.site.export import Exporter, ZipItem

import dicomdata
from conftest import dcmtk


@pytest.mark.parametrize("compression", ["none", "jpeg-lossless"])
def test_download_dicomdir_is_read_by_dcmdump_and_lists_every_instance(tmp_path: Path, compression: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    instances = dicomdata.study("P1", "Doe^Jane", ("CT", "MR"), 3) + dicomdata.study("P2", "Roe^Rick", ("CT",), 2)
    paths = [inst.write(src) for inst in instances]
    implicit = instances[0].dataset()  # a sender's Implicit VR file goes in as received
    implicit.SOPInstanceUID = dicomdata.uid()
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    implicit.save_as(src / "implicit.dcm", enforce_file_format=True)
    lacking = instances[1].dataset()  # made listable with stand-in values, as on a disc
    lacking.SOPInstanceUID = dicomdata.uid()
    del lacking.InstanceNumber, lacking.SeriesNumber
    lacking.save_as(src / "lacking.dcm", enforce_file_format=True)
    paths += [src / "implicit.dcm", src / "lacking.dcm"]
    expected = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}
    items = [ZipItem(p, "S01", n) for n, p in enumerate(paths, start=1)]
    with Exporter(tmp_path / "zips", compression, 1).dicom_zip(items) as handle, zipfile.ZipFile(handle) as zf:
        assert not any(name.startswith("OTHER/") for name in zf.namelist())
        zf.extractall(tmp_path / "out")
    dump = dcmtk(
        "dcmdump",
        "-q",
        "-Un",
        "+P",
        "0004,1500",
        "+P",
        "0004,1511",
        "+P",
        "0004,1512",
        str(tmp_path / "out" / "DICOMDIR"),
        check=True,
    )
    assert "E:" not in dump.stderr
    listed = re.findall(r"\(0004,1511\) UI \[([0-9.]+)\]", dump.stdout)
    assert sorted(listed) == sorted(expected)
    file_ids = re.findall(r"\(0004,1500\) CS \[([^\]]+)\]", dump.stdout)
    assert len(file_ids) == len(expected)
    for file_id in file_ids:
        assert (tmp_path / "out").joinpath(*file_id.split("\\")).is_file()
    syntaxes = set(re.findall(r"\(0004,1512\) UI \[([0-9.]+)\]", dump.stdout))
    if compression == "jpeg-lossless":
        assert JPEGLosslessSV1 in syntaxes
    else:
        assert syntaxes == {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
    assert not any((tmp_path / "zips").iterdir())  # nothing left behind
