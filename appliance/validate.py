"""Structural check of a received data set: every element fits in the bytes that arrived.

pydicom reads leniently: a value whose declared length runs past the end of
the data is returned short, without an error. A truncated data set (a sender
that died mid-object, a corrupt file) must be refused rather than stored as if
whole, so the element lengths are walked here, nested sequences and
encapsulated pixel data included. The walk reads headers only.

:func:`scan` is the same walk that also notes where a chosen set of top-level
elements lies, so the receive path checks structure and finds the indexed
values in one pass over the bytes (see :mod:`appliance.scan`).
"""

from __future__ import annotations

import struct

from appliance.errors import InvalidDataset

_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_ITEM = (0xFFFE, 0xE000)
_ITEM_END = (0xFFFE, 0xE00D)
_SEQ_END = (0xFFFE, 0xE0DD)
#: Float, double float and integer pixel data: pydicom's ``stop_before_pixels`` stops at the first of them.
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


class _Walker:
    def __init__(self, data: bytes, implicit: bool, little: bool) -> None:
        self.data = data
        self.implicit = implicit
        self.end = "<" if little else ">"
        #: Top-level tags to note (``tag -> (VR or None, value offset, length)`` in :attr:`found`).
        self.wanted: frozenset[int] = frozenset()
        self.found: dict[int, tuple[bytes | None, int, int]] = {}
        #: A wanted element has an undefined length (pydicom would parse it as a sequence).
        self.odd = False

    def fail(self, pos: int, tag: tuple[int, int], what: str) -> InvalidDataset:
        return InvalidDataset(f"data set is corrupt at byte {pos}, element ({tag[0]:04X},{tag[1]:04X}): {what}")

    def tag_at(self, pos: int) -> tuple[int, int]:
        if pos + 8 > len(self.data):
            raise InvalidDataset(f"data set is truncated at byte {pos} (element header cut off)")
        group, elem = struct.unpack_from(self.end + "HH", self.data, pos)
        return group, elem

    def elements(self, pos: int, stop: int, until: tuple[int, int] | None, top: bool = False) -> int:
        """Walk elements from ``pos``; return the position after the last one (or its delimiter).

        With ``top``, wanted elements before the pixel data are noted in :attr:`found`
        (pydicom's ``stop_before_pixels`` reads nothing after them either).
        """
        collect = top and bool(self.wanted)
        while pos < stop:
            tag = self.tag_at(pos)
            if tag[0] == 0xFFFE:
                (length,) = struct.unpack_from(self.end + "I", self.data, pos + 4)
                if until is not None and tag == until:
                    return pos + 8
                raise self.fail(pos, tag, "unexpected delimiter")
            header = 8
            vr = b""
            if self.implicit:
                (length,) = struct.unpack_from(self.end + "I", self.data, pos + 4)
            else:
                vr = self.data[pos + 4 : pos + 6]
                if vr in _LONG_VRS:
                    if pos + 12 > len(self.data):
                        raise self.fail(pos, tag, "header cut off")
                    (length,) = struct.unpack_from(self.end + "I", self.data, pos + 8)
                    header = 12
                elif vr.isalpha() and vr.isupper():
                    (length,) = struct.unpack_from(self.end + "H", self.data, pos + 6)
                else:
                    raise self.fail(pos, tag, f"invalid VR {vr!r}")
            pos += header
            if collect:
                number = (tag[0] << 16) | tag[1]
                if number in self.wanted:
                    if length == _UNDEFINED:
                        self.odd = True
                    # A repeated tag overwrites, as in pydicom's reader (the last one wins).
                    self.found[number] = (vr or None, pos, length)
                elif number in _PIXEL_TAGS:
                    collect = False
            if length == _UNDEFINED:
                if tag == (0x7FE0, 0x0010):
                    pos = self.fragments(pos, tag)
                elif vr in (b"SQ", b"UN") or self.implicit:
                    pos = self.items(pos, tag)
                else:
                    raise self.fail(pos, tag, "undefined length on a VR that does not allow it")
            else:
                if pos + length > stop:
                    raise self.fail(pos, tag, f"value of {length} bytes runs past the end of the data")
                if vr == b"SQ" and length:
                    self.items(pos, tag, pos + length)
                pos += length
        if until is not None:
            raise InvalidDataset(f"data set is truncated: missing delimiter after byte {pos}")
        return pos

    def items(self, pos: int, tag: tuple[int, int], stop: int | None = None) -> int:
        """Items of a sequence: up to its delimiter (undefined length, ``stop`` None) or up to ``stop``."""
        end = len(self.data) if stop is None else stop
        while stop is None or pos < stop:
            item = self.tag_at(pos)
            (length,) = struct.unpack_from(self.end + "I", self.data, pos + 4)
            pos += 8
            if item == _SEQ_END and stop is None:
                return pos
            if item != _ITEM:
                raise self.fail(pos - 8, tag, "sequence holds something other than items")
            if length == _UNDEFINED:
                pos = self.elements(pos, end, _ITEM_END)
            else:
                if pos + length > end:
                    raise self.fail(pos, tag, "item runs past the end of the data" if stop is None
                                    else "item runs past the end of its sequence")
                self.elements(pos, pos + length, None)
                pos += length
        return pos

    def fragments(self, pos: int, tag: tuple[int, int]) -> int:
        """Encapsulated pixel data: items with defined lengths, then the sequence delimiter."""
        while True:
            item = self.tag_at(pos)
            (length,) = struct.unpack_from(self.end + "I", self.data, pos + 4)
            pos += 8
            if item == _SEQ_END:
                return pos
            if item != _ITEM or length == _UNDEFINED:
                raise self.fail(pos - 8, tag, "bad fragment in encapsulated pixel data")
            if pos + length > len(self.data):
                raise self.fail(pos, tag, "pixel data fragment runs past the end of the data")
            pos += length


def check_structure(data: bytes, implicit: bool, little: bool) -> None:
    """Raise :class:`InvalidDataset` unless every element of ``data`` fits in it.

    Parameters
    ----------
    data : bytes
        A data set (no preamble or file meta), not deflated.
    implicit, little : bool
        The transfer syntax's VR encoding and byte order.
    """
    try:
        _Walker(data, implicit, little).elements(0, len(data), None)
    except struct.error as exc:
        raise InvalidDataset(f"data set is truncated: {exc}") from exc


def scan(data: bytes, implicit: bool, little: bool, wanted: frozenset[int]) -> tuple[
        dict[int, tuple[bytes | None, int, int]], bool]:
    """Check the structure like :func:`check_structure` and locate wanted top-level elements.

    Parameters
    ----------
    data : bytes
        A data set (no preamble or file meta), not deflated.
    implicit, little : bool
        The transfer syntax's VR encoding and byte order.
    wanted : frozenset of int
        Tags (``group << 16 | element``) to locate.

    Returns
    -------
    found : dict
        ``tag -> (explicit VR or None, value offset, value length)`` for each wanted
        element before the pixel data; a repeated tag keeps its last occurrence.
    odd : bool
        True when a wanted element has an undefined length.

    Raises
    ------
    InvalidDataset
        With the same message :func:`check_structure` gives, when an element does not fit.
    """
    walker = _Walker(data, implicit, little)
    walker.wanted = wanted
    try:
        walker.elements(0, len(data), None, top=True)
    except struct.error as exc:
        raise InvalidDataset(f"data set is truncated: {exc}") from exc
    return walker.found, walker.odd
