"""HL7 v2 ER7 ("pipe") messages: character set, decoding, segments, fields and escape sequences.

hl7apy parses these too, but it keeps escape sequences (``M\\S\\ller`` stays as is),
reads LF-separated messages as a lone MSH and takes a few milliseconds per
message; the worklist needs none of its validation. This reader is small and
total: it normalises line ends, decodes in the MSH-18 character set, and gives
every field, repetition, component and subcomponent by number, unescaped.

Values follow HL7's null convention: :meth:`Segment.value` returns ``None`` for an
empty (not sent) value and ``""`` for the HL7 null ``""`` (clear the value).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

#: MSH-18 value -> (Python codec, DICOM Specific Character Set); HL7 table 0211 and
#: dcm4che's HL7Charset. ``""`` as DICOM value: the default repertoire (ASCII).
CHARSETS: dict[str, tuple[str, str]] = {
    "ASCII": ("ascii", ""),
    "8859/1": ("iso8859-1", "ISO_IR 100"),
    "8859/2": ("iso8859-2", "ISO_IR 101"),
    "8859/3": ("iso8859-3", "ISO_IR 109"),
    "8859/4": ("iso8859-4", "ISO_IR 110"),
    "8859/5": ("iso8859-5", "ISO_IR 144"),
    "8859/6": ("iso8859-6", "ISO_IR 127"),
    "8859/7": ("iso8859-7", "ISO_IR 126"),
    "8859/8": ("iso8859-8", "ISO_IR 138"),
    "8859/9": ("iso8859-9", "ISO_IR 148"),
    "8859/15": ("iso8859-15", "ISO_IR 203"),
    "UNICODE UTF-8": ("utf-8", "ISO_IR 192"),
    "UNICODE": ("utf-8", "ISO_IR 192"),
    "UTF-8": ("utf-8", "ISO_IR 192"),
    "GB 18030-2000": ("gb18030", "GB18030"),
    "KS X 1001": ("euc_kr", "\\ISO 2022 IR 149"),
}

#: Python codec -> DICOM Specific Character Set, for ``default_charset`` given as a codec name.
_CODEC_TO_DICOM = {codec: dicom for codec, dicom in CHARSETS.values()}


class ER7Error(ValueError):
    """The bytes are not an HL7 v2 message, or cannot be decoded.

    Parameters
    ----------
    message : str
        What is wrong.
    location : str
        ERR location (``MSH^1^18``) when a field is at fault.
    """

    def __init__(self, message: str, location: str = "", code: int = 100) -> None:
        super().__init__(message)
        self.location = location
        #: HL7 error code: 100 not a message (ACK AR); 102/103 undecodable content (ACK AE).
        self.code = code


@dataclass(frozen=True)
class Charset:
    """A message character set: its HL7 name, Python codec and DICOM term."""

    name: str
    codec: str
    dicom: str


def resolve_charset(name: str) -> Charset:
    """Resolve an MSH-18 value or a Python codec name.

    Raises
    ------
    ER7Error
        When the name is neither.
    """
    key = name.strip().upper()
    if key in CHARSETS:
        codec, dicom = CHARSETS[key]
        return Charset(key, codec, dicom)
    try:
        codec = codecs.lookup(name.strip()).name
    except LookupError:
        raise ER7Error(f"unknown character set {name!r}", "MSH^1^18", 103) from None
    # A codec with no DICOM term (cp1252...) is answered in UTF-8, which holds any text.
    return Charset(name.strip(), codec, _CODEC_TO_DICOM.get(codec, "ISO_IR 192"))


def msh_field(raw: bytes, number: int) -> bytes:
    """One MSH field read from the raw bytes (MSH is ASCII whatever MSH-18 says)."""
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 8:
        return b""
    end = len(raw)
    for terminator in (b"\r", b"\n"):
        i = raw.find(terminator, start)
        if 0 <= i < end:
            end = i
    segment = raw[start:end]
    sep = segment[3:4]
    fields = segment.split(sep)
    # fields[0] is "MSH" and fields[1] MSH-2: MSH-n is fields[n - 1].
    return fields[number - 1] if 1 < number <= len(fields) else b""


def decode(raw: bytes, default_charset: str) -> tuple[str, Charset]:
    """Decode a message in its MSH-18 character set (``default_charset`` when MSH-18 is empty).

    Raises
    ------
    ER7Error
        For an unknown character set or bytes that are not valid in it.
    """
    declared = msh_field(raw, 18).split(b"~")[0].split(b"^")[0].decode("ascii", "replace").strip()
    charset = resolve_charset(declared or default_charset)
    try:
        text = raw.decode(charset.codec)
    except UnicodeDecodeError as exc:
        raise ER7Error(
            f"message bytes are not valid {charset.name} (byte {exc.start}): set MSH-18 or [hl7] default_charset",
            "MSH^1^18",
            102,
        ) from None
    return text, charset


@dataclass(frozen=True)
class Separators:
    """The encoding characters of MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


#: Control characters that a ``\\Xhh\\`` escape may not produce (tab, CR and LF are text).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def unescape(value: str, seps: Separators, codec: str = "latin-1") -> str:
    """Replace HL7 escape sequences (``\\F\\``, ``\\S\\``, ``\\T\\``, ``\\R\\``, ``\\E\\``, ``\\.br\\``,
    ``\\Xhh\\``...).

    Highlighting (``\\H\\``, ``\\N\\``), character-set switches and unknown
    formatting commands are dropped; an unterminated escape is kept as text. Control characters other than
    tab, CR and LF that a hex escape spells (``\\X00\\``) are dropped.
    """
    esc = seps.escape
    if not esc or esc not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c != esc:
            out.append(c)
            i += 1
            continue
        j = value.find(esc, i + 1)
        if j < 0:
            out.append(value[i:])
            break
        seq = value[i + 1 : j]
        i = j + 1
        simple = {"F": seps.field, "S": seps.component, "T": seps.subcomponent, "R": seps.repetition, "E": esc}.get(seq)
        if simple is not None:
            out.append(simple)
        elif seq in (".br", ".sp") or seq.startswith(".sp"):
            out.append("\r\n")
        elif seq.startswith("X") and len(seq) % 2 == 1:
            try:
                # Control characters (NUL above all) would reach names, C-FIND answers and logs: dropped.
                out.append(_CONTROL.sub("", bytes.fromhex(seq[1:]).decode(codec, "replace")))
            except ValueError:
                out.append(esc + seq + esc)
        elif seq in ("H", "N") or seq[:1] in ("C", "M", "Z") or seq.startswith("."):
            continue
        else:
            out.append(esc + seq + esc)
    return "".join(out)


class Segment:
    """One segment, fields numbered as in the standard (``MSH-3`` is ``seg.value(3)``)."""

    __slots__ = ("_codec", "fields", "name", "seps")

    def __init__(self, name: str, fields: list[str], seps: Separators, codec: str) -> None:
        self.name = name
        self.fields = fields
        self.seps = seps
        self._codec = codec

    def raw(self, field: int) -> str:
        """A field as sent (escaped), ``""`` when absent."""
        return self.fields[field] if 0 < field < len(self.fields) else ""

    def repetitions(self, field: int) -> list[str]:
        """The raw repetitions of a field."""
        raw = self.raw(field)
        if self.name == "MSH" and field in (1, 2):
            return [raw]
        return raw.split(self.seps.repetition) if raw else []

    def value(self, field: int, component: int = 1, subcomponent: int = 1, repetition: int = 0) -> str | None:
        """One unescaped value; ``None`` when not sent, ``""`` for the HL7 null ``""``.

        Parameters
        ----------
        field, component, subcomponent : int
            Positions, counted from 1.
        repetition : int
            Repetition, counted from 0.
        """
        if self.name == "MSH" and field in (1, 2):
            return self.raw(field)
        reps = self.repetitions(field)
        if repetition >= len(reps):
            return None
        rep = reps[repetition]
        if rep == '""':
            return ""
        comps = rep.split(self.seps.component)
        if component > len(comps):
            return None
        comp = comps[component - 1]
        subs = comp.split(self.seps.subcomponent)
        if subcomponent > len(subs):
            return None
        text = subs[subcomponent - 1]
        if text == '""':
            return ""
        if not text:
            return None
        return unescape(text, self.seps, self._codec).strip() or None

    def text(self, field: int, component: int = 1, subcomponent: int = 1, repetition: int = 0) -> str:
        """Like :meth:`value`, with ``""`` for both empty and null."""
        return self.value(field, component, subcomponent, repetition) or ""

    def components(self, field: int, repetition: int = 0) -> list[str]:
        """Every component of a field repetition, unescaped (HL7 null read as empty)."""
        reps = self.repetitions(field)
        if repetition >= len(reps) or reps[repetition] == '""':
            return []
        return [unescape(c, self.seps, self._codec).strip() for c in reps[repetition].split(self.seps.component)]

    def __repr__(self) -> str:
        return f"<Segment {self.name}>"


@dataclass
class Message:
    """A parsed message: its segments in order."""

    segments: list[Segment]
    seps: Separators
    charset: Charset

    @property
    def msh(self) -> Segment:
        """The message header."""
        return self.segments[0]

    def first(self, name: str) -> Segment | None:
        """The first segment with this name."""
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def all(self, name: str) -> list[Segment]:
        """Every segment with this name, in order."""
        return [s for s in self.segments if s.name == name]

    @property
    def message_type(self) -> tuple[str, str]:
        """(MSH-9.1, MSH-9.2), upper case: ``("ORM", "O01")``."""
        return self.msh.text(9, 1).upper(), self.msh.text(9, 2).upper()

    @property
    def control_id(self) -> str:
        """MSH-10."""
        return self.msh.text(10)

    @property
    def version(self) -> str:
        """MSH-12.1."""
        return self.msh.text(12)


def split_segments(text: str) -> list[str]:
    """Segments of a message: CR, CRLF and LF all end a segment (senders differ)."""
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    return [s for s in (line.strip("\x00 \t") for line in text.split("\r")) if s]


def parse(text: str, charset: Charset | None = None) -> Message:
    """Parse a decoded ER7 message.

    Raises
    ------
    ER7Error
        When the text does not start with a valid MSH segment.
    """
    lines = split_segments(text.lstrip("\ufeff"))
    if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
        raise ER7Error("not an HL7 v2 message: no MSH segment")
    head = lines[0]
    field_sep = head[3]
    enc = head[4:].split(field_sep, 1)[0]
    if field_sep.isalnum() or len(enc) < 2 or field_sep in enc:
        raise ER7Error("not an HL7 v2 message: invalid encoding characters in MSH-1/MSH-2", "MSH^1^2")
    seps = Separators(field_sep, enc[0], enc[1], enc[2] if len(enc) > 2 else "", enc[3] if len(enc) > 3 else "&")
    charset = charset or resolve_charset("ASCII")
    segments = []
    for line in lines:
        parts = line.split(field_sep)
        name = parts[0].strip().upper()
        if len(name) != 3 or not name.isalnum():
            raise ER7Error(f"not an HL7 v2 message: bad segment name {name[:10]!r}")
        if name == "MSH":
            parts = ["MSH", field_sep, *parts[1:]]
        segments.append(Segment(name, parts, seps, charset.codec))
    msg = Message(segments, seps, charset)
    if not msg.msh.text(9, 1):
        raise ER7Error("MSH-9 (message type) is empty", "MSH^1^9")
    return msg
