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
_US = {0x0100, 0x0110, 0x0120, 0x0700, 0x0800, 0x0900, 0x1020, 0x1021, 0x1022, 0x1023, 0x1031}
_UI = {0x0002, 0x1000}
_AE = {0x0600, 0x1030}
_LO = {0x0902}

#: Command Field values (PS3.7 E.1).
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_MOVE_RQ, C_MOVE_RSP = 0x0021, 0x8021


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
            value = data[pos : pos + length]
            if element in _US and length == 2:
                fields[element] = int.from_bytes(value, "little")
            elif element in _UI:
                fields[element] = value.decode("latin-1").rstrip("\x00 ").strip()
            elif element in _AE or element in _LO:
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
        if (
            isinstance(status, int)
            and 0 <= status <= 0xFFFF
            and (comment is None or (isinstance(comment, str) and comment.isascii() and len(comment) <= 64))
        ):
            return status, comment
    return None, None


def _implicit(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _text(value: str, pad: bytes) -> bytes:
    raw = value.encode("latin-1")
    return raw + pad if len(raw) % 2 else raw


def _response_head(
    command_field: int, message_id: int, sop_class: str, status: int, comment: str | None, data_set: bool
) -> list[bytes]:
    """The elements every response starts with, in tag order, up to Error Comment."""
    parts = [
        _implicit(0x0002, _text(sop_class, b"\x00")),
        _implicit(0x0100, struct.pack("<H", command_field)),
        _implicit(0x0120, struct.pack("<H", message_id)),
        _implicit(0x0800, struct.pack("<H", DATA_SET if data_set else NO_DATA_SET)),
        _implicit(0x0900, struct.pack("<H", status)),
    ]
    if comment is not None:
        parts.append(_implicit(0x0902, _text(comment, b" ")))
    return parts


def encode_response(
    command_field: int,
    message_id: int,
    sop_class: str,
    status: int,
    comment: str | None,
    sop_instance: str | None,
    data_set: bool = False,
) -> bytes:
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
    parts = _response_head(command_field, message_id, sop_class, status, comment, data_set)
    if sop_instance is not None:
        parts.append(_implicit(0x1000, _text(sop_instance, b"\x00")))
    body = b"".join(parts)
    return _implicit(0x0000, struct.pack("<I", len(body))) + body


def _command(parts: list[bytes]) -> bytes:
    body = b"".join(parts)
    return _implicit(0x0000, struct.pack("<I", len(body))) + body


def encode_store_request(
    message_id: int,
    sop_class: str,
    sop_instance: str,
    priority: int = 0,
    move_originator: tuple[str, int] | None = None,
) -> bytes:
    """A C-STORE-RQ command set, byte for byte as pynetdicom encodes it.

    Parameters
    ----------
    message_id : int
        Message ID.
    sop_class, sop_instance : str
        Affected SOP Class and Instance UIDs.
    priority : int
        0 medium, 1 high, 2 low.
    move_originator : (str, int), optional
        Move Originator AE Title and Message ID, for the sub-operations of a C-MOVE.
    """
    parts = [
        _implicit(0x0002, _text(sop_class, b"\x00")),
        _implicit(0x0100, struct.pack("<H", C_STORE_RQ)),
        _implicit(0x0110, struct.pack("<H", message_id)),
        _implicit(0x0700, struct.pack("<H", priority)),
        _implicit(0x0800, struct.pack("<H", DATA_SET)),
        _implicit(0x1000, _text(sop_instance, b"\x00")),
    ]
    if move_originator is not None:
        parts.append(_implicit(0x1030, _text(move_originator[0].strip()[:16], b" ")))
        parts.append(_implicit(0x1031, struct.pack("<H", move_originator[1])))
    return _command(parts)


def encode_retrieve_response(
    command_field: int,
    message_id: int,
    sop_class: str,
    status: int,
    counts: tuple[int | None, int, int, int],
    comment: str | None = None,
    data_set: bool = False,
) -> bytes:
    """A C-MOVE-RSP or C-GET-RSP command set.

    Parameters
    ----------
    command_field : int
        :data:`C_MOVE_RSP` or :data:`C_GET_RSP`.
    message_id : int
        The request's Message ID.
    sop_class : str
        Affected SOP Class UID.
    status : int
        Status.
    counts : tuple
        Number of remaining (None: left out, as in a final response), completed, failed and warning
        sub-operations.
    comment : str, optional
        Error Comment.
    data_set : bool
        Whether an identifier follows (the Failed SOP Instance UID List).
    """
    remaining, completed, failed, warning = counts
    parts = _response_head(command_field, message_id, sop_class, status, comment[:64] if comment else comment, data_set)
    if remaining is not None:
        parts.append(_implicit(0x1020, struct.pack("<H", remaining)))
    parts.append(_implicit(0x1021, struct.pack("<H", completed)))
    parts.append(_implicit(0x1022, struct.pack("<H", failed)))
    parts.append(_implicit(0x1023, struct.pack("<H", warning)))
    return _command(parts)


class CommandReader:
    """Reassembles the command sets of the P-DATA-TF PDUs a peer sends (responses awaited by a sender)."""

    def __init__(self) -> None:
        self._fragments: list[bytes] = []

    def feed(self, body: bytes | bytearray) -> list[dict[int, Any]]:
        """The command sets (as :func:`decode_command` gives them) completed by one P-DATA-TF PDU's body.

        Raises
        ------
        ValueError
            When a PDV or a command set is malformed.
        """
        done: list[dict[int, Any]] = []
        pos = 0
        while pos + 6 <= len(body):
            length = int.from_bytes(body[pos : pos + 4], "big")
            if length < 2 or pos + 4 + length > len(body):
                raise ValueError("PDV length runs past the PDU")
            control = body[pos + 5]
            if control & 0x01:  # data set fragments are not awaited here
                self._fragments.append(bytes(body[pos + 6 : pos + 4 + length]))
                if control & 0x02:
                    done.append(decode_command(b"".join(self._fragments)))
                    self._fragments = []
            pos += 4 + length
        return done


def pdv_buffers(
    data: bytes | memoryview, context_id: int, max_length: int, data_set: bool = True
) -> list[bytes | memoryview]:
    """Like :func:`pdata_pdus`, as a list of headers and slices of ``data`` (no copy of the data)."""
    view = memoryview(data)
    size = len(view) if max_length == 0 else max(1, max_length - 6)
    kind = 0x00 if data_set else 0x01
    out: list[bytes | memoryview] = []
    total = len(view)
    for start in range(0, max(total, 1), size):
        chunk = view[start : start + size]
        last = start + size >= total
        out.append(
            b"\x04\x00"
            + struct.pack(">IIBB", len(chunk) + 6, len(chunk) + 2, context_id, kind | (0x02 if last else 0x00))
        )
        out.append(chunk)
    return out


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
        chunk = encoded[start : start + size]
        last = start + size >= len(encoded)
        item = struct.pack(">IBB", len(chunk) + 2, context_id, kind | (0x02 if last else 0x00)) + chunk
        out.append(b"\x04\x00" + struct.pack(">I", len(item)) + item)
    return b"".join(out)
