"""Synthetic DICOM test data: patients, studies, series and instances made in code.

Never real patient data. Pixel data is small and deterministic so files stay
tiny; ``ct`` instances can be made CT-sized for benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

SOP_CLASSES = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "OT": SecondaryCaptureImageStorage,
    "PT": "1.2.840.10008.5.1.4.1.1.128",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
}
ROOT = "1.2.826.0.1.3680043.10.1234."  # test-only UID root


def uid() -> str:
    """A fresh UID under the test root."""
    return generate_uid(prefix=ROOT)


@dataclass
class Instance:
    """One synthetic instance; ``dataset()`` builds it."""

    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str = "CT"
    study_date: str = "20240105"
    study_time: str = "101500"
    accession: str = "ACC1"
    study_description: str = "CHEST"
    series_number: int = 1
    instance_number: int = 1
    birth_date: str = "19700101"
    sex: str = "O"
    charset: str | None = None
    rows: int = 16
    columns: int = 16
    extra: dict[str, object] = field(default_factory=dict)

    def dataset(self) -> Dataset:
        ds = Dataset()
        if self.charset:
            ds.SpecificCharacterSet = self.charset
        ds.SOPClassUID = SOP_CLASSES[self.modality]
        ds.SOPInstanceUID = self.sop_uid
        ds.StudyDate = self.study_date
        ds.StudyTime = self.study_time
        ds.AccessionNumber = self.accession
        ds.Modality = self.modality
        ds.ReferringPhysicianName = "REF^DOC"
        ds.StudyDescription = self.study_description
        ds.SeriesDescription = f"{self.modality} series {self.series_number}"
        ds.PatientName = self.patient_name
        ds.PatientID = self.patient_id
        ds.PatientBirthDate = self.birth_date
        if self.sex:
            ds.PatientSex = self.sex
        ds.StudyInstanceUID = self.study_uid
        ds.SeriesInstanceUID = self.series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = self.series_number
        ds.InstanceNumber = self.instance_number
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = self.rows
        ds.Columns = self.columns
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        for key, value in self.extra.items():
            setattr(ds, key, value)
        seed = int(self.sop_uid.replace(".", "")[-8:]) % (2**32)
        pixels = np.random.default_rng(seed).integers(0, 4096, (self.rows, self.columns), dtype=np.uint16)
        ds.PixelData = pixels.tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        return ds

    def write(self, folder: Path) -> Path:
        path = folder / f"{self.sop_uid}.dcm"
        self.dataset().save_as(path, enforce_file_format=True)
        return path


def study(
    patient_id: str, patient_name: str, modalities: tuple[str, ...] = ("CT",), per_series: int = 2, **kwargs: object
) -> list[Instance]:
    """Instances of one study: one series per modality, ``per_series`` instances each."""
    study_uid = uid()
    out = []
    for s, modality in enumerate(modalities, start=1):
        series_uid = uid()
        for i in range(1, per_series + 1):
            out.append(
                Instance(
                    patient_id,
                    patient_name,
                    study_uid,
                    series_uid,
                    uid(),
                    modality=modality,
                    series_number=s,
                    instance_number=i,
                    **kwargs,  # type: ignore[arg-type]
                )
            )
    return out


def sample_archive() -> list[Instance]:
    """Several patients, studies, series and modalities, with non-ASCII names.

    - DOE^JOHN (PID001): CT study 1998-03-12 08:30 (2 series x 2), MR study 2007-02-08 10:00 (1 x 3)
    - DOE^JANE (PID002): CT+PT study 2007-02-08 14:00 (2 series x 1)
    - MÜLLER^HANS (PID003, ISO_IR 100): US study 2020-05-01
    - Test-éüäöò Δ Ж (PID004, ISO_IR 192): OT study 2021-01-01, no PatientSex
    - MyName[*] (PID_5%): OT study 2022-02-02
    """
    items: list[Instance] = []
    items += study(
        "PID001",
        "DOE^JOHN",
        ("CT", "CT"),
        2,
        study_date="19980312",
        study_time="083000",
        accession="A100",
        study_description="CT CHEST",
    )
    items += study(
        "PID001",
        "DOE^JOHN",
        ("MR",),
        3,
        study_date="20070208",
        study_time="100000",
        accession="A101",
        study_description="MR HEAD",
    )
    items += study(
        "PID002",
        "DOE^JANE",
        ("CT", "PT"),
        1,
        study_date="20070208",
        study_time="140000",
        accession="A200",
        study_description="PET CT",
        sex="F",
    )
    items += study(
        "PID003",
        "MÜLLER^HANS",
        ("US",),
        1,
        study_date="20200501",
        accession="A300",
        charset="ISO_IR 100",
        study_description="ABDOMEN",
    )
    items += study(
        "PID004",
        "Test-éüäöò^ΔЖ",
        ("OT",),
        1,
        study_date="20210101",
        accession="A400",
        charset="ISO_IR 192",
        sex="",
        study_description="ÜBERSICHT",
    )
    items += study("PID_5%", "MyName[*]", ("OT",), 1, study_date="20220202", accession="A500")
    return items
