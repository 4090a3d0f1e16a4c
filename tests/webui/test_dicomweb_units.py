"""The small parts of DICOMweb: multipart parsing and writing, Accept headers, Part 10 offsets, frames, search."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import RLELossless

from appliance import codecs
from appliance.errors import CodecError, InvalidValue
from appliance.site.dicomweb import check_uid, parse_search
from webui.dicomweb import multipart

import dicomdata


def test_multipart_round_trip_and_edge_cases() -> None:
    parts = [("application/dicom", b"first\r\n--not-the-boundary"), ("text/plain", b""), ("a/b", b"x" * 1000)]
    body = b"".join(multipart.write(parts, "B0UND"))
    assert len(body) == multipart.body_length([(t, len(d)) for t, d in parts], "B0UND")
    parsed = multipart.parse(body, "B0UND")
    assert [(h["content-type"], bytes(d)) for h, d in parsed] == parts
    # a preamble before the first delimiter and a part without headers
    body = b"preamble\r\n--b\r\n\r\nno headers\r\n--b--\r\nepilogue"
    assert [(h, bytes(d)) for h, d in multipart.parse(body, "b")] == [({}, b"no headers")]
    for bad, why in (
        (b"--b\r\nContent-Type: x\r\n\r\nnever closed", "truncated"),
        (b"no boundary at all", "does not contain"),
        (b"--b\r\nbroken header\r\n\r\nx\r\n--b--", "malformed header"),
        (b"--b\r\nContent-Type: x", "no end to its header"),
    ):
        with pytest.raises(multipart.MultipartError, match=why):
            multipart.parse(bad, "b")
    with pytest.raises(multipart.MultipartError, match="boundary"):
        multipart.parse(b"x", "")


def test_accept_header_order_and_parameters() -> None:
    ranges = multipart.parse_accept(
        'application/json;q=0.5, multipart/related; type="application/dicom"; transfer-syntax=*, image/png;q=0'
    )
    assert [r.media_type for r in ranges] == ["multipart/related", "application/json"]
    assert ranges[0].get("type") == "application/dicom" and ranges[0].get("transfer-syntax") == "*"
    assert multipart.parse_accept(None)[0].media_type == "*/*"
    assert multipart.parse_media_type('multipart/related; type="a;b"; boundary=x').get("type") == "a;b"


def _part10(**extra: object) -> bytes:
    inst = dicomdata.study("P1", "A^B", ("CT",), 1, rows=32, columns=32)[0]
    ds = inst.dataset()
    for key, value in extra.items():
        setattr(ds, key, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_dataset_offset_with_and_without_group_length() -> None:
    data = _part10()
    offset = codecs.dataset_offset(data)
    assert data[offset : offset + 2] == b"\x08\x00"  # the data set starts with group 0008
    # the same file without (0002,0000): the meta group is walked
    without = data[:132] + data[144:]
    assert codecs.dataset_offset(without) == offset - 12
    with pytest.raises(CodecError, match="DICM"):
        codecs.dataset_offset(b"\x00" * 200)
    with pytest.raises(CodecError):
        codecs.dataset_offset(data[:150])  # the group is longer than the file


def test_frames_native_encapsulated_and_out_of_range() -> None:
    cube = np.arange(3 * 32 * 32, dtype=np.uint16).reshape(3, 32, 32) % 4096
    data = _part10(NumberOfFrames=3, PixelData=cube.tobytes())
    syntax, frames = codecs.frames(data, [3, 1])
    assert syntax == "1.2.840.10008.1.2.1"
    assert [np.frombuffer(f, "<u2").reshape(32, 32).tolist() for f in frames] == [cube[2].tolist(), cube[0].tolist()]
    syntax, rle = codecs.frames(data, [2], RLELossless)
    assert syntax == RLELossless and rle[0] != frames[0]
    from pydicom.pixels import get_decoder

    rle_file = codecs.convert(data, RLELossless)
    ds = codecs.as_dataset(rle_file, RLELossless)
    ds.file_meta.TransferSyntaxUID = RLELossless
    decoded, _ = get_decoder(RLELossless).as_array(ds, index=1)
    assert decoded.tolist() == cube[1].tolist()
    with pytest.raises(CodecError, match="frame 4 is out of range"):
        codecs.frames(data, [4])
    assert dcmread(io.BytesIO(data)).NumberOfFrames == 3


def test_search_parameters() -> None:
    search = parse_search(
        "studies",
        [
            ("PatientName", "DOE*"),
            ("00080050", "A1"),
            ("includefield", "00081030,all"),
            ("limit", "5"),
            ("offset", "10"),
            ("StudyInstanceUID", "1.2"),
            ("StudyInstanceUID", "1.3"),
        ],
        max_results=100,
    )
    assert search.match[0x00100010] == "DOE*" and search.match[0x00080050] == "A1"
    assert search.match[0x0020000D] == "1.2\\1.3"  # a repeated key is a list
    assert search.include_all and search.limit == 5 and search.offset == 10
    assert parse_search("studies", [("limit", "5000")], max_results=100).limit == 100
    for bad in ([("limit", "x")], [("NotAKeyword", "1")], [("fuzzymatching", "yes")], [("0010,0010", "x")]):
        with pytest.raises(InvalidValue):
            parse_search("studies", bad, max_results=100)
    for uid in ("..", "1.2.3/4", "1.2.*", "1" * 65, "", "1..2"):
        with pytest.raises(InvalidValue):
            check_uid(uid)
    assert check_uid("1.2.840.10008.1.2") == "1.2.840.10008.1.2"
