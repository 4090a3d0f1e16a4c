"""Structural check of a received data set: every element fits in the bytes that arrived.

pydicom reads leniently: a value whose declared length runs past the end of
the data is returned short, without an error. A truncated data set (a sender
that died mid-object, a corrupt file) must be refused rather than stored as if
whole, so the element lengths are walked here, nested sequences and
encapsulated pixel data included. The walk reads headers only.

The walk is iterative (an explicit stack, no recursion) and refuses sequences
nested deeper than :data:`MAX_DEPTH`: pydicom reads and writes nested sequences
recursively, so a small hostile instance nested thousands of levels deep would
otherwise be stored and later exhaust memory in every full re-encode (disc
authoring, C-GET/C-MOVE transcoding). Every sequence is walked, in both VR
encodings: in Implicit VR, a defined-length element is walked as a sequence
when the dictionary says SQ, and tried as one when it is private (or, in
Explicit VR, UN) and its value starts with an item, as pydicom may parse it so.

:func:`scan` is the same walk that also notes where a chosen set of top-level
elements lies, so the receive path checks structure and finds the indexed
values in one pass over the bytes (see :mod:`appliance.scan`).
"""

from __future__ import annotations

import mmap
import struct
import zlib
from pathlib import Path

from pydicom.datadict import dictionary_VR
from pydicom.uid import UID

from appliance.errors import InvalidDataset

#: Deepest nesting of sequences accepted (a sequence inside an item of a top-level sequence is at depth 2).
#: Real objects (structured reports, RT plans, enhanced multi-frame) stay well below 16.
MAX_DEPTH = 32

_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_ITEM = (0xFFFE, 0xE000)
_ITEM_END = (0xFFFE, 0xE00D)
_SEQ_END = (0xFFFE, 0xE0DD)
#: Float, double float and integer pixel data: pydicom's ``stop_before_pixels`` stops at the first of them.
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})

#: Largest inflated data set of a deflated transfer syntax checked (a deflate bomb is refused, not inflated).
MAX_INFLATED = 256 * 1024 * 1024

_ELEMENTS = 0
_ITEMS = 1


class TooDeep(InvalidDataset):
    """Sequences are nested deeper than :data:`MAX_DEPTH`."""


class _Frame:
    """One level of the walk: the elements of a data set or item, or the items of a sequence."""

    __slots__ = ("after", "collect", "kind", "limit", "pos", "speculative", "stop", "tag", "until")

    def __init__(
        self,
        kind: int,
        pos: int,
        stop: int | None,
        tag: tuple[int, int],
        until: tuple[int, int] | None = None,
        after: int | None = None,
        speculative: bool = False,
        collect: bool = False,
        limit: int = 0,
    ) -> None:
        self.kind = kind
        self.pos = pos
        #: Elements: end of the enclosing value; items: end of a defined-length sequence, None for a delimited one.
        self.stop = stop
        #: Items of a delimited sequence: the end of the value that encloses it.
        self.limit = limit if stop is None else stop
        self.tag = tag
        #: Elements: the delimiter that ends them (an item's), None when they run to ``stop``.
        self.until = until
        #: Where the parent goes on when this frame ends (a defined length), None: where this frame ended.
        self.after = after
        #: A private or UN value tried as a sequence: if it is not one, it is opaque bytes, not an error.
        self.speculative = speculative
        #: Note wanted elements (top level only).
        self.collect = collect


class _Walker:
    def __init__(self, data: bytes | mmap.mmap, implicit: bool, little: bool) -> None:
        self.data = data
        self.implicit = implicit
        self.end = "<" if little else ">"
        self.item_bytes = struct.pack(self.end + "HH", *_ITEM)
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

    def walk(self, top: bool, start: int = 0) -> None:
        """Walk the data set from ``start`` with an explicit stack; raise :class:`InvalidDataset` on a fault."""
        stack = [_Frame(_ELEMENTS, start, len(self.data), (0, 0), collect=top and bool(self.wanted))]
        depth = 0
        while stack:
            frame = stack[-1]
            try:
                done = self.step_elements(frame) if frame.kind == _ELEMENTS else self.step_items(frame)
            except TooDeep:
                raise
            except (InvalidDataset, struct.error):
                # Inside a value only tried as a sequence: it is opaque bytes, go on after it.
                while stack and not stack[-1].speculative:
                    depth -= stack.pop().kind
                if not stack:
                    raise
                depth -= stack.pop().kind  # the parent already points past the value
                continue
            if isinstance(done, _Frame):
                if done.kind == _ITEMS:
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise TooDeep(
                            f"data set has sequences nested deeper than {MAX_DEPTH} levels, at byte"
                            f" {done.pos}, element ({done.tag[0]:04X},{done.tag[1]:04X})"
                        )
                stack.append(done)
                continue
            stack.pop()
            depth -= frame.kind
            if stack:
                stack[-1].pos = done if frame.after is None else frame.after

    def step_elements(self, frame: _Frame) -> _Frame | int:
        """Read elements up to the next sequence (a frame to enter) or to their end (its position)."""
        pos, stop, until = frame.pos, frame.stop, frame.until
        assert stop is not None
        data, end, implicit = self.data, self.end, self.implicit
        while pos < stop:
            tag = self.tag_at(pos)
            if tag[0] == 0xFFFE:
                if until is not None and tag == until:
                    return pos + 8
                raise self.fail(pos, tag, "unexpected delimiter")
            header = 8
            vr = b""
            if implicit:
                (length,) = struct.unpack_from(end + "I", data, pos + 4)
            else:
                vr = bytes(data[pos + 4 : pos + 6])  # data may be a memoryview (a STOW-RS part)
                if vr in _LONG_VRS:
                    if pos + 12 > len(data):
                        raise self.fail(pos, tag, "header cut off")
                    (length,) = struct.unpack_from(end + "I", data, pos + 8)
                    header = 12
                elif vr.isalpha() and vr.isupper():
                    (length,) = struct.unpack_from(end + "H", data, pos + 6)
                else:
                    raise self.fail(pos, tag, f"invalid VR {vr!r}")
            pos += header
            if frame.collect:
                number = (tag[0] << 16) | tag[1]
                if number in self.wanted:
                    if length == _UNDEFINED:
                        self.odd = True
                    # A repeated tag overwrites, as in pydicom's reader (the last one wins).
                    self.found[number] = (vr or None, pos, length)
                elif number in _PIXEL_TAGS:
                    frame.collect = False
            if length == _UNDEFINED:
                if tag == (0x7FE0, 0x0010):
                    pos = self.fragments(pos, tag)
                    continue
                if vr in (b"SQ", b"UN") or implicit:
                    frame.pos = pos  # moved on by the items frame when it ends
                    return _Frame(_ITEMS, pos, None, tag, limit=stop)
                raise self.fail(pos, tag, "undefined length on a VR that does not allow it")
            if pos + length > stop:
                raise self.fail(pos, tag, f"value of {length} bytes runs past the end of the data")
            if length and (
                vr == b"SQ" or ((implicit or vr == b"UN") and length >= 8 and data[pos : pos + 4] == self.item_bytes)
            ):
                frame.pos = pos + length
                if vr == b"SQ" or (implicit and not tag[0] & 1 and _dictionary_sq(tag)):
                    return _Frame(_ITEMS, pos, pos + length, tag, after=pos + length)
                if tag[0] & 1 or vr == b"UN":
                    return _Frame(_ITEMS, pos, pos + length, tag, after=pos + length, speculative=True)
            pos += length
        if until is not None:
            raise InvalidDataset(f"data set is truncated: missing delimiter after byte {pos}")
        return pos

    def step_items(self, frame: _Frame) -> _Frame | int:
        """Read item headers up to the next non-empty item (a frame for its elements) or the sequence's end."""
        pos, stop = frame.pos, frame.stop
        end = frame.limit
        while stop is None or pos < stop:
            item = self.tag_at(pos)
            (length,) = struct.unpack_from(self.end + "I", self.data, pos + 4)
            pos += 8
            if item == _SEQ_END and stop is None:
                return pos
            if item != _ITEM:
                raise self.fail(pos - 8, frame.tag, "sequence holds something other than items")
            if length == _UNDEFINED:
                frame.pos = pos
                return _Frame(_ELEMENTS, pos, end, frame.tag, until=_ITEM_END)
            if pos + length > end:
                raise self.fail(
                    pos,
                    frame.tag,
                    "item runs past the end of the data" if stop is None else "item runs past the end of its sequence",
                )
            if length:
                frame.pos = pos + length
                return _Frame(_ELEMENTS, pos, pos + length, frame.tag, after=pos + length)
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


def _dictionary_sq(tag: tuple[int, int]) -> bool:
    try:
        return dictionary_VR((tag[0] << 16) | tag[1]) == "SQ"
    except KeyError:
        return False


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
        _Walker(data, implicit, little).walk(top=False)
    except struct.error as exc:
        raise InvalidDataset(f"data set is truncated: {exc}") from exc


def scan(
    data: bytes, implicit: bool, little: bool, wanted: frozenset[int]
) -> tuple[dict[int, tuple[bytes | None, int, int]], bool]:
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
        walker.walk(top=True)
    except struct.error as exc:
        raise InvalidDataset(f"data set is truncated: {exc}") from exc
    return walker.found, walker.odd


def inflate(data: bytes | memoryview | mmap.mmap, limit: int = MAX_INFLATED) -> bytes:
    """Inflate a deflated data set (raw deflate, PS3.5 A.5), refusing more than ``limit`` bytes.

    Raises
    ------
    InvalidDataset
        The data is not deflate data, or it inflates to more than ``limit`` bytes.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InvalidDataset(f"deflated data set cannot be inflated: {exc}") from exc
    if len(out) > limit:
        raise InvalidDataset(f"deflated data set inflates to more than {limit // (1024 * 1024)} MB")
    return out


def check_file(path: Path) -> None:
    """Check the data set of a stored Part 10 file like :func:`check_structure`, before a full decode.

    pydicom decodes nested sequences recursively, so every full read of a stored instance (disc
    authoring, retrieve, export) checks it first: an instance stored before the depth limit existed
    fails that step with a reason instead of exhausting memory. The file is mapped, not read.

    Raises
    ------
    InvalidDataset
        No preamble and file meta group, or a data set that :func:`check_structure` refuses.
    """
    if path.stat().st_size == 0:  # mmap refuses empty files
        raise InvalidDataset("the stored file is empty")
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        pos, syntax = _file_meta_end(data)
        ts = UID(syntax)
        try:
            if ts.is_deflated:
                inflated = inflate(data[pos:])
                _Walker(inflated, False, True).walk(top=False)
            else:
                _Walker(data, ts.is_implicit_VR, ts.is_little_endian).walk(top=False, start=pos)
        except struct.error as exc:
            raise InvalidDataset(f"data set is truncated: {exc}") from exc


def _file_meta_end(data: mmap.mmap) -> tuple[int, str]:
    """Offset of the data set after the preamble and the file meta group, and the transfer syntax UID."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InvalidDataset("file has no DICOM preamble")
    pos = 132
    syntax = ""
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", data, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8
        if element == 0x0010:
            syntax = data[pos : pos + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos += length
    if not syntax:
        raise InvalidDataset("file meta has no transfer syntax")
    return pos, syntax
