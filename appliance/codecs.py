"""The one place that chooses transfer syntaxes and pixel codecs, for retrieve, forwarding, discs and the web.

Stored files are kept exactly as received; what leaves the box is converted here when the receiver
needs another transfer syntax. Decoding and encoding use pydicom's pixel handlers with the
pylibjpeg plugins (libjpeg, openjpeg, rle) and pyjpegls (CharLS): no codec is written by hand.
pydicom has no encoder for the JPEG (ISO 10918) syntaxes, so those two come from elsewhere: JPEG
Lossless SV1 from GDCM (``python-gdcm``: every bit depth from 2 to 16, signed, colour) and 8-bit JPEG
Baseline from Pillow (libjpeg, with the 4:2:2 subsampling DICOM's ``YBR_FULL_422`` names; GDCM's
wheel subsamples 4:2:0 and mislabels its 12-bit streams). GDCM is also a pydicom decoder plugin;
pylibjpeg stays the first one tried (:func:`_gdcm_decodes_last`).

Rules (PS3.5 8, PS3.3 C.7.6.1.1.5):

* Every UID is kept: a converted instance is the same instance in another encoding
  (pydicom's ``decompress()``/``compress()`` would otherwise make a new SOP Instance UID).
* Decoding a lossless syntax gives the stored pixels back exactly. An instance that was ever lossy
  keeps Lossy Image Compression ``01``, and a lossy encoding made here sets it with the ratio and
  method.
* What cannot be converted raises :class:`~appliance.errors.CodecError` with the reason; the caller
  fails that one sub-operation.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterable
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.pixels import get_decoder, get_encoder, pixel_array
from pydicom.pixels.processing import convert_color_space
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from appliance.config import TS_NAMES
from appliance.errors import CodecError

try:
    import gdcm

    HAVE_GDCM = True
except ImportError:  # pragma: no cover - python-gdcm is a dependency; without it JPEG Lossless is not offered
    HAVE_GDCM = False

#: ``preferred_ts`` names (:data:`appliance.config.TS_NAMES`) -> transfer syntax; "as-is" sends what is stored.
PREFERRED_TS: dict[str, UID | None] = dict(
    zip(
        TS_NAMES,
        (
            None,
            ImplicitVRLittleEndian,
            ExplicitVRLittleEndian,
            DeflatedExplicitVRLittleEndian,
            JPEGBaseline8Bit,
            JPEGLosslessSV1,
            JPEGLSLossless,
            JPEGLSNearLossless,
            JPEG2000Lossless,
            JPEG2000,
            RLELossless,
        ),
        strict=True,
    )
)
#: Native (not encapsulated) syntaxes: what every receiver accepts is among them (PS3.5 10.1).
NATIVE = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian}
)
#: The pair proposed beside every stored syntax (PS3.4 B.4.1: the default syntax and the explicit one).
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_LOSSY_METHOD = {JPEGBaseline8Bit: "ISO_10918_1", JPEG2000: "ISO_15444_1", JPEGLSNearLossless: "ISO_14495_1"}
#: Encoder settings of the lossy syntaxes: JPEG 2000 at 10:1 (diagnostic quality for most modalities, as the
#: usual PACS default), JPEG-LS near-lossless with each pixel within 2 of the original.
LOSSY_OPTIONS: dict[str, dict[str, Any]] = {JPEG2000: {"j2k_cr": [10]}, JPEGLSNearLossless: {"jls_error": 2}}


def preferred_syntax(name: str) -> UID | None:
    """The transfer syntax a ``preferred_ts`` name stands for (None for "as-is").

    Raises
    ------
    ValueError
        For a name that is not in :data:`PREFERRED_TS`, with the names that are.
    """
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    if key not in PREFERRED_TS:
        raise ValueError(f"unknown transfer syntax name {name!r}; one of: {', '.join(PREFERRED_TS)}")
    return PREFERRED_TS[key]


def can_convert(source: str, target: str) -> bool:
    """Whether an instance stored in ``source`` can be sent in ``target`` by :func:`convert`."""
    src, dst = UID(source), UID(target)
    if src == dst:
        return True
    if src.is_compressed and not _decodable(src):
        return False
    return not dst.is_compressed or _encodable(dst)


def _decodable(ts: UID) -> bool:
    try:
        return bool(get_decoder(ts).is_available)
    except NotImplementedError:
        return False


def _encodable(ts: UID) -> bool:
    if ts in _OWN_ENCODERS:
        return ts != JPEGLosslessSV1 or HAVE_GDCM
    try:
        return bool(get_encoder(ts).is_available)
    except NotImplementedError:
        return False


def choose(stored: str, accepted: Iterable[str], preferred: str | None = None) -> str | None:
    """The transfer syntax to send a stored instance in, among those the receiver accepted.

    Parameters
    ----------
    stored : str
        The instance's stored transfer syntax.
    accepted : iterable of str
        Transfer syntaxes the receiver accepted for the instance's SOP class.
    preferred : str, optional
        The node's ``preferred_ts`` syntax: used when accepted and reachable.

    Returns
    -------
    str or None
        The preferred syntax if accepted and convertible; else the stored one if accepted; else an
        accepted native syntax (explicit first); else any accepted syntax we can convert to; None
        when no accepted syntax can carry the instance.
    """
    offered = list(dict.fromkeys(str(ts) for ts in accepted))
    if preferred and preferred in offered and can_convert(stored, preferred):
        return preferred
    if stored in offered:
        return stored
    for native in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian):
        if native in offered and can_convert(stored, native):
            return str(native)
    for ts in offered:
        if can_convert(stored, ts):
            return ts
    return None


def file_meta_uids(data: bytes | memoryview) -> tuple[str, str, str] | None:
    """The Transfer Syntax, Media Storage SOP Class and SOP Instance UIDs of a Part 10 file's meta group.

    Read by walking the group (explicit VR little endian, PS3.10 7.1), which takes microseconds where
    pydicom's reader takes a millisecond: a STOW-RS request reads it for each of its parts.

    Returns
    -------
    tuple of str, or None
        None when the group is not that plain form (no prefix, other encoding, a UID missing): the caller
        then reads it with pydicom, which says what is wrong.
    """
    if len(data) < 144 or bytes(data[128:132]) != b"DICM":
        return None
    found: dict[int, str] = {}
    position = 132
    while position + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, position)
        if group != 0x0002:
            break
        vr = bytes(data[position + 4 : position + 6])
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV", b"SV", b"UV"):
            (length,) = struct.unpack_from("<I", data, position + 8)
            position += 12
        elif vr.isalpha() and vr.isupper():
            (length,) = struct.unpack_from("<H", data, position + 6)
            position += 8
        else:
            return None
        if position + length > len(data):
            return None
        if element in (0x0002, 0x0003, 0x0010):
            if vr != b"UI":
                return None
            found[element] = bytes(data[position : position + length]).rstrip(b"\x00 ").decode("ascii", "replace")
        position += length
    if not all(found.get(e) for e in (0x0002, 0x0003, 0x0010)):
        return None
    return found[0x0010], found[0x0002], found[0x0003]


def dataset_offset(data: bytes | memoryview) -> int:
    """Where the data set starts in a Part 10 file's bytes (after preamble, prefix and file meta).

    The File Meta Information Group Length says where; when a writer left it out, the group's elements are
    walked instead (explicit VR little endian, PS3.10 7.1).

    Raises
    ------
    CodecError
        When the bytes are not a Part 10 file (no ``DICM`` prefix, or a meta group that runs past the end).
    """
    if len(data) < 140 or bytes(data[128:132]) != b"DICM":
        raise CodecError("not a DICOM Part 10 file (no DICM prefix after the preamble)")
    if bytes(data[132:136]) == b"\x02\x00\x00\x00" and len(data) >= 144:
        (group_length,) = struct.unpack_from("<I", data, 140)
        if 144 + group_length > len(data):
            raise CodecError("the file meta group is longer than the file")
        return 144 + group_length
    position = 132
    while position + 8 <= len(data):
        group, _ = struct.unpack_from("<HH", data, position)
        if group != 0x0002:
            return position
        vr = bytes(data[position + 4 : position + 6])
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV", b"SV", b"UV"):
            (length,) = struct.unpack_from("<I", data, position + 8)
            position += 12 + length
        else:
            (length,) = struct.unpack_from("<H", data, position + 6)
            position += 8 + length
    raise CodecError("not a DICOM Part 10 file: its file meta group runs past the end")


def read_stored(path: Path) -> bytes:
    """A stored instance's file, whole (the caller slices the data set at :func:`dataset_offset`).

    Raises
    ------
    CodecError
        When the file cannot be read (missing, permissions, I/O error).
    """
    try:
        # os.open/fstat/read: four system calls, about half of what Path.read_bytes makes for a small file.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, os.fstat(fd).st_size)
            rest = []
            while chunk := os.read(fd, 1 << 20):  # past 2 GB one read() stops short
                rest.append(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        raise CodecError(f"stored file cannot be read: {exc.strerror or exc}") from exc
    return data + b"".join(rest) if rest else data


def convert(part10: bytes, target: str) -> bytes:
    """The data set of a Part 10 file encoded in ``target``, every UID kept.

    Parameters
    ----------
    part10 : bytes
        The stored file.
    target : str
        Transfer syntax UID to encode in.

    Returns
    -------
    bytes
        The data set (no file meta) in ``target``; the stored bytes themselves when nothing changes.

    Raises
    ------
    CodecError
        When the data cannot be decoded or encoded (the reason says which).
    """
    start = dataset_offset(part10)
    try:
        ds = dcmread(BytesIO(part10))
    except Exception as exc:
        raise CodecError(f"stored file cannot be parsed: {exc}") from exc
    source = UID(ds.file_meta.TransferSyntaxUID)
    dst = UID(target)
    if source == dst:
        return part10[start:]
    try:
        return _encode(ds, source, dst)
    except CodecError:
        raise
    except Exception as exc:  # codec plugins raise anything (ValueError, RuntimeError, their own types)
        raise CodecError(f"cannot convert {source.name} to {dst.name}: {exc}") from exc


def _encode(ds: Dataset, source: UID, target: UID) -> bytes:
    if "PixelData" in ds and source.is_compressed:
        if not _decodable(source):
            raise CodecError(f"no decoder installed for {source.name}")
        lossy = source.is_compressed and not _is_lossless(source)
        # A lossless YBR_FULL image stays YBR_FULL: pydicom's default conversion to RGB rounds, so the pixels
        # would no longer be the stored ones.
        ds.decompress(generate_instance_uid=False, as_rgb=lossy)
        if lossy:
            ds.LossyImageCompression = "01"
    if target.is_compressed:
        if "PixelData" not in ds:
            raise CodecError(f"{target.name} needs pixel data; the instance has none")
        if not _encodable(target):
            raise CodecError(f"no encoder installed for {target.name}")
        if target in (JPEG2000, JPEG2000Lossless) and min(int(ds.Rows), int(ds.Columns)) < 32:
            # OpenJPEG always makes 6 resolution levels, which needs 32 pixels in each direction.
            raise CodecError(f"{target.name}: images smaller than 32x32 pixels cannot be encoded")
        raw_size = len(ds.PixelData)
        if target in _OWN_ENCODERS:
            _compress_jpeg(ds, target)
        else:
            if target in (JPEG2000, JPEG2000Lossless):
                _j2k_colour(ds, target)
            ds.compress(
                target,
                generate_instance_uid=False,
                encoding_plugin=_encoding_plugin(target),
                **LOSSY_OPTIONS.get(target, {}),
            )
        if target in _LOSSY_METHOD:
            _mark_lossy(ds, raw_size, target)
        return _write(ds, implicit=False, little=True)
    if target == DeflatedExplicitVRLittleEndian:
        plain = _write(ds, implicit=False, little=True)
        packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = packer.compress(plain) + packer.flush()
        # PS3.5 A.5: an odd-length deflated stream is padded with one null byte (PDV fragments are even).
        return deflated + b"\x00" if len(deflated) % 2 else deflated
    return _write(ds, implicit=target == ImplicitVRLittleEndian, little=target != ExplicitVRBigEndian)


#: Encoder plugin preferred per syntax when installed: pylibjpeg-rle encodes RLE about 8x faster than pydicom's own.
_PREFERRED_PLUGIN = {RLELossless: "pylibjpeg"}


def _encoding_plugin(target: UID) -> str:
    plugin = _PREFERRED_PLUGIN.get(target, "")
    return plugin if plugin and plugin in get_encoder(target).available_plugins else ""


def _j2k_colour(ds: Dataset, target: UID) -> None:
    """Set the Photometric Interpretation a colour JPEG 2000 image gets (PS3.5 8.2.4): RGB is encoded with the
    multi-component transform, YBR_RCT when reversible, YBR_ICT when not.

    pydicom's encoder applies the transform unless the interpretation is RGB, so it is set before encoding.
    YBR_FULL is not a JPEG 2000 colour space: for the lossy syntax it is converted to RGB first (the
    image changes anyway); for the lossless one it is refused, since that conversion rounds.
    """
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric == "YBR_FULL":
        if target == JPEG2000Lossless:
            raise CodecError(
                f"{target.name}: YBR_FULL images are not encoded (PS3.5 8.2.4 allows RGB, YBR_RCT, "
                "YBR_ICT, and YBR_FULL cannot be made RGB without rounding)"
            )
        rgb = convert_color_space(pixel_array(ds, as_rgb=False), "YBR_FULL", "RGB")
        ds.PixelData = rgb.tobytes()
        ds.PlanarConfiguration = 0
        photometric = "RGB"
    if photometric == "RGB":
        ds.PhotometricInterpretation = "YBR_RCT" if target == JPEG2000Lossless else "YBR_ICT"


#: Photometric Interpretations each JPEG (ISO 10918) encoder here takes (PS3.5 8.2.1: no palette for lossy).
_JPEG_PHOTOMETRIC = {
    JPEGLosslessSV1: ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL"),
    JPEGBaseline8Bit: ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL"),
}
#: JPEG Baseline quality: the libjpeg scale's usual "visually lossless" setting for diagnostic viewing.
JPEG_QUALITY = 90


def _compress_jpeg(ds: Dataset, target: UID) -> None:
    """Encode a native data set's pixels in JPEG Lossless SV1 (GDCM) or 8-bit JPEG Baseline (Pillow), one
    fragment per frame, in place."""
    photometric = str(ds.get("PhotometricInterpretation", ""))
    samples, bits = int(ds.get("SamplesPerPixel") or 1), int(ds.BitsStored)
    if photometric not in _JPEG_PHOTOMETRIC[target]:
        raise CodecError(f"{target.name}: {photometric or 'no'} Photometric Interpretation is not encoded")
    if target == JPEGBaseline8Bit and (int(ds.BitsAllocated) != 8 or int(ds.PixelRepresentation)):
        raise CodecError(
            f"{target.name} takes unsigned 8-bit images only; this one has {bits} bits stored"
            f"{' (signed)' if int(ds.PixelRepresentation) else ''}: use JPEG 2000 or JPEG-LS"
        )
    if target == JPEGLosslessSV1 and not 2 <= bits <= 16:
        raise CodecError(f"{target.name} takes 2 to 16 bits stored; this image has {bits}")
    count = int(ds.get("NumberOfFrames") or 1)
    arr = pixel_array(ds, as_rgb=False)  # interleaved samples, whatever the Planar Configuration was
    frames = arr.reshape((count, *arr.shape[-3 if samples > 1 else -2 :]))
    encode = _OWN_ENCODERS[target]
    encoded = [encode(frame.tobytes(), ds) for frame in frames]
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = target
    if samples > 1:
        ds.PlanarConfiguration = 0  # PS3.5 8.2.1: colour-by-pixel in JPEG
        if target == JPEGBaseline8Bit:
            ds.PhotometricInterpretation = "YBR_FULL_422"  # what the JFIF stream holds (PS3.5 8.2.1)


def _gdcm_lossless(frame: bytes, ds: Dataset) -> bytes:
    """One frame in JPEG Lossless SV1, by GDCM (the pattern of pydicom's own GDCM RLE encoder)."""
    samples, bits = int(ds.get("SamplesPerPixel") or 1), int(ds.BitsStored)
    writer = gdcm.ImageWriter()  # the image must belong to a writer, which must outlive it
    image = writer.GetImage()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((int(ds.Columns), int(ds.Rows), 1))
    image.SetPhotometricInterpretation(
        gdcm.PhotometricInterpretation(gdcm.PhotometricInterpretation.GetPIType(str(ds.PhotometricInterpretation)))
    )
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.ExplicitVRLittleEndian))
    image.SetPixelFormat(gdcm.PixelFormat(samples, int(ds.BitsAllocated), bits, bits - 1, int(ds.PixelRepresentation)))
    if samples > 1:
        image.SetPlanarConfiguration(0)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetByteStringValue(frame)
    image.SetDataElement(element)
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(image)
    if not change.Change():
        raise CodecError("GDCM could not encode the frame in JPEG Lossless")
    fragments = change.GetOutput().GetDataElement().GetSequenceOfFragments()
    if fragments is None or fragments.GetNumberOfFragments() != 1:
        raise CodecError("GDCM gave an unexpected number of JPEG Lossless fragments")
    buffer = fragments.GetFragment(0).GetByteValue().GetBuffer()
    return bytes(buffer.encode("utf-8", "surrogateescape"))


def _pillow_baseline(frame: bytes, ds: Dataset) -> bytes:
    """One 8-bit frame in JPEG Baseline, by Pillow (libjpeg): grey as is, colour as YCbCr 4:2:2."""
    import numpy as np
    from PIL import Image

    rows, columns = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel") or 1)
    arr = np.frombuffer(frame, dtype=np.uint8).reshape((rows, columns, samples) if samples > 1 else (rows, columns))
    if samples > 1 and str(ds.PhotometricInterpretation) == "YBR_FULL":
        arr = convert_color_space(arr, "YBR_FULL", "RGB")
    picture = Image.fromarray(arr, "RGB" if samples > 1 else "L")
    out = BytesIO()
    picture.save(out, format="JPEG", quality=JPEG_QUALITY, subsampling="4:2:2", optimize=True)
    return out.getvalue()


#: The JPEG syntaxes pydicom cannot encode, with the frame encoder used here instead.
_OWN_ENCODERS: dict[UID, Callable[[bytes, Dataset], bytes]] = {
    JPEGLosslessSV1: _gdcm_lossless,
    JPEGBaseline8Bit: _pillow_baseline,
}


def _gdcm_decodes_last() -> None:
    """Make GDCM the last pydicom decoder plugin tried (pydicom lists it first): decoding stays with pylibjpeg
    and pyjpegls, as before GDCM was installed for encoding; GDCM is the fallback."""
    from pydicom.uid import AllTransferSyntaxes

    for uid in AllTransferSyntaxes:
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            continue
        if "gdcm" in decoder.available_plugins and len(decoder.available_plugins) > 1:
            decoder.remove_plugin("gdcm")
            decoder.add_plugin("gdcm", ("pydicom.pixels.decoders.gdcm", "_decode_frame"))


_gdcm_decodes_last()


def _is_lossless(ts: UID) -> bool:
    return ts not in _LOSSY_METHOD and ts not in ("1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.203")


def _mark_lossy(ds: Dataset, raw_size: int, target: UID) -> None:
    ratio = raw_size / max(1, len(ds.PixelData))
    ds.LossyImageCompression = "01"
    ratios = list(ds.get("LossyImageCompressionRatio") or [])
    methods = list(ds.get("LossyImageCompressionMethod") or [])
    ds.LossyImageCompressionRatio = [*ratios, f"{ratio:.2f}"[:16]]
    ds.LossyImageCompressionMethod = [*methods, _LOSSY_METHOD[target]]


def _write(ds: Dataset, implicit: bool, little: bool) -> bytes:
    out = DicomBytesIO()
    out.is_implicit_VR = implicit
    out.is_little_endian = little
    write_dataset(out, ds)
    return out.getvalue()


def as_dataset(data: bytes | memoryview, syntax: str) -> Dataset:
    """A data set's bytes in ``syntax`` (as :func:`convert` gives them) as a pydicom data set tagged with it."""
    uid = UID(syntax)
    raw = bytes(data)
    if uid == DeflatedExplicitVRLittleEndian:
        raw = zlib.decompress(raw, -zlib.MAX_WBITS)
    implicit = uid == ImplicitVRLittleEndian
    little = uid != ExplicitVRBigEndian
    ds = read_dataset(BytesIO(raw), implicit, little)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid
    ds.set_original_encoding(implicit, little)
    return ds


#: ``[archiving] compression`` names (:data:`appliance.config.COMPRESSIONS`) -> the transfer syntax stored files are
#: compressed to; None for "none" and "source" (files stay as received).
ARCHIVE_TS: dict[str, UID | None] = {
    "none": None,
    "source": None,
    "rle": RLELossless,
    "deflate": DeflatedExplicitVRLittleEndian,
    "jpeg-lossless": JPEGLosslessSV1,
    "jpeg-ls-lossless": JPEGLSLossless,
    "jpeg2000-lossless": JPEG2000Lossless,
    "jpeg-lossy": JPEGBaseline8Bit,
    "jpeg-ls-near-lossless": JPEGLSNearLossless,
    "jpeg2000-lossy": JPEG2000,
}


def archive_syntax(compression: str) -> UID | None:
    """The transfer syntax of an ``[archiving] compression`` name (None: leave files as they are).

    Raises
    ------
    CodecError
        When no encoder for it is installed, naming the ones that are.
    """
    target = ARCHIVE_TS[compression]
    if target is not None and target.is_compressed and not _encodable(target):
        usable = [name for name, ts in ARCHIVE_TS.items() if ts is None or not ts.is_compressed or _encodable(ts)]
        raise CodecError(
            f"[archiving] compression {compression!r}: no encoder installed for {target.name}; "
            f"usable: {', '.join(usable)}"
        )
    return target


def should_archive(stored: str, target: str) -> bool:
    """Whether an instance stored in ``stored`` is compressed to ``target`` by archiving.

    Never from a lossy syntax (that would lose twice) and never to the syntax it has.
    """
    src, dst = UID(stored), UID(target)
    if dst == DeflatedExplicitVRLittleEndian and src.is_compressed:
        return False  # deflating decoded pixels of a compressed file would make it bigger
    return src != dst and _is_lossless(src) and (not src.is_compressed or _decodable(src))


def recode_file(part10: bytes, target: str, implementation_version: str) -> bytes:
    """A whole Part 10 file in ``target``: the file meta of the original with the new syntax, then :func:`convert`.

    Every UID is kept; a lossy target marks Lossy Image Compression with ratio and method.

    Raises
    ------
    CodecError
        When the data cannot be decoded or encoded.
    """
    from appliance.part10 import file_meta

    dataset = convert(part10, target)
    try:
        meta = dcmread(BytesIO(part10), stop_before_pixels=True).file_meta
    except Exception as exc:
        raise CodecError(f"stored file cannot be parsed: {exc}") from exc
    source_ae = str(meta.get("SourceApplicationEntityTitle", "") or "")
    return (
        file_meta(
            str(meta.MediaStorageSOPClassUID),
            str(meta.MediaStorageSOPInstanceUID),
            target,
            implementation_version,
            source_ae,
        )
        + dataset
    )


def frames(part10: bytes, numbers: Iterable[int], target: str | None = None) -> tuple[str, list[bytes]]:
    """Frames of a stored instance's pixel data, as they are in the stored syntax or in ``target``.

    Parameters
    ----------
    part10 : bytes
        The stored file.
    numbers : iterable of int
        Frame numbers, from 1.
    target : str, optional
        Transfer syntax to give the frames in (converted with :func:`convert`); default: as stored.

    Returns
    -------
    (str, list of bytes)
        The transfer syntax of the frames and each frame's bytes: one compressed frame (encapsulated
        syntaxes) or the frame's native pixel bytes (little endian, padding to an even length excluded).

    Raises
    ------
    CodecError
        When the instance has no pixel data, a frame number is out of range, or conversion fails.
    """
    start = dataset_offset(part10)
    try:
        meta = dcmread(BytesIO(part10[:start]), stop_before_pixels=True)
        stored = UID(meta.file_meta.TransferSyntaxUID)
    except Exception as exc:
        raise CodecError(f"stored file cannot be parsed: {exc}") from exc
    syntax = UID(target) if target else stored
    data = part10[start:] if syntax == stored else convert(part10, syntax)
    try:
        ds = as_dataset(data, syntax)
        pixels = ds.get("PixelData")
        rows, columns = int(ds.Rows), int(ds.Columns)
    except Exception as exc:
        raise CodecError(f"the instance cannot be read in {syntax.name}: {exc}") from exc
    if pixels is None or not rows or not columns:
        raise CodecError("the instance has no pixel data")
    count = int(ds.get("NumberOfFrames") or 1)
    wanted = list(numbers)
    bad = [n for n in wanted if not 1 <= n <= count]
    if bad:
        raise CodecError(f"frame {bad[0]} is out of range: the instance has {count} frame(s)")
    if syntax.is_encapsulated:
        from pydicom.encaps import get_frame

        try:
            return str(syntax), [get_frame(pixels, n - 1, number_of_frames=count) for n in wanted]
        except Exception as exc:
            raise CodecError(f"encapsulated pixel data cannot be split into frames: {exc}") from exc
    if syntax == ExplicitVRBigEndian:
        raise CodecError("frames are not served from big endian data; ask for another transfer syntax")
    bits = rows * columns * int(ds.get("SamplesPerPixel") or 1) * int(ds.BitsAllocated)
    if bits % 8:
        raise CodecError("frames of bit-packed pixel data whose frames do not end on a byte are not served")
    size = bits // 8
    if len(pixels) < size * count:
        raise CodecError(f"the pixel data is shorter ({len(pixels)} bytes) than {count} frame(s) of {size} bytes")
    return str(syntax), [bytes(pixels[(n - 1) * size : n * size]) for n in wanted]
