"""The indexed values of a received data set, read from its bytes in the pass that checks its structure.

Why not pydicom: on the receive path, ``dcmread`` plus the conversion of the two dozen indexed
values cost about 0.4 ms per instance (measured with 64x64 instances), more than all the other
CPU work of a C-STORE together. Those values are short top-level strings, and for the usual ones
(printable ASCII, encoded with their dictionary VR) pydicom's conversion amounts to a strip and
a split, done here by hand (:func:`_ascii_text`). Every other value (other bytes, another VR, a
number that is not plain digits) is converted by pydicom itself, from the same raw element, so
the record always equals what :func:`appliance.index.extract` gives for ``dcmread``'s data set.
Data sets that pydicom would read differently as a whole (deflated, file meta elements at the
start, an implicit/explicit VR mix-up that pydicom guesses around) are left to the caller's
pydicom path: :func:`instance_record` returns None for them.
"""

from __future__ import annotations

import re

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from appliance.index import InstanceRecord, build_record, text_value
from appliance.validate import scan

#: Indexed top-level attributes: tag -> (keyword, dictionary VR).
INDEXED: dict[int, tuple[str, str]] = {
    0x00080016: ("SOPClassUID", "UI"),
    0x00080018: ("SOPInstanceUID", "UI"),
    0x00080020: ("StudyDate", "DA"),
    0x00080021: ("SeriesDate", "DA"),
    0x00080030: ("StudyTime", "TM"),
    0x00080031: ("SeriesTime", "TM"),
    0x00080050: ("AccessionNumber", "SH"),
    0x00080060: ("Modality", "CS"),
    0x00080090: ("ReferringPhysicianName", "PN"),
    0x00081030: ("StudyDescription", "LO"),
    0x0008103E: ("SeriesDescription", "LO"),
    0x00100010: ("PatientName", "PN"),
    0x00100020: ("PatientID", "LO"),
    0x00100021: ("IssuerOfPatientID", "LO"),
    0x00100030: ("PatientBirthDate", "DA"),
    0x00100040: ("PatientSex", "CS"),
    0x00180015: ("BodyPartExamined", "CS"),
    0x0020000D: ("StudyInstanceUID", "UI"),
    0x0020000E: ("SeriesInstanceUID", "UI"),
    0x00200010: ("StudyID", "SH"),
    0x00200011: ("SeriesNumber", "IS"),
    0x00200013: ("InstanceNumber", "IS"),
    0x00280008: ("NumberOfFrames", "IS"),
}
SPECIFIC_CHARACTER_SET = 0x00080005
_WANTED = frozenset(INDEXED) | {SPECIFIC_CHARACTER_SET}
_VR_BYTES = {tag: vr.encode() for tag, (_, vr) in INDEXED.items()}

#: Printable ASCII only: the bytes every DICOM character set decodes to themselves.
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
_DIGITS = re.compile(r"[0-9]{1,12}")


def instance_record(data: bytes, implicit: bool, little: bool) -> InstanceRecord | None:
    """Check the structure of a received data set and read its indexed attributes.

    Parameters
    ----------
    data : bytes
        The data set as received (no file meta), not deflated.
    implicit, little : bool
        The transfer syntax's VR encoding and byte order.

    Returns
    -------
    InstanceRecord or None
        The record :func:`appliance.index.extract` would give for the decoded data set,
        or None when only pydicom's full reader can tell (the caller then uses it).

    Raises
    ------
    InvalidDataset
        When an element does not fit in the data (as :func:`appliance.validate.check_structure`),
        or when the Study, Series or SOP Instance UID is missing.
    """
    found, odd = scan(data, implicit, little, _WANTED)
    if odd or _read_differently(data, implicit, little):
        return None
    texts: dict[str, str] = {}
    slow: list[int] = []
    for tag, (vr, pos, length) in found.items():
        if tag == SPECIFIC_CHARACTER_SET:
            continue  # only the values pydicom converts below depend on it: ASCII reads the same in all
        keyword, dict_vr = INDEXED[tag]
        text = None
        if vr is None or vr == _VR_BYTES[tag]:
            text = _ascii_text(bytes(data[pos : pos + length]), dict_vr)  # data may be a memoryview
        if text is None:
            slow.append(tag)
        else:
            texts[keyword] = text
    if slow:
        try:
            texts.update(_pydicom_texts(data, found, slow, implicit, little))
        except Exception:
            return None  # let the caller's pydicom path raise its own error for this value
    return build_record(lambda keyword: texts.get(keyword, ""))


def _read_differently(data: bytes, implicit: bool, little: bool) -> bool:
    """Whether ``dcmread`` would not read the data set as the plain element list the walk saw."""
    if len(data) < 6:
        return False
    group = int.from_bytes(data[0:2], "little" if little else "big")
    if group == 0x0002:
        # pydicom reads leading group 2 elements into the file meta, where they may change the transfer syntax.
        return True
    # pydicom guesses implicit or explicit VR from the first element's VR bytes and switches on a mismatch.
    looks_implicit = not (0x40 < data[4] < 0x5B and 0x40 < data[5] < 0x5B)
    return looks_implicit != implicit


def _pydicom_texts(
    data: bytes, found: dict[int, tuple[bytes | None, int, int]], tags: list[int], implicit: bool, little: bool
) -> dict[str, str]:
    """Convert unusual values with pydicom, from the raw elements ``dcmread`` would have made."""
    raw: dict[BaseTag, DataElement | RawDataElement] = {}
    for tag in [*tags, SPECIFIC_CHARACTER_SET]:
        if tag not in found:
            continue
        vr, pos, length = found[tag]
        raw[BaseTag(tag)] = RawDataElement(
            BaseTag(tag),
            vr.decode("latin-1") if vr else None,
            length,
            bytes(data[pos : pos + length]),
            pos,
            implicit,
            little,
        )
    ds = Dataset(raw)
    ds.set_original_encoding(implicit, little)
    return {INDEXED[tag][0]: text_value(ds, INDEXED[tag][0]) for tag in tags}


def _ascii_text(raw: bytes, vr: str) -> str | None:
    """The indexed text of a printable-ASCII value, as pydicom would convert it; None for anything else.

    Each branch mirrors one pydicom 3.0 converter followed by :func:`appliance.index._text`
    (a multi-valued element is joined by backslashes, a single value is stripped).
    """
    if not raw:
        return ""  # pydicom gives '' or None for an empty value: the index keeps ''
    body = raw.rstrip(b"\x00 ")  # every converter drops trailing NULs and spaces
    if not _PRINTABLE.fullmatch(body):
        return None
    text = body.decode("ascii")
    multi = "\\" in text
    if vr in ("CS", "DA", "TM"):  # convert_string: split the stripped string, items kept as they are
        return text if multi else text.strip()
    if vr == "UI":  # convert_UI: each item becomes a UID, which strips it
        return "\\".join(item.strip() for item in text.split("\\")) if multi else text.strip()
    if vr in ("LO", "SH"):  # convert_text: each item loses trailing NULs and spaces
        return "\\".join(item.rstrip(" ") for item in text.split("\\")) if multi else text.strip()
    if vr == "PN":  # convert_PN: PersonName drops empty trailing component groups ("A^B==" -> "A^B")
        names = [_person_name(item) for item in text.split("\\")]
        return "\\".join(names) if multi else names[0].strip()
    if vr == "IS" and not multi and _DIGITS.fullmatch(text.strip()):
        return text.strip()  # IS keeps the original string ("0012"), stripped
    return None


def _person_name(value: str) -> str:
    groups = value.split("=")
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)
