"""DIMSE command sets and P-DATA-TF PDUs written and read by hand, byte for byte as pynetdicom does.

Why: pynetdicom's primitives and DIMSE message classes build a pydicom data set per command and
validate every UID again, ~0.1 ms per message; the fast path (:mod:`appliance.dicom.fast`)
answers thousands of messages per second with the few command elements it needs. The tests
compare each encoder with pynetdicom's output.
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom.dataset import Dataset

#: (0000,0800) Command Data Set Type: no data set follows / a data set follows.
NO_DATA_SET = 0x0101
DATA_SET = 0x0001

#: Command set elements read, by element number (group 0000): VR kind.
_US = {0x0100, 0x0110, 0x0120, 0x0700, 0x0800, 0x0900, 0x1031}
_UI = {0x0002, 0x1000}
_AE = {0x1030}


def decode_command(data: bytes) -> dict[int, Any]:
    """The elements of a command set (implicit VR little endian) that the fast path uses.

    US values as int, UIDs and AE titles as str (trailing NUL and space removed, as pydicom reads
    them); others are skipped.

    Raises
    ------
    ValueError
        When an element runs past the end of the command set.
    """
    fields: dict[int, Any] = {}
    pos, end = 0, len(data)
    while pos + 8 <= end:
        group, element, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if pos + length > end:
            raise ValueError("command set element runs past its end")
        if group == 0x0000:
            value = data[pos:pos + length]
            if element in _US and length == 2:
                fields[element] = int.from_bytes(value, "little")
            elif element in _UI:
                fields[element] = value.decode("latin-1").rstrip("\x00 ").strip()
            elif element in _AE:
                fields[element] = value.decode("latin-1").strip()
        pos += length
    if pos != end:
        raise ValueError("command set ends inside an element header")
    return fields


def simple_status(result: Any) -> tuple[int | None, str | None]:
    """(status, error comment) when a handler's result can be encoded by hand, else (None, None)."""
    if isinstance(result, int) and not isinstance(result, bool) and 0 <= result <= 0xFFFF:
        return result, None
    if isinstance(result, Dataset) and "Status" in result and set(result.keys()) <= {0x00000900, 0x00000902}:
        status = result.Status
        comment = result.get("ErrorComment")
        if isinstance(status, int) and 0 <= status <= 0xFFFF and (
                comment is None or (isinstance(comment, str) and comment.isascii() and len(comment) <= 64)):
            return status, comment
    return None, None


def _implicit(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _text(value: str, pad: bytes) -> bytes:
    raw = value.encode("latin-1")
    return raw + pad if len(raw) % 2 else raw


def encode_response(command_field: int, message_id: int, sop_class: str, status: int, comment: str | None,
                    sop_instance: str | None, data_set: bool = False) -> bytes:
    """A C-STORE-RSP, C-ECHO-RSP or C-FIND-RSP command set, byte for byte as pynetdicom encodes it.

    Parameters
    ----------
    command_field : int
        0x8001 (C-STORE-RSP), 0x8030 (C-ECHO-RSP) or 0x8020 (C-FIND-RSP).
    message_id : int
        The request's Message ID.
    sop_class : str
        Affected SOP Class UID.
    status : int
        Status.
    comment : str or None
        Error Comment, if any.
    sop_instance : str or None
        Affected SOP Instance UID (C-STORE only).
    data_set : bool
        Whether a data set follows (a pending C-FIND-RSP's identifier).
    """
    parts = [
        _implicit(0x0002, _text(sop_class, b"\x00")),
        _implicit(0x0100, struct.pack("<H", command_field)),
        _implicit(0x0120, struct.pack("<H", message_id)),
        _implicit(0x0800, struct.pack("<H", DATA_SET if data_set else NO_DATA_SET)),
        _implicit(0x0900, struct.pack("<H", status)),
    ]
    if comment is not None:
        parts.append(_implicit(0x0902, _text(comment, b" ")))
    if sop_instance is not None:
        parts.append(_implicit(0x1000, _text(sop_instance, b"\x00")))
    body = b"".join(parts)
    return _implicit(0x0000, struct.pack("<I", len(body))) + body


def pdata_pdus(encoded: bytes, context_id: int, max_length: int, data_set: bool = False) -> bytes:
    """P-DATA-TF PDU(s) carrying a command set (or a data set), one PDV each, cut to the peer's maximum PDU length.

    Parameters
    ----------
    encoded : bytes
        The encoded command set or data set.
    context_id : int
        Presentation context ID.
    max_length : int
        The peer's maximum PDU length (0: unlimited).
    data_set : bool
        Fragments of a data set (control header bits 0) instead of a command set (bit 0 set).
    """
    size = len(encoded) if max_length == 0 else max(1, max_length - 6)
    kind = 0x00 if data_set else 0x01
    out = []
    for start in range(0, len(encoded), size):
        chunk = encoded[start:start + size]
        last = start + size >= len(encoded)
        item = struct.pack(">IBB", len(chunk) + 2, context_id, kind | (0x02 if last else 0x00)) + chunk
        out.append(b"\x04\x00" + struct.pack(">I", len(item)) + item)
    return b"".join(out)
