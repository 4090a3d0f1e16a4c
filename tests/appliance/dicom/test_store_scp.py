"""C-STORE SCP with DCMTK storescu and pynetdicom as real peers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

import dicomdata
from conftest import HOST, Node, dcmtk


def stored_files(node: Node) -> list[Path]:
    return [node.app.store_area.path(p) for p in node.app.store_area.iter_files()]


def test_storescu_study_is_stored_and_indexed(node: Node, tmp_path: Path) -> None:
    items = dicomdata.study("PID9", "ROE^RICHARD", ("CT", "MR"), 3)
    folder = tmp_path / "in"
    folder.mkdir()
    for inst in items:
        inst.write(folder)
    proc = dcmtk("storescu", "-aec", node.aet, "+sd", HOST, str(node.port), str(folder), check=True)
    assert "Received Store Response (Success)" in proc.stderr + proc.stdout or proc.returncode == 0
    assert node.app.index.counts() == {"patients": 1, "studies": 1, "series": 2, "instances": 6}
    study = node.app.index.study(items[0].study_uid)
    assert study is not None
    assert study["patient_name"] == "ROE^RICHARD"
    assert study["modalities"] == "CT\\MR"
    assert study["num_series"] == 2 and study["num_instances"] == 6
    # Every file in the store is a complete Part 10 file with the sent content.
    assert len(stored_files(node)) == 6
    sent = {i.sop_uid: dcmread(folder / f"{i.sop_uid}.dcm") for i in items}
    for path in stored_files(node):
        ds = dcmread(path)
        original = sent[ds.SOPInstanceUID]
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert ds.PixelData == original.PixelData
        assert ds == original
        assert ds.file_meta.SourceApplicationEntityTitle == "STORESCU"


def _dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its file meta group."""
    data = path.read_bytes()
    ds = dcmread(path, stop_before_pixels=True)
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    return data[meta_end:]


# (label, command that writes OUT from IN, storescu proposal option, transfer syntax UID)
CODECS = [
    ("implicit-le", ["dcmconv", "+ti"], "-xi", "1.2.840.10008.1.2"),
    ("explicit-le", ["dcmconv", "+te"], "-xe", "1.2.840.10008.1.2.1"),
    ("deflate", ["dcmconv", "+td"], "-xd", "1.2.840.10008.1.2.1.99"),
    ("jpeg-baseline", ["dcmcjpeg", "+eb"], "-xy", "1.2.840.10008.1.2.4.50"),
    ("jpeg-lossless-sv1", ["dcmcjpeg", "+e1"], "-xs", "1.2.840.10008.1.2.4.70"),
    ("jpeg-ls-lossless", ["dcmcjpls", "+el"], "-xt", "1.2.840.10008.1.2.4.80"),
    ("rle", ["dcmcrle"], "-xr", "1.2.840.10008.1.2.5"),
]


@pytest.mark.parametrize(("label", "command", "propose", "ts"), CODECS, ids=[c[0] for c in CODECS])
def test_transfer_syntaxes_are_stored_as_received(
    node: Node, tmp_path: Path, label: str, command: list[str], propose: str, ts: str
) -> None:
    inst = dicomdata.study("PTS", "TS^TEST", ("CT",), 1, rows=32, columns=32)[0]
    if label == "jpeg-baseline":
        inst.extra = {"BitsStored": 8, "HighBit": 7}
    raw = inst.write(tmp_path)
    if label == "jpeg-baseline":
        ds = dcmread(raw)
        ds.BitsAllocated = 8
        ds.PixelData = bytes(b % 256 for b in ds.PixelData[: 32 * 32])
        ds.save_as(raw, enforce_file_format=True)
    sent = tmp_path / "sent.dcm"
    dcmtk(command[0], *command[1:], str(raw), str(sent), check=True)
    assert str(dcmread(sent).file_meta.TransferSyntaxUID) == ts
    dcmtk("storescu", propose, "-R", "-aec", node.aet, HOST, str(node.port), str(sent), check=True)
    [path] = stored_files(node)
    stored = dcmread(path)
    assert str(stored.file_meta.TransferSyntaxUID) == ts
    # Lossy compression gives the instance a new SOP Instance UID: look up what was sent.
    assert node.app.index.lookup(dcmread(sent).SOPInstanceUID) is not None
    if label != "deflate":  # deflate is re-compressed by the sender; compare decoded content instead
        assert _dataset_bytes(path) == _dataset_bytes(sent)
    else:
        assert stored == dcmread(sent)


def test_jpeg2000_from_pynetdicom(node: Node, tmp_path: Path) -> None:
    from pydicom.uid import JPEG2000Lossless
    from pynetdicom import AE

    ds = dicomdata.study("PJ2K", "J2K^TEST", ("CT",), 1, rows=32, columns=32)[0].dataset()
    ds.compress(JPEG2000Lossless)
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(ds.SOPClassUID, JPEG2000Lossless)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0x0000
    [path] = stored_files(node)
    stored = dcmread(path)
    assert stored.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert stored.file_meta.SourceApplicationEntityTitle == "PYNET"
    assert (stored.pixel_array == ds.pixel_array).all()


def test_private_sop_class_is_accepted(node: Node, tmp_path: Path) -> None:
    from pynetdicom import AE

    ds = dicomdata.study("PPRIV", "PRIVATE^SOP", ("OT",), 1)[0].dataset()
    private = "1.2.826.0.1.3680043.10.1234.99.1"
    ds.SOPClassUID = private
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(private)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0x0000
    found = node.app.index.lookup(ds.SOPInstanceUID)
    assert found is not None and found.sop_class_uid == private


def test_duplicate_is_ignored_with_success(node: Node, tmp_path: Path) -> None:
    inst = dicomdata.study("PDUP", "DUP^TEST", ("CT",), 1)[0]
    path = inst.write(tmp_path)
    for _ in range(2):
        dcmtk("storescu", "-aec", node.aet, HOST, str(node.port), str(path), check=True)
    assert node.app.index.counts()["instances"] == 1
    assert len(stored_files(node)) == 1


def test_duplicate_overwrites_when_configured(node_factory, tmp_path: Path) -> None:
    node = node_factory(overwrite=True)
    inst = dicomdata.study("POVW", "OVW^TEST", ("CT",), 1)[0]
    first = inst.write(tmp_path)
    dcmtk("storescu", "-aec", node.aet, HOST, str(node.port), str(first), check=True)
    inst.study_description = "CHANGED"
    inst.extra = {"SeriesDescription": "second copy"}
    second = tmp_path / "second.dcm"
    inst.dataset().save_as(second, enforce_file_format=True)
    dcmtk("storescu", "-aec", node.aet, HOST, str(node.port), str(second), check=True)
    assert node.app.index.counts()["instances"] == 1
    [path] = stored_files(node)
    assert dcmread(path).SeriesDescription == "second copy"


def test_store_then_find_sees_it_immediately(node: Node, tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

    inst = dicomdata.study("PNOW", "NOW^TEST", ("CT",), 1)[0]
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(inst.dataset().SOPClassUID)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.send_c_store(inst.dataset()).Status == 0
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = inst.study_uid
    answers = [
        ds
        for status, ds in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
        if status.Status == 0xFF00
    ]
    assoc.release()
    assert [a.StudyInstanceUID if a is not None else None for a in answers] == [inst.study_uid]
