"""The linear DICOMDIR writer: the same records as pydicom's FileSet, for plain images and for everything else."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from appliance.discs.dicomdir import Entry, build_dicomdir, read_fields
from appliance.discs.fileset import allowed_syntaxes, validate_fileset

import dicomdata
from conftest import dcmtk

OFFSETS = {"OffsetOfTheNextDirectoryRecord", "OffsetOfReferencedLowerLevelDirectoryEntity"}


def records(dicomdir: Path) -> list[dict[str, object]]:
    """Every record's elements (offsets left out) as keyword -> value."""
    ds = dcmread(dicomdir)
    return [{e.keyword: str(e.value) for e in r if e.keyword not in OFFSETS} for r in ds.DirectoryRecordSequence]


def encapsulated_pdf(folder: Path, patient_id: str, study_uid: str) -> Path:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.SOPInstanceUID = generate_uid(prefix=dicomdata.ROOT)
    ds.PatientName, ds.PatientID = "Müller^Hans", patient_id
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study_uid, "20240105", "101500", "1"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = generate_uid(prefix=dicomdata.ROOT), 9, "DOC"
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = "20240105", "101600"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4 report"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / "report.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def sample(folder: Path) -> list[Path]:
    folder.mkdir()
    items = dicomdata.study("PID9", "Müller^Hans", ("CT", "MR"), 2, charset="ISO_IR 100")
    items += dicomdata.study("PID8", "DOE^JANE", ("US",), 1)
    paths = [inst.write(folder) for inst in items]
    # A header with an undefined-length sequence before group 0020: the raw scan must step over it.
    ds = dcmread(paths[0])
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", generate_uid()
    ds.ReferencedStudySequence = Sequence([item])
    ds["ReferencedStudySequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    ds.save_as(paths[0], enforce_file_format=True)
    paths.append(encapsulated_pdf(folder, "PID9", items[0].study_uid))
    return paths


def test_records_are_the_ones_pydicom_makes(tmp_path: Path) -> None:
    paths = sample(tmp_path / "in")
    assert read_fields(paths[0]) is not None and read_fields(paths[-1]) is not None
    data, file_ids = build_dicomdir("CMP", [Entry(p, ExplicitVRLittleEndian) for p in paths])
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "DICOMDIR").write_bytes(data)
    reference = FileSet()
    reference.ID = "CMP"
    for path in paths:
        reference.add(path)
    reference.write(tmp_path / "pydicom")
    assert records(tmp_path / "ours" / "DICOMDIR") == records(tmp_path / "pydicom" / "DICOMDIR")
    assert file_ids[0] == ["PT000000", "ST000000", "SE000000", "IM000000"]
    assert file_ids[-1] == ["PT000000", "ST000000", "SE000002", "ED000000"]  # the report: pydicom's path
    kinds = [r["DirectoryRecordType"] for r in records(tmp_path / "ours" / "DICOMDIR")]
    assert kinds.count("PATIENT") == 2 and kinds.count("ENCAP DOC") == 1 and kinds.count("IMAGE") == 5


def test_written_fileset_validates_with_dcmtk_and_pydicom(tmp_path: Path) -> None:
    paths = sample(tmp_path / "in")
    root = tmp_path / "fs"
    root.mkdir()
    data, file_ids = build_dicomdir("MIXED", [Entry(p, ExplicitVRLittleEndian) for p in paths])
    (root / "DICOMDIR").write_bytes(data)
    for path, components in zip(paths, file_ids, strict=True):
        target = root.joinpath(*components)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    assert validate_fileset(root, allowed_syntaxes("STD-GEN-CD"), "/usr/bin/dcmdump") == len(paths)
    dump = dcmtk("dcmdump", "+P", "0004,1430", str(root / "DICOMDIR"), check=True).stdout
    assert dump.count("[IMAGE]") == 5 and dump.count("[ENCAP DOC]") == 1
    fs = FileSet(dcmread(root / "DICOMDIR"))
    assert len(fs) == len(paths) and {str(i.SOPInstanceUID) for i in fs} == {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in root.rglob("*")
        if p.is_file() and p.name != "DICOMDIR"
    }
