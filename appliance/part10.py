"""The preamble and file meta group of a stored Part 10 file, encoded by hand.

Why by hand: building a ``FileMetaDataset`` and writing it with pydicom cost about 0.25 ms per
received instance, while the group is six short elements whose encoding (PS3.10 7.1, explicit
VR little endian) fits in a few lines. The bytes are the ones pydicom's
``write_file_meta_info(enforce_standard=True)`` writes for the same values (a test compares them).
"""

from __future__ import annotations

import struct

from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

_PREAMBLE = b"\x00" * 128 + b"DICM"
_VERSION = b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"  # (0002,0001) OB 00\01


def _element(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, implementation_version: str, source_ae: str = ""
) -> bytes:
    """Preamble, ``DICM`` and the file meta group for a data set stored as received.

    Parameters
    ----------
    sop_class_uid, sop_instance_uid, transfer_syntax : str
        Media Storage SOP Class and Instance UIDs and the transfer syntax of the data set.
    implementation_version : str
        Implementation Version Name (at most 16 characters).
    source_ae : str, optional
        Source Application Entity Title: the AE title that sent the instance; left out when empty.

    Returns
    -------
    bytes
        What goes before the data set in the file.
    """
    # pydicom's UID() strips surrounding whitespace; UIDs are padded with NUL, text with a space.
    body = b"".join(
        (
            _VERSION,
            _element(0x0002, b"UI", sop_class_uid.strip().encode("latin-1"), b"\x00"),
            _element(0x0003, b"UI", sop_instance_uid.strip().encode("latin-1"), b"\x00"),
            _element(0x0010, b"UI", transfer_syntax.strip().encode("latin-1"), b"\x00"),
            _element(0x0012, b"UI", PYDICOM_IMPLEMENTATION_UID.encode("latin-1"), b"\x00"),
            _element(0x0013, b"SH", implementation_version.encode("latin-1"), b" "),
            _element(0x0016, b"AE", source_ae.encode("latin-1"), b" ") if source_ae else b"",
        )
    )
    return _PREAMBLE + struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body
