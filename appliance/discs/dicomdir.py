"""A DICOMDIR writer that stays linear in the number of instances and fast for large studies.

pydicom's :class:`~pydicom.fileset.FileSet` builds the right records but looks up every new instance and every
File ID by scanning lists, so writing a File-set takes time that grows with the square of its instances (22 s for
1600 instances; a DVD of CT holds 9000). This module builds the PATIENT / STUDY / SERIES / leaf tree with
dictionaries, gives the File IDs (``PT000000/ST000000/SE000000/IM000000``) and encodes each record once, patching
its two offsets in place.

Records of plain images (the common case) are made straight from the file's bytes: the header is scanned up to
group 0020 and the values are copied as they are in the file (the staged files are always Explicit VR Little
Endian, the encoding of every transfer syntax a media profile allows), with the file's Specific Character Set.
Anything else — other record types, a missing Type 1 value, an unusual header — goes through pydicom's own record
definitions (:data:`pydicom.fileset.DIRECTORY_RECORDERS` and its record-type tables, private names of the pinned
pydicom 3.0). :func:`appliance.discs.fileset.validate_fileset` reads the result back with pydicom's ``FileSet``
and DCMTK.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.charset import default_encoding
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.fileset import (
    _FOUR_LEVEL_SOP_CLASSES,
    _PREFIXES,
    _SINGLE_LEVEL_SOP_CLASSES,
    DIRECTORY_RECORDERS,
    _four_level_record_type,
    _single_level_record_type,
)
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, MediaStorageDirectoryStorage, generate_uid

from appliance import __version__

_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)
_SEQUENCE_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
# Every record starts with (0004,1400) UL, (0004,1410) US and (0004,1420) UL, so its two offsets sit at fixed
# places in the encoded record.
_NEXT_AT = 8
_LOWER_AT = 12 + 10 + 8
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_UNDEFINED = 0xFFFFFFFF
_HEAD_BYTES = 1 << 16
_MAX_HEAD_BYTES = 1 << 20
_NOT_PLAIN_MODALITIES = frozenset({b"RTINTENT", b"RTSEGANN", b"RTRAD", b"PLAN"})

# Header values a plain image's records need: tag -> (VR, Type 1 in a record).
_CHARSET, _SOP_CLASS, _SOP_INSTANCE = 0x00080005, 0x00080016, 0x00080018
#: Keys of :func:`read_fields` for the file's transfer syntax (from its meta group) and its SOP Class / Instance.
TRANSFER_SYNTAX, SOP_CLASS, SOP_INSTANCE = 0x00020010, _SOP_CLASS, _SOP_INSTANCE
#: Key set by :func:`read_fields` when the header holds Encapsulated Document or RT Plan Label, which pydicom's
#: record-type rules look at.
NOT_PLAIN = 0xFFFFFFFE
_NOT_PLAIN_TAGS = frozenset({0x00420011, 0x300A0002})
_LAST_CHECKED = 0x300A0002
_PATIENT = ((0x00100010, b"PN", False), (0x00100020, b"LO", True))
_STUDY = (
    (0x00080020, b"DA", True),
    (0x00080030, b"TM", True),
    (0x00080050, b"SH", False),
    (0x00081030, b"LO", False),
    (0x0020000D, b"UI", True),
    (0x00200010, b"SH", True),
)
_SERIES = ((0x00080060, b"CS", True), (0x0020000E, b"UI", True), (0x00200011, b"IS", True))
_IMAGE = ((0x00200013, b"IS", True),)
_WANTED = frozenset(
    {_CHARSET, _SOP_CLASS, _SOP_INSTANCE, *(t for group in (_PATIENT, _STUDY, _SERIES, _IMAGE) for t, _, _ in group)}
)


@dataclass(frozen=True)
class Entry:
    """One instance to list: its file (as it will be on the disc) and the file's transfer syntax."""

    path: Path
    transfer_syntax: str


@dataclass
class _Node:
    encoded: bytes
    component: str
    children: dict[str, _Node] = field(default_factory=dict)
    offset: int = 0


# -- encoding ----------------------------------------------------------------------------------------------------


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _prefix(kind: str) -> bytes:
    zero = b"\x00\x00\x00\x00"
    return (
        _element(0x00041400, b"UL", zero)
        + _element(0x00041410, b"US", b"\xff\xff")
        + _element(0x00041420, b"UL", zero)
        + _element(0x00041430, b"CS", kind.encode("ascii"))
    )


def _encode(record: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    encoding = record.get("SpecificCharacterSet", default_encoding)
    for tag in sorted(record.keys()):
        write_data_element(fp, record[tag], encoding)
    data: bytes = fp.getvalue()
    return data


def _component(prefix: str, index: int) -> str:
    if index >= 10 ** (8 - len(prefix)):
        raise ValueError(f"more than {10 ** (8 - len(prefix)) - 1} entries in one DICOMDIR folder")
    return f"{prefix}{index:0{8 - len(prefix)}d}"


# -- the fast path: plain images, values copied from the file ------------------------------------------------------


def read_fields(path: Path) -> dict[int, bytes] | None:
    """The raw values of the record tags in an Explicit VR Little Endian file, or None when it is anything else."""
    with open(path, "rb") as fp:
        data = fp.read(_HEAD_BYTES)
        if data[128:132] != b"DICM":
            return None
        complete = len(data) < _HEAD_BYTES
        while True:
            fields = _scan(data, complete)
            if fields is not None or complete or len(data) >= _MAX_HEAD_BYTES:
                return fields if fields else None
            more = fp.read(len(data))
            complete = len(more) < len(data)
            data += more


def _scan(data: bytes, complete: bool) -> dict[int, bytes] | None:
    """Scan the meta group and the data set up to where pydicom's record-type checks look; None if the buffer ends
    first (unless it holds the whole file)."""
    fields: dict[int, bytes] = {}
    pos = 132
    end = len(data)
    transfer_syntax = b""
    in_meta = True
    while pos + 8 <= end:
        group, elem = struct.unpack_from("<HH", data, pos)
        tag = group << 16 | elem
        if in_meta and group != 0x0002:
            in_meta = False
            ts = transfer_syntax.rstrip(b"\x00 ")
            # Implicit VR, big endian and deflated files take pydicom's path.
            if ts in (b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.2", b"1.2.840.10008.1.2.1.99") or not ts:
                return {}
        if tag in _NOT_PLAIN_TAGS:  # an encapsulated document or an RT plan: pydicom's path decides its record
            fields[NOT_PLAIN] = b""
            return fields
        if tag > _LAST_CHECKED:
            return fields
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > end:
                return None
            length = struct.unpack_from("<L", data, pos + 8)[0]
            start = pos + 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            start = pos + 8
        if length == _UNDEFINED:
            skipped = _skip_undefined(data, start)
            if skipped is None:
                return None
            pos = skipped
            continue
        if start + length > end:
            return None
        if group == 0x0002 and elem == 0x0010:
            transfer_syntax = fields[TRANSFER_SYNTAX] = data[start : start + length]
        elif tag in _WANTED:
            fields[tag] = data[start : start + length]
        pos = start + length
    return fields if complete and pos == end else None


def _skip_undefined(data: bytes, pos: int) -> int | None:
    """Position after an undefined-length sequence's delimiter (items of any length, nested), or None."""
    end = len(data)
    while pos + 8 <= end:
        group, elem, length = struct.unpack_from("<HHL", data, pos)
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            return pos
        if (group, elem) != (0xFFFE, 0xE000):
            return None
        if length != _UNDEFINED:
            pos += length
            continue
        while True:  # an undefined-length item: elements until the item delimiter
            if pos + 8 > end:
                return None
            group, elem = struct.unpack_from("<HH", data, pos)
            if (group, elem) == (0xFFFE, 0xE00D):
                pos += 8
                break
            vr = data[pos + 4 : pos + 6]
            if vr in _LONG_VRS:
                length = struct.unpack_from("<L", data, pos + 8)[0]
                pos += 12
            else:
                length = struct.unpack_from("<H", data, pos + 6)[0]
                pos += 8
            if length == _UNDEFINED:
                nested = _skip_undefined(data, pos)
                if nested is None:
                    return None
                pos = nested
            else:
                pos += length
    return None


def _plain_records(fields: dict[int, bytes]) -> tuple[list[str], list[bytes]] | None:
    """Keys and encoded PATIENT/STUDY/SERIES/IMAGE records (without the leaf's reference), or None."""
    sop_class = fields.get(_SOP_CLASS, b"").rstrip(b"\x00 ").decode("ascii", "replace")
    modality = fields.get(0x00080060, b"").strip(b"\x00 ")
    if (
        sop_class in _FOUR_LEVEL_SOP_CLASSES
        or sop_class in _SINGLE_LEVEL_SOP_CLASSES
        or not sop_class
        or modality in _NOT_PLAIN_MODALITIES
        or NOT_PLAIN in fields
        or not fields.get(_SOP_INSTANCE, b"").strip(b"\x00 ")
    ):
        return None
    charset = fields.get(_CHARSET)
    records = []
    for kind, spec in (("PATIENT", _PATIENT), ("STUDY", _STUDY), ("SERIES", _SERIES), ("IMAGE", _IMAGE)):
        parts = [_prefix(kind)]
        if charset is not None:
            parts.append(_element(_CHARSET, b"CS", charset))
        for tag, vr, required in spec:
            value = fields.get(tag)
            if required and (value is None or not value.strip(b"\x00 \\")):
                return None  # pydicom's path reports it or makes a stand-in value
            parts.append(_element(tag, vr, value or b""))
        records.append(b"".join(parts))
    keys = [fields[t].strip(b"\x00 ").decode("latin-1") for t in (0x00100020, 0x0020000D, 0x0020000E, _SOP_INSTANCE)]
    return keys, records


def _leaf_reference(file_id: list[str], sop_class: bytes, sop_instance: bytes, transfer_syntax: str) -> bytes:
    return (
        _element(0x00041500, b"CS", "\\".join(file_id).encode("ascii"))
        + _element(0x00041510, b"UI", sop_class.rstrip(b"\x00 "))
        + _element(0x00041511, b"UI", sop_instance.rstrip(b"\x00 "))
        + _element(0x00041512, b"UI", transfer_syntax.encode("ascii"))
    )


# -- building the tree ---------------------------------------------------------------------------------------------


def _insert(root: _Node, keys: list[str], records: list[bytes], prefixes: Sequence[str]) -> tuple[list[str], _Node]:
    node, path = root, []
    for level, key in enumerate(keys):
        child = node.children.get(key)
        if child is None:
            child = _Node(records[level], _component(prefixes[level], len(node.children)))
            node.children[key] = child
        path.append(child.component)
        node = child
    return path, node


def _add_fast(root: _Node, entry: Entry) -> list[str] | None:
    fields = read_fields(entry.path)
    plain = _plain_records(fields) if fields else None
    if fields is None or plain is None:
        return None
    keys, records = plain
    path, leaf = _insert(root, keys, records, ("PT", "ST", "SE", "IM"))
    # The reference elements (0004,15xx) sort before the leaf's own values: splice them in after the prefix.
    head = len(_prefix("IMAGE"))
    reference = _leaf_reference(path, fields[_SOP_CLASS], fields[_SOP_INSTANCE], entry.transfer_syntax)
    leaf.encoded = leaf.encoded[:head] + reference + leaf.encoded[head:]
    return path


def _record(kind: str, ds: Dataset) -> Dataset:
    record: Dataset = DIRECTORY_RECORDERS[kind](ds)
    record.add_new(0x00041400, "UL", 0)  # Offset of the Next Directory Record
    record.add_new(0x00041410, "US", 0xFFFF)  # Record In-use Flag
    record.add_new(0x00041420, "UL", 0)  # Offset of Referenced Lower-Level Directory Entity
    record.add_new(0x00041430, "CS", kind)  # Directory Record Type
    charset = ds.get((0x0008, 0x0005))
    if charset is not None:
        record.add_new(0x00080005, "CS", charset.value)
    return record


def _add_general(root: _Node, entry: Entry, fix: Callable[[Dataset, ValueError], bool] | None) -> list[str]:
    ds = dcmread(entry.path, stop_before_pixels=True)
    for _ in range(8):
        try:
            return _add_dataset(root, ds, entry.transfer_syntax)
        except ValueError as exc:
            if fix is None or not fix(ds, exc):
                raise
    raise ValueError(f"instance {ds.get('SOPInstanceUID', '?')} lacks too many values for its directory records")


def _add_dataset(root: _Node, ds: Dataset, transfer_syntax: str) -> list[str]:
    single = _single_level_record_type(ds)
    kinds = [single] if single != "PATIENT" else ["PATIENT", "STUDY", "SERIES", _four_level_record_type(ds)]
    keys = (
        [f"{single}:{ds.SOPInstanceUID}"]
        if single != "PATIENT"
        else [str(ds.get(k, "")) for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    )
    # Records are made only for nodes that do not exist yet, all of them before the tree changes, so a missing
    # value leaves the tree as it was.
    missing = []
    probe: _Node | None = root
    for level, key in enumerate(keys):
        probe = probe.children.get(key) if probe is not None else None
        if probe is None:
            missing.append(level)
    made = {level: _record(kinds[level], ds) for level in missing}
    path: list[str] = []
    node = root
    prefixes = [_PREFIXES.get(kind, "IM") for kind in kinds]
    for level, key in enumerate(keys):
        child = node.children.get(key)
        if child is None:
            record = made[level]
            component = _component(prefixes[level], len(node.children))
            if level == len(keys) - 1:
                record.add_new(0x00041500, "CS", [*path, component])  # Referenced File ID
                record.add_new(0x00041510, "UI", ds.SOPClassUID)
                record.add_new(0x00041511, "UI", ds.SOPInstanceUID)
                record.add_new(0x00041512, "UI", transfer_syntax)
            child = _Node(_encode(record), component)
            node.children[key] = child
        path.append(child.component)
        node = child
    return path


def build_dicomdir(
    fileset_id: str, entries: Sequence[Entry], fix: Callable[[Dataset, ValueError], bool] | None = None
) -> tuple[bytes, list[list[str]]]:
    """Make the DICOMDIR of some instances and the File ID each gets.

    Parameters
    ----------
    fileset_id : str
        File-set ID (CS, at most 16 characters of ``A-Z 0-9 _``).
    entries : sequence of Entry
        Instances in the order they should be listed (patients, studies and series are grouped by their IDs, in
        order of first appearance).
    fix : callable, optional
        Called when pydicom cannot make a record (a Type 1 value is missing) with the header and the error; it may
        supply the value and return True to try again.

    Returns
    -------
    bytes
        The DICOMDIR file.
    list of list of str
        The File ID components of each entry, in order.

    Raises
    ------
    ValueError
        A record cannot be made.
    """
    root = _Node(b"", "")
    file_ids = [_add_fast(root, entry) or _add_general(root, entry, fix) for entry in entries]
    records: list[_Node] = []

    def flatten(node: _Node) -> None:
        for child in node.children.values():
            records.append(child)
            flatten(child)

    flatten(root)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["appliance", __version__])
    meta.ImplementationVersionName = f"APPLIANCE_{__version__}"[:16]
    head = DicomBytesIO()
    head.is_little_endian = True
    head.is_implicit_VR = False
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    head.write(_element(0x00041130, b"CS", fileset_id.encode("ascii")))
    first_at = len(head.getvalue()) + 8  # the value of (0004,1200)
    head.write(
        _element(0x00041200, b"UL", b"\x00" * 4)
        + _element(0x00041202, b"UL", b"\x00" * 4)
        + _element(0x00041212, b"US", b"\x00\x00")
    )
    head.write(struct.pack("<HH2sHL", 0x0004, 0x1220, b"SQ", 0, _UNDEFINED))
    position = len(head.getvalue())
    for node in records:
        node.offset = position
        position += 8 + len(node.encoded)
    body = bytearray(head.getvalue())
    roots = list(root.children.values())
    if roots:
        struct.pack_into("<L", body, first_at, roots[0].offset)
        struct.pack_into("<L", body, first_at + 12, roots[-1].offset)
    _patch_offsets(root)
    for node in records:
        body += _ITEM + struct.pack("<L", len(node.encoded)) + node.encoded
    body += _SEQUENCE_END
    return bytes(body), file_ids


def _patch_offsets(node: _Node) -> None:
    children = list(node.children.values())
    for i, child in enumerate(children):
        data = bytearray(child.encoded)
        struct.pack_into("<L", data, _NEXT_AT, children[i + 1].offset if i + 1 < len(children) else 0)
        struct.pack_into("<L", data, _LOWER_AT, next(iter(child.children.values())).offset if child.children else 0)
        child.encoded = bytes(data)
        _patch_offsets(child)


def write_dicomdir(
    root: Path, fileset_id: str, entries: Sequence[Entry], fix: Callable[[Dataset, ValueError], bool] | None = None
) -> list[list[str]]:
    """Write ``root/DICOMDIR`` (see :func:`build_dicomdir`) and return each entry's File ID components."""
    data, file_ids = build_dicomdir(fileset_id, entries, fix)
    (root / "DICOMDIR").write_bytes(data)
    return file_ids
