"""The receive path's one-pass parser (appliance.scan) and hand-encoded file meta (appliance.part10).

Reference for every record: what appliance.index.extract gives for pydicom's dcmread of the same
Part 10 file, i.e. what the receive path computed before the parser existed.
"""

from __future__ import annotations

import contextlib
import io
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from appliance.core import IMPLEMENTATION_VERSION
from appliance.errors import InvalidDataset
from appliance.index import InstanceRecord, extract
from appliance.part10 import file_meta
from appliance.scan import INDEXED, instance_record
from appliance.validate import check_structure

import dicomdata
from conftest import dcmtk

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
SYNTAXES = {EXPLICIT_LE: (False, True), IMPLICIT_LE: (True, True), EXPLICIT_BE: (False, False)}


def encode(ds: Dataset, ts: str = EXPLICIT_LE) -> bytes:
    implicit, little = SYNTAXES[ts]
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    write_dataset(fp, ds)
    return fp.getvalue()


def reference(data: bytes, ts: str) -> InstanceRecord:
    """The record of the receive path before appliance.scan: structure check, dcmread, extract."""
    implicit, little = SYNTAXES[ts]
    check_structure(data, implicit, little)
    meta = file_meta("1.2.3", "1.2.3.4", ts, IMPLEMENTATION_VERSION)
    try:
        ds = dcmread(io.BytesIO(meta + data), stop_before_pixels=True)
    except Exception as exc:
        raise InvalidDataset(str(exc)) from exc
    return extract(ds)


def assert_same(data: bytes, ts: str) -> InstanceRecord | None:
    """instance_record agrees with the pydicom path: same record, or InvalidDataset from both."""
    implicit, little = SYNTAXES[ts]
    try:
        expected: InstanceRecord | None = reference(data, ts)
    except InvalidDataset:
        expected = None
    try:
        got = instance_record(data, implicit, little)
    except InvalidDataset:
        assert expected is None, "the parser refused a data set that the pydicom path accepts"
        return None
    if got is not None:  # None: the caller falls back to pydicom, which gives `expected` by definition
        assert got == expected
    return got


def pydicom_meta(sop_class: str, sop_uid: str, ts: str, source_ae: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(ts)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buf.getvalue()


# -- file meta ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("source_ae", ["", "STORESCU", "ODD", "A B", "X" * 16])
@pytest.mark.parametrize(
    ("sop_class", "sop_uid"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.10.1234.5"),
        ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.44"),
        ("1.2.826.0.1.3680043.10.1234.99.1", " 1.2.3 "),
    ],
)
def test_file_meta_is_byte_for_byte_pydicoms(sop_class: str, sop_uid: str, source_ae: str) -> None:
    for ts in (EXPLICIT_LE, IMPLICIT_LE, "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1.99"):
        assert file_meta(sop_class, sop_uid, ts, IMPLEMENTATION_VERSION, source_ae) == pydicom_meta(
            sop_class, sop_uid, ts, source_ae
        )


# -- records equal to the pydicom path ------------------------------------------------------------------


@pytest.mark.parametrize("ts", list(SYNTAXES))
def test_sample_archive_records_equal_pydicoms(ts: str) -> None:
    for inst in dicomdata.sample_archive():
        data = encode(inst.dataset(), ts)
        implicit, little = SYNTAXES[ts]
        assert instance_record(data, implicit, little) == reference(data, ts)


# (label, command writing OUT from IN) for each transfer syntax DCMTK can produce here.
DCMTK_SYNTAXES = [
    ("implicit-le", ["dcmconv", "+ti"]),
    ("explicit-le", ["dcmconv", "+te"]),
    ("explicit-be", ["dcmconv", "+tb"]),
    ("jpeg-baseline", ["dcmcjpeg", "+eb"]),
    ("jpeg-extended", ["dcmcjpeg", "+ee"]),
    ("jpeg-lossless", ["dcmcjpeg", "+el"]),
    ("jpeg-lossless-sv1", ["dcmcjpeg", "+e1"]),
    ("jpeg-ls-lossless", ["dcmcjpls", "+el"]),
    ("jpeg-ls-near-lossless", ["dcmcjpls", "+en"]),
    ("rle", ["dcmcrle"]),
]


@pytest.mark.dcmtk
@pytest.mark.parametrize(("label", "command"), DCMTK_SYNTAXES, ids=[c[0] for c in DCMTK_SYNTAXES])
def test_dcmtk_transfer_syntaxes(tmp_path: Path, label: str, command: list[str]) -> None:
    checked = 0
    for n, inst in enumerate(dicomdata.sample_archive()[::3]):
        if label in ("jpeg-baseline", "jpeg-extended"):
            inst.extra = {"BitsStored": 8, "HighBit": 7}
        ds = inst.dataset()
        if label in ("jpeg-baseline", "jpeg-extended"):
            ds.BitsAllocated = 8
            ds.PixelData = bytes(b % 256 for b in ds.PixelData[: ds.Rows * ds.Columns])
        raw, sent = tmp_path / f"{n}.dcm", tmp_path / f"{n}-{label}.dcm"
        ds.save_as(raw, enforce_file_format=True)
        dcmtk(command[0], *command[1:], str(raw), str(sent), check=True)
        content = sent.read_bytes()
        meta = dcmread(sent, stop_before_pixels=True).file_meta
        ts = UID(meta.TransferSyntaxUID)
        data = content[132 + 12 + int(meta.FileMetaInformationGroupLength) :]
        got = instance_record(data, ts.is_implicit_VR, ts.is_little_endian)
        assert got == extract(dcmread(sent, stop_before_pixels=True)), label
        checked += 1
    assert checked >= 3


def _with_sequences(undefined: bool) -> Dataset:
    ds = dicomdata.study("PSEQ", "SEQ^TEST", ("CT",), 1)[0].dataset()
    item = Dataset()
    item.CodeValue = "T-D3000"
    item.CodingSchemeDesignator = "SRT"
    inner = Dataset()
    inner.PatientName = "NESTED^NAME"  # an indexed tag inside a sequence is not the patient's name
    inner.SOPInstanceUID = "1.2.3.999"
    item.ContentSequence = Sequence([inner])
    ds.AnatomicRegionSequence = Sequence([item, Dataset()])
    ds.ReferencedImageSequence = Sequence([])
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = undefined
    for seq in (ds.AnatomicRegionSequence, item.ContentSequence):
        for sub in seq:
            sub.is_undefined_length_sequence_item = undefined
    return ds


@pytest.mark.parametrize("undefined", [False, True])
@pytest.mark.parametrize("ts", list(SYNTAXES))
def test_sequences(ts: str, undefined: bool) -> None:
    data = encode(_with_sequences(undefined), ts)
    rec = assert_same(data, ts)
    assert rec is not None and rec.patient_name == "SEQ^TEST"


ODD_VALUES: list[dict[str, object]] = [
    {"PatientName": "YAMADA^TARO=山田^太郎=やまだ^たろう", "SpecificCharacterSet": "ISO_IR 192"},
    {
        "PatientName": "Yamada^Tarou=\033$B;3ED\033(B^\033$BB@O:\033(B=\033$B$d$^$@\033(B^\033$B$?$m$&\033(B",
        "SpecificCharacterSet": ["", "ISO 2022 IR 87"],
    },
    {"PatientName": "Wang^XiaoDong=王^小东", "SpecificCharacterSet": "GB18030"},
    {"PatientName": "Buc^Jérôme", "SpecificCharacterSet": "ISO_IR 100"},
    {"PatientName": "Люкceмбypг", "SpecificCharacterSet": "ISO_IR 144"},
    {"PatientName": "DOE^JOHN==", "ReferringPhysicianName": "=ONLY^IDEOGRAPHIC"},
    {"PatientName": ["DOE^JOHN", "ROE^JANE "], "StudyDescription": ["A ", " B", "C"]},
    {"AccessionNumber": " LEADING", "StudyID": "TRAIL   ", "PatientID": "  "},
    {"InstanceNumber": "0012", "SeriesNumber": " 7 ", "NumberOfFrames": "3"},
    {"InstanceNumber": "+5", "SeriesNumber": "-1", "NumberOfFrames": "1.0"},
    {"InstanceNumber": ["1", "2"], "NumberOfFrames": ""},
    {"StudyDate": "2024.01.05", "StudyTime": "10:15:00.5", "SeriesTime": "1015", "PatientBirthDate": ""},
    {"Modality": ["CT", "PT"], "BodyPartExamined": "CHEST\\", "PatientSex": " M "},
    {"StudyDescription": "tab\there", "SeriesDescription": "new\nline"},
    {"SpecificCharacterSet": "NOT A CHARSET", "PatientName": "Müller"},
    {"SpecificCharacterSet": ["ISO_IR 100", "ISO_IR 192"], "StudyDescription": "ÄÖÜ"},
]


@pytest.mark.parametrize("ts", list(SYNTAXES))
@pytest.mark.parametrize("values", ODD_VALUES, ids=range(len(ODD_VALUES)))
def test_odd_values(ts: str, values: dict[str, object]) -> None:
    ds = dicomdata.study("PODD", "ODD^VALUES", ("CT",), 1)[0].dataset()
    try:
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        data = encode(ds, ts)
    except (UnicodeError, LookupError, ValueError):
        pytest.skip("pydicom cannot encode this value in this syntax")
    assert_same(data, ts)


def _element(tag: int, vr: str, value: bytes, implicit: bool = False) -> bytes:
    if implicit:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value
    if vr in ("OB", "OW", "SQ", "UN", "UT", "UC", "UR"):
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


UIDS = (
    _element(0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.7\x00")
    + _element(0x00080018, "UI", b"1.2.3.4\x00")
    + _element(0x0020000D, "UI", b"1.2.3.5\x00")
    + _element(0x0020000E, "UI", b"1.2.3.6\x00")
)


@pytest.mark.parametrize(
    ("label", "data"),
    [
        (
            "wrong explicit VR",
            _element(0x00080005, "CS", b"ISO_IR 100") + _element(0x00100010, "LO", b"B\xfcr^X ") + UIDS,
        ),
        ("UN for a known tag", _element(0x00100010, "UN", b"UN^NAME ") + UIDS),
        (
            "indexed tag after pixel data",
            UIDS + _element(0x7FE00010, "OB", b"\x00\x01") + _element(0x7FE10010, "LO", b"x "),
        ),
        ("repeated tag", UIDS + _element(0x00100020, "LO", b"FIRST ") + _element(0x00100020, "LO", b"SECOND")),
        ("NUL inside a value", UIDS + _element(0x00100020, "LO", b"A\x00B ")),
        ("unknown VR", UIDS + _element(0x00110010, "ZZ", b"AB")),
        ("empty data set", b""),
        ("no UIDs", _element(0x00100020, "LO", b"ID")),
    ],
)
def test_crafted_element_streams(label: str, data: bytes) -> None:
    assert_same(data, EXPLICIT_LE)


def test_file_meta_elements_at_the_start_go_to_pydicom() -> None:
    data = _element(0x00020010, "UI", b"1.2.840.10008.1.2\x00") + UIDS
    assert instance_record(data, False, True) is None


def test_implicit_data_whose_first_length_looks_like_a_vr_goes_to_pydicom() -> None:
    # A first element of 0x4141 bytes: its length bytes read "AA", so pydicom guesses explicit VR.
    data = _element(0x00091010, "", b"x" * 0x4141, implicit=True) + _element(0x00080018, "", b"1.2.3.4\x00", True)
    assert instance_record(data, True, True) is None


def test_truncated_and_corrupt_data_sets_are_invalid() -> None:
    data = encode(dicomdata.study("PTR", "TR^UNC", ("CT",), 1)[0].dataset())
    with pytest.raises(InvalidDataset, match=r"truncated|corrupt"):
        instance_record(data[:-100], False, True)
    with pytest.raises(InvalidDataset, match="StudyInstanceUID"):
        instance_record(_element(0x00080018, "UI", b"1.2.3.4\x00"), False, True)


def test_every_indexed_attribute_is_read() -> None:
    """A value in each indexed attribute shows up in the record exactly as the pydicom path has it."""
    ds = dicomdata.study("PALL", "ALL^ATTRS", ("CT",), 1)[0].dataset()
    ds.IssuerOfPatientID = "ISSUER"
    ds.BodyPartExamined = "CHEST"
    ds.SeriesDate = "20240106"
    ds.SeriesTime = "101600"
    ds.NumberOfFrames = 4
    keywords = {keyword for keyword, _ in INDEXED.values()}
    assert keywords <= set(ds.dir())
    rec = assert_same(encode(ds), EXPLICIT_LE)
    assert rec is not None and rec.frames == 4 and rec.issuer == "ISSUER"


# -- hypothesis ------------------------------------------------------------------------------------------

_TEXT = st.text(alphabet=st.sampled_from(list("AZaz09 ^=\\.-_:\x00\tÜé山")), max_size=20)
_KEYWORDS = sorted(keyword for keyword, _ in INDEXED.values())
_CHARSETS = st.sampled_from([None, "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 6", "GB18030", ["", "ISO 2022 IR 87"]])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.dictionaries(st.sampled_from(_KEYWORDS), _TEXT, max_size=8),
    charset=_CHARSETS,
    ts=st.sampled_from(list(SYNTAXES)),
)
@example(values={"PatientName": "A^B \\C"}, charset=None, ts=EXPLICIT_LE)
@example(values={"InstanceNumber": " 012 "}, charset=None, ts=IMPLICIT_LE)
def test_random_values_give_pydicoms_record(values: dict[str, str], charset: object, ts: str) -> None:
    ds = dicomdata.study("PHYP", "HYP^NAME", ("CT",), 1)[0].dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values this test makes on purpose
        try:
            for keyword, value in values.items():
                setattr(ds, keyword, value)
            data = encode(ds, ts)
        except (UnicodeError, LookupError, ValueError, TypeError, OverflowError):
            return  # a value pydicom will not even write
        assert_same(data, ts)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.booleans(), st.booleans())
def test_fuzz_any_bytes(data: bytes, implicit: bool, little: bool) -> None:
    """Any bytes: a record, None (pydicom decides) or InvalidDataset; never another exception."""
    with contextlib.suppress(InvalidDataset):
        instance_record(data, implicit, little)


_VALID = encode(dicomdata.study("PFUZ", "FUZ^ZED", ("CT",), 1)[0].dataset())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, len(_VALID)),
)
def test_fuzz_mutated_data_sets(changes: list[tuple[int, int]], cut: int) -> None:
    """A valid data set with bytes changed and cut: agrees with the pydicom path or is refused by both."""
    data = bytearray(_VALID)
    for pos, value in changes:
        data[pos] = value
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same(bytes(data[:cut]), EXPLICIT_LE)
