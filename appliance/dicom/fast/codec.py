"""C-FIND answers written straight to bytes, as pydicom would write their data sets.

Why: building a pydicom ``Dataset`` per answer and encoding it costs ~0.4 ms (bench/find, 666
answers of a date range); writing an :class:`~appliance.query.Answer`'s plain values takes a few
microseconds. The bytes are the ones ``pydicom.filewriter.write_dataset`` produces for
:meth:`Answer.dataset() <appliance.query.Answer.dataset>` in Implicit or Explicit VR Little
Endian: elements in ascending tag order, Specific Character Set (0008,0005) in its place when the
answer needs one, values padded to even length (NUL for UI, space otherwise), multiple values
joined by backslash, empty values and empty sequences with zero length, the explicit VR header
with a 4-byte length for the VRs that have one.

Text is ASCII almost always and is written as it is; non-ASCII text goes through pydicom's own
character-set encoders (:func:`pydicom.charset.encode_string`, ``PersonName.encode``). Anything
this module does not reproduce exactly (ambiguous VRs, UN for a tag pydicom knows, values pydicom
would convert or refuse, a value longer than a 16-bit length) makes :meth:`AnswerEncoder.encode`
return None: the caller then encodes the data set with pydicom, so the bytes are the same either way.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from pydicom.charset import convert_encodings, default_encoding, encode_string
from pydicom.datadict import dictionary_has_tag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, PersonName

from appliance.query import Answer, Field

_CHARSET_TAG = 0x00080005
#: VRs written as pydicom's ``write_string`` does: one byte per character, default encoding.
_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UR"})
#: Text VRs (character set dependent); those that may hold a backslash are not split into values.
_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT", "PN"})
_ONE_VALUE_VRS = frozenset({"LT", "ST", "UT"})
_DIGITS = re.compile(r"[0-9]+")


class AnswerEncoder:
    """Writes the answers of one query (same fields for all) in one little endian transfer syntax.

    Parameters
    ----------
    fields : tuple of Field
        The answers' fields (:attr:`appliance.query.Matches.fields`).
    implicit : bool
        Implicit VR Little Endian (True) or Explicit VR Little Endian (False).
    """

    def __init__(self, fields: tuple[Field, ...], implicit: bool) -> None:
        self.fields = fields
        self.implicit = implicit
        # Where (0008,0005) goes: before the first field with a higher tag.
        self._charset_at = next((i for i, f in enumerate(fields) if f.tag > _CHARSET_TAG), len(fields))
        self._headers = [self._header(f.tag, f.vr) for f in fields]
        self._charset_header = self._header(_CHARSET_TAG, "CS")

    def _header(self, tag: int, vr: str) -> tuple[bytes, bool] | None:
        """(tag [+ VR], 4-byte length) for a field, or None when its VR is not written here."""
        prefix = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
        if len(vr) != 2 or (vr == "UN" and dictionary_has_tag(tag)):
            return None  # "US or SS" and the like, UN for a known tag: pydicom resolves them
        if self.implicit:
            return prefix, True
        if vr in EXPLICIT_VR_LENGTH_32:
            return prefix + vr.encode("ascii") + b"\x00\x00", True
        return prefix + vr.encode("ascii"), False

    def encode(self, answer: Answer) -> bytes | None:
        """The answer's data set bytes, or None when pydicom has to encode it (see the module docstring).

        Parameters
        ----------
        answer : Answer
            An answer of this query.

        Returns
        -------
        bytes or None
            The encoded data set, Specific Character Set included when the answer needs one.
        """
        charset = answer.charset()
        charset_values = [charset] if isinstance(charset, str) else charset
        encodings: list[str] | None = None
        out = bytearray()
        for i, (field, value) in enumerate(zip(self.fields, answer.values, strict=True)):
            if i == self._charset_at and charset and not _element(out, self._charset_header, _string(charset_values)):
                return None
            vr = field.vr
            if value is None or value == "" or (isinstance(value, list) and not value):
                raw: bytes | None = b""
            elif vr in _TEXT_VRS:
                if encodings is None and not _is_ascii(value):
                    encodings = convert_encodings(charset_values if charset else [default_encoding])
                raw = _text(vr, value, encodings)
            elif vr in _STRING_VRS:
                raw = _string(value)
            elif vr == "UI":
                raw = _uids(value)
            elif vr == "IS":
                raw = _integer(value)
            else:
                raw = None  # a value of another VR (none of the index's keys has one): pydicom's
            if not _element(out, self._headers[i], raw):
                return None
        if (
            self._charset_at == len(self.fields)
            and charset
            and not _element(out, self._charset_header, _string(charset_values))
        ):
            return None
        return bytes(out)


def _element(out: bytearray, header: tuple[bytes, bool] | None, raw: bytes | None) -> bool:
    """Append one element; False when it cannot be written here (no header, no value, too long)."""
    if header is None or raw is None:
        return False
    prefix, long_length = header
    if long_length:
        out += prefix + struct.pack("<I", len(raw))
    elif len(raw) > 0xFFFF:
        return False  # pydicom turns the VR into UN (with a warning)
    else:
        out += prefix + struct.pack("<H", len(raw))
    out += raw
    return True


def _is_ascii(value: Any) -> bool:
    if isinstance(value, str):
        return value.isascii()
    return not isinstance(value, list) or all(not isinstance(v, str) or v.isascii() for v in value)


def _pad(raw: bytes, pad: bytes = b" ") -> bytes:
    return raw + pad if len(raw) % 2 else raw


def _string(value: Any) -> bytes | None:
    """``write_string``: values joined by backslash, default encoding, space padding."""
    text = _joined(value)
    if text is None:
        return None
    try:
        return _pad(text.encode(default_encoding))
    except UnicodeEncodeError:
        return None  # pydicom fails too; its own encoder reports it


def _uids(value: Any) -> bytes | None:
    """``write_UI``: each UID stripped (as ``pydicom.uid.UID`` does), NUL padding."""
    values = [value] if isinstance(value, str) else value
    if not all(isinstance(v, str) for v in values):
        return None
    text = "\\".join(v.strip() for v in values)
    if not text.isascii():
        return None
    return _pad(text.encode("ascii"), b"\x00")


def _integer(value: Any) -> bytes | None:
    """``write_number_string`` for IS: an int, or a string of digits kept as it is."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _pad(str(value).encode("ascii"))
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return _pad(value.encode("ascii"))
    return None  # pydicom converts or rejects it: let it


def _joined(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\\".join(value)
    return None


def _text(vr: str, value: Any, encodings: list[str] | None) -> bytes | None:
    """``write_text`` / ``write_PN``: text in the answer's character set, space padding."""
    text = _joined(value)
    if text is None:
        return None
    if encodings is None or text.isascii():
        if vr == "PN" and "=" in text:
            return None  # pydicom drops empty trailing component groups
        return _pad(text.encode("ascii"))
    parts = [text] if vr in _ONE_VALUE_VRS else text.split("\\")
    if vr == "PN":
        return _pad(b"\\".join(PersonName(p).encode(encodings) for p in parts))
    return _pad(b"\\".join(encode_string(p, encodings) for p in parts))
