"""appliance.codecs: transfer syntax choice and conversion; every UID kept, lossless pixels identical.

Decoding of what we encode is checked with a second implementation where one is installed (DCMTK's dcmdjpls,
dcmdrle, and dcmdjp2k when present), so our codec choice cannot agree with itself by accident.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.filereader import read_dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
)

from appliance import codecs
from appliance.config import TS_NAMES
from appliance.errors import CodecError

import dicomdata

LOSSLESS = [JPEG2000Lossless, JPEGLSLossless, RLELossless, JPEGLosslessSV1]
LOSSLESS_IDS = ["j2k", "jls", "rle", "jpegll"]


def _image(bits: int, signed: bool, frames: int, rgb: bool) -> tuple[Dataset, np.ndarray]:
    """A synthetic image with a full-range ramp (so a lossy or clipped round trip shows)."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage if rgb else CTImageStorage
    ds.SOPInstanceUID = dicomdata.uid()
    ds.StudyInstanceUID = dicomdata.uid()
    ds.SeriesInstanceUID = dicomdata.uid()
    ds.PatientName = "CODEC^TEST"
    ds.PatientID = "PCODEC"
    ds.Rows, ds.Columns = 40, 36
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    shape = (frames, 40, 36, 3) if rgb else (frames, 40, 36)
    count = int(np.prod(shape))
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    values = (np.arange(count, dtype=np.int64) * 7919) % (high - low + 1) + low
    wide = np.int16 if signed else np.uint16
    dtype = {(8, False): np.uint8, (8, True): np.int8}.get((ds.BitsAllocated, signed), wide)
    arr = values.astype(dtype).reshape(shape if frames > 1 else shape[1:])
    ds.PixelData = arr.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds, arr


def _part10(ds: Dataset, syntax: str) -> bytes:
    ds = ds.copy()
    ds.file_meta = copy.copy(ds.file_meta)
    if syntax in (JPEGLosslessSV1, JPEGBaseline8Bit):  # pydicom has no encoder: GDCM / Pillow through codecs
        return codecs.recode_file(_part10(ds, ExplicitVRLittleEndian), syntax, "TEST")
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, generate_instance_uid=False, j2k_cr=[20.0] if syntax == JPEG2000 else None)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _decoded(data: bytes, syntax: str) -> Dataset:
    raw = zlib.decompress(data, -zlib.MAX_WBITS) if syntax == DeflatedExplicitVRLittleEndian else data
    ds = read_dataset(BytesIO(raw), syntax == ImplicitVRLittleEndian, True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    return ds


KINDS = [
    (8, False, 1, False),
    (12, False, 1, False),
    (16, False, 1, False),
    (16, True, 1, False),
    (12, False, 3, False),
    (8, False, 1, True),
]


@pytest.mark.parametrize("kind", KINDS, ids=["8bit", "12bit", "16bit", "signed16", "multiframe", "rgb"])
@pytest.mark.parametrize("stored", LOSSLESS, ids=LOSSLESS_IDS)
def test_decompression_keeps_uids_and_pixels(kind: tuple[int, bool, int, bool], stored: str) -> None:
    ds, arr = _image(*kind)
    data = _part10(ds, stored)
    for target in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        converted = codecs.convert(data, target)
        assert len(converted) % 2 == 0  # PDV fragments are even (a deflated stream is padded)
        out = _decoded(converted, target)
        assert out.SOPInstanceUID == ds.SOPInstanceUID
        assert out.StudyInstanceUID == ds.StudyInstanceUID and out.SeriesInstanceUID == ds.SeriesInstanceUID
        assert "LossyImageCompression" not in out
        np.testing.assert_array_equal(out.pixel_array, arr)


@pytest.mark.parametrize("kind", KINDS, ids=["8bit", "12bit", "16bit", "signed16", "multiframe", "rgb"])
@pytest.mark.parametrize("target", LOSSLESS, ids=LOSSLESS_IDS)
def test_lossless_compression_round_trips(kind: tuple[int, bool, int, bool], target: str) -> None:
    ds, arr = _image(*kind)
    out = _decoded(codecs.convert(_part10(ds, ExplicitVRLittleEndian), target), target)
    assert out.SOPInstanceUID == ds.SOPInstanceUID
    np.testing.assert_array_equal(out.pixel_array, arr)


@pytest.mark.parametrize(
    ("target", "tool"), [(JPEGLSLossless, "dcmdjpls"), (RLELossless, "dcmdrle"), (JPEGLosslessSV1, "dcmdjpeg")]
)
def test_what_we_encode_decodes_with_dcmtk(tmp_path: Path, target: str, tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} (DCMTK) is not installed")
    ds, arr = _image(16, False, 1, False)
    converted = _decoded(codecs.convert(_part10(ds, ExplicitVRLittleEndian), target), target)
    converted.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    converted.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    src, dst = tmp_path / "in.dcm", tmp_path / "out.dcm"
    converted.save_as(src, enforce_file_format=True)
    subprocess.run([tool, str(src), str(dst)], check=True, capture_output=True)
    back = dcmread(dst)
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    np.testing.assert_array_equal(back.pixel_array, arr)


@pytest.mark.parametrize(("target", "method"), [(JPEG2000, "ISO_15444_1"), (JPEGLSNearLossless, "ISO_14495_1")])
def test_lossy_encoding_is_marked(target: str, method: str) -> None:
    ds, arr = _image(8, False, 1, False)
    out = _decoded(codecs.convert(_part10(ds, ExplicitVRLittleEndian), target), target)
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionMethod == method
    assert float(out.LossyImageCompressionRatio) > 1
    assert out.SOPInstanceUID == ds.SOPInstanceUID
    assert np.abs(out.pixel_array.astype(int) - arr.astype(int)).mean() < 64  # lossy, but the same picture


def test_a_lossy_stored_instance_stays_marked_lossy_when_decompressed() -> None:
    ds, _ = _image(8, False, 1, False)
    ds.PhotometricInterpretation = "MONOCHROME2"
    lossy = _part10(ds, JPEG2000)
    out = _decoded(codecs.convert(lossy, ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    assert out.LossyImageCompression == "01"
    assert out.SOPInstanceUID == ds.SOPInstanceUID


def test_jpeg2000_of_a_tiny_image_is_refused_with_the_reason() -> None:
    ds, _ = _image(8, False, 1, False)
    ds.Rows, ds.Columns = 16, 16
    ds.PixelData = bytes(256)
    with pytest.raises(CodecError, match="smaller than 32x32"):
        codecs.convert(_part10(ds, ExplicitVRLittleEndian), JPEG2000Lossless)


def test_same_syntax_returns_the_stored_bytes() -> None:
    ds, _ = _image(16, False, 1, False)
    data = _part10(ds, RLELossless)
    assert codecs.convert(data, RLELossless) == data[codecs.dataset_offset(data) :]


def test_choose() -> None:
    plain = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert codecs.choose(JPEG2000Lossless, [JPEG2000Lossless, *plain]) == JPEG2000Lossless
    assert codecs.choose(JPEG2000Lossless, plain) == ExplicitVRLittleEndian
    assert codecs.choose(JPEG2000Lossless, [ImplicitVRLittleEndian]) == ImplicitVRLittleEndian
    assert codecs.choose(ExplicitVRLittleEndian, [RLELossless]) == RLELossless
    assert codecs.choose(ExplicitVRLittleEndian, [JPEGBaseline8Bit]) == JPEGBaseline8Bit  # Pillow encodes it
    assert codecs.choose(ExplicitVRLittleEndian, [JPEGLosslessSV1]) == JPEGLosslessSV1  # GDCM encodes it
    assert codecs.choose(ExplicitVRLittleEndian, ["1.2.840.10008.1.2.4.57"]) is None  # no JPEG Lossless encoder
    assert codecs.choose(ExplicitVRLittleEndian, []) is None
    assert (
        codecs.choose(JPEG2000Lossless, [JPEG2000Lossless, *plain], preferred=ExplicitVRLittleEndian)
        == ExplicitVRLittleEndian
    )


def test_preferred_ts_names_cover_the_config_names() -> None:
    assert list(codecs.PREFERRED_TS) == list(TS_NAMES)
    assert codecs.preferred_syntax("Explicit") == ExplicitVRLittleEndian
    assert codecs.preferred_syntax("as-is") is None
    with pytest.raises(ValueError, match="one of"):
        codecs.preferred_syntax("jpeg-xl")


def test_unreadable_and_broken_files_raise_codec_errors(tmp_path: Path) -> None:
    with pytest.raises(CodecError, match="cannot be read"):
        codecs.read_stored(tmp_path / "missing.dcm")
    with pytest.raises(CodecError, match="Part 10"):
        codecs.convert(b"not dicom" * 20, ExplicitVRLittleEndian)
    ds, _ = _image(16, False, 1, False)
    data = bytearray(_part10(ds, JPEG2000Lossless))
    start = data.index(b"\xff\x4f\xff\x51")  # the codestream's SOC and SIZ markers
    data[start : start + 64] = bytes(64)  # a damaged codestream
    with pytest.raises(CodecError, match="cannot convert"):
        codecs.convert(bytes(data), ExplicitVRLittleEndian)


def _smooth(ds: Dataset) -> np.ndarray:
    """Replace the ramp by smooth gradients (what a lossy codec is made for), returning the new pixels."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    y, x = np.mgrid[0:rows, 0:columns]
    top = (1 << int(ds.BitsStored)) - 1
    grey = x * top // columns
    arr = np.stack([grey, y * top // rows, top - grey], axis=-1) if int(ds.SamplesPerPixel) > 1 else grey
    arr = arr.astype(np.uint8 if int(ds.BitsAllocated) == 8 else np.uint16)
    ds.PixelData = arr.tobytes()
    return arr


@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
def test_jpeg_baseline_is_marked_lossy_and_decodes_with_dcmtk(tmp_path: Path, rgb: bool) -> None:
    ds, _ = _image(8, False, 1, rgb)
    arr = _smooth(ds)
    data = codecs.recode_file(_part10(ds, ExplicitVRLittleEndian), JPEGBaseline8Bit, "TEST")
    out = dcmread(BytesIO(data))
    assert out.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert out.SOPInstanceUID == ds.SOPInstanceUID  # as for the other lossy syntaxes: the same instance, marked
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionMethod == "ISO_10918_1"
    assert float(out.LossyImageCompressionRatio) > 1
    # PS3.5 8.2.1: colour JPEG Baseline holds YCbCr, subsampled 4:2:2.
    assert out.PhotometricInterpretation == ("YBR_FULL_422" if rgb else "MONOCHROME2")
    assert np.abs(out.pixel_array.astype(int) - arr.astype(int)).mean() < 4  # default as_rgb: back to RGB
    if shutil.which("dcmdjpeg") is None:
        pytest.skip("dcmdjpeg (DCMTK) is not installed")
    (tmp_path / "in.dcm").write_bytes(data)
    subprocess.run(["dcmdjpeg", str(tmp_path / "in.dcm"), str(tmp_path / "out.dcm")], check=True, capture_output=True)
    back = dcmread(tmp_path / "out.dcm")
    assert np.abs(back.pixel_array.astype(int) - arr.astype(int)).mean() < 4


@pytest.mark.parametrize(("bits", "signed"), [(12, False), (16, False), (8, True)])
def test_jpeg_baseline_refuses_what_it_cannot_hold_with_the_reason(bits: int, signed: bool) -> None:
    ds, _ = _image(bits, signed, 1, False)
    with pytest.raises(CodecError, match="unsigned 8-bit images only"):
        codecs.convert(_part10(ds, ExplicitVRLittleEndian), JPEGBaseline8Bit)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [("RGB", JPEG2000Lossless, "YBR_RCT"), ("RGB", JPEG2000, "YBR_ICT"), ("YBR_FULL", JPEG2000, "YBR_ICT")],
)
def test_colour_jpeg2000_gets_the_photometric_interpretation_of_its_transform(
    source: str, target: str, expected: str
) -> None:
    ds, _ = _image(8, False, 2, True)
    arr = _smooth(ds) if target == JPEG2000 else np.frombuffer(ds.PixelData, np.uint8).reshape(2, 40, 36, 3)
    if source == "YBR_FULL":
        from pydicom.pixels import convert_color_space

        ds.PixelData = convert_color_space(arr, "RGB", "YBR_FULL").tobytes()
        ds.PhotometricInterpretation = "YBR_FULL"
    ds.NumberOfFrames = 2
    if target == JPEG2000:
        ds.PixelData = np.concatenate([np.frombuffer(ds.PixelData, np.uint8)] * 2).tobytes()
        arr = np.stack([arr, arr])
    out = _decoded(codecs.convert(_part10(ds, ExplicitVRLittleEndian), target), target)
    # PS3.5 8.2.4: the multi-component transform is used and the interpretation names it.
    assert out.PhotometricInterpretation == expected
    frame = next(generate_frames(out.PixelData, number_of_frames=2))
    cod = frame.index(b"\xff\x52")
    assert frame[cod + 8] == 1, "the codestream's COD marker says no multi-component transform"
    back = out.pixel_array  # decoded to RGB
    if target == JPEG2000Lossless:
        np.testing.assert_array_equal(back, arr)
    else:
        assert np.abs(back.astype(int) - arr.astype(int)).mean() < 6


def test_lossless_jpeg2000_of_ybr_full_is_refused_with_the_reason() -> None:
    ds, _ = _image(8, False, 1, True)
    ds.PhotometricInterpretation = "YBR_FULL"
    with pytest.raises(CodecError, match="YBR_FULL"):
        codecs.convert(_part10(ds, ExplicitVRLittleEndian), JPEG2000Lossless)


def test_a_ybr_rct_instance_goes_out_as_the_original_rgb() -> None:
    ds, arr = _image(8, False, 2, True)
    stored = codecs.recode_file(_part10(ds, ExplicitVRLittleEndian), JPEG2000Lossless, "TEST")
    assert dcmread(BytesIO(stored)).PhotometricInterpretation == "YBR_RCT"
    for target in (ExplicitVRLittleEndian, JPEGLosslessSV1, RLELossless):
        out = _decoded(codecs.convert(stored, target), target)
        assert out.PhotometricInterpretation == "RGB"
        np.testing.assert_array_equal(out.pixel_array, arr)
