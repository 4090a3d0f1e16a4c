"""Differential fuzzing of the two acceptors: the fast path and pynetdicom must answer every PDU sequence alike.

Two nodes with the same configuration and the same stored data, one with ``[dicom] fast_path = true`` and one
with ``fast_path = false`` (pynetdicom's protocol machine serving everything), receive the same PDU sequences
made by hypothesis: an A-ASSOCIATE-RQ with a random mix of verification, storage and C-FIND contexts, transfer
syntaxes, calling and called AE titles (known, unknown, malformed) and maximum PDU lengths; then P-DATA-TF with
C-ECHO, C-STORE (valid, truncated, wrong UIDs, command elements missing, odd fragment sizes, wrong context IDs)
and C-FIND (random identifiers) requests, C-CANCEL, responses the node never asked for, A-RELEASE-RQ, A-ABORT,
PDUs of unknown type, truncated PDUs and PDUs whose declared length is not what was sent.

Every PDU each node answers, up to the close of the connection, must be the same bytes, and both nodes must have
stored the same instances (index rows and file bytes). The A-ASSOCIATE-AC/RJ, every DIMSE response and the
A-RELEASE-RP are compared byte for byte (as in the deterministic ancestor of this test,
test_fastpath.py::test_same_bytes_as_pynetdicom: association names, which carry a timestamp, never reach the
wire). Normalised, because DICOM leaves them to the implementation: the source and reason of an A-ABORT (compared
as "an A-ABORT"), whatever follows the first A-ABORT before the close, and whether the close shows as FIN or RST.

A declared PDU length that is not what was sent comes only on the last step of a sequence: a PDU cut short behind
a request blocks pynetdicom's reader from sending the answer it owes (test_release_with_a_pdu_cut_short_behind_it).
Each step waits for the answers it should get (or a short quiet time), so that no PDU overtakes an answer
pynetdicom's polling threads still owe.

The examples are derandomized, so CI runs the same sequences every time; ``APPLIANCE_FUZZ_EXAMPLES=N`` runs N
random ones instead (a longer local hunt). A failure prints the sequence (plan and bytes) and both answers.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dsutils import encode

from appliance.dicom.fast.dimse import decode_command
from appliance.worklist.files import import_files

import dicomdata
from conftest import HOST, Node, dcmtk, make_config, wait_until

# -- SOP classes, transfer syntaxes, AE titles -----------------------------------------------------------------

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
PRIVATE = "1.2.826.0.1.3680043.10.1234.99.1"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
MWL_FIND = "1.2.840.10008.5.1.4.31"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"  # never served by the fast path: the hand-over is exercised too
FIND_CLASSES = {STUDY_FIND, PATIENT_FIND, MWL_FIND}
ABSTRACT = [VERIFICATION, CT, MR, PRIVATE, STUDY_FIND, PATIENT_FIND, MWL_FIND, STUDY_MOVE]

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
BIG = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG = "1.2.840.10008.1.2.4.50"
UNKNOWN_TS = "1.2.826.0.1.3680043.10.1234.98"
SYNTAXES = [IMPLICIT, EXPLICIT, BIG, DEFLATED, JPEG, UNKNOWN_TS]

AET = "DISCPACS"
KNOWN = [
    {"ae_title": "FULL", "host": HOST, "port": 104},
    {"ae_title": "QUERYONLY", "host": HOST, "port": 104, "store": False},
    {"ae_title": "NOFIND", "host": HOST, "port": 104, "find": False, "mwl": False},
]
CALLING = ["FULL", "QUERYONLY", "NOFIND", "STRANGER", " FULL", "full", "FULL\\X", "F\xfcLL", "", "FULL\x00"]
CALLED = [AET, AET + "_E", " " + AET, "SOMEONE", "", AET.lower(), AET + "\x00"]
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
ABORT_RQ = b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00"
#: No PDU declares more than this: the server allocates what a PDU declares (a limit is another change's).
MAX_DECLARED = 1 << 20

# -- the plan of one conversation ------------------------------------------------------------------------------
# Hypothesis draws plans (what to send, as readable data); render() makes the bytes. UIDs of the instances a plan
# stores are made per run from a counter, so every example stores instances no earlier one stored.


@dataclass(frozen=True)
class Context:
    abstract: str
    syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class Associate:
    called: str
    calling: str
    contexts: tuple[Context, ...]
    max_length: int
    protocol_version: int = 1
    application_context: str = APPLICATION_CONTEXT
    implementation_uid: bool = True
    version_name: bool = False
    even_ids: bool = False  # context IDs 2, 4, ... (PS3.8 wants odd ones)


@dataclass(frozen=True)
class Fragmenting:
    """How a message is cut: PDV fragment sizes (cycled) and how many PDVs go in each P-DATA-TF (cycled)."""

    sizes: tuple[int, ...] = (16384,)
    per_pdu: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class Store:
    context: int  # index into the proposed contexts; out of range: a context ID never proposed
    instance: int  # 0 or 1: the example's two instances (storing one twice is a duplicate)
    explicit: bool  # data set encoding (may not be the context's)
    defect: str  # see STORE_DEFECTS
    cut: int  # where a truncated data set ends (per mille of its length)
    message_id: int
    fragmenting: Fragmenting


STORE_DEFECTS = [
    "none",
    "none",
    "none",
    "truncated",
    "command uid differs",
    "data set uid differs",
    "class differs",
    "no message id",
    "no class uid",
    "no instance uid",
    "no data set type",
    "no data set",
    "response field",
    "unknown command",
]


@dataclass(frozen=True)
class Echo:
    context: int
    message_id: int
    defect: str  # "none", "no message id", "other class", "with data set"


@dataclass(frozen=True)
class Find:
    context: int
    sop_class: str
    message_id: int
    identifier: tuple[tuple[str, str], ...] | bytes  # keyword/value pairs, or raw bytes
    explicit: bool
    fragmenting: Fragmenting
    no_priority: bool = False


@dataclass(frozen=True)
class Cancel:
    context: int
    message_id: int


@dataclass(frozen=True)
class RawPdu:
    """A non-P-DATA PDU: release, abort, an unknown type, another request, or one cut short."""

    kind: str
    pdu_type: int = 0
    body: bytes = b""


@dataclass(frozen=True)
class Step:
    what: Store | Echo | Find | Cancel | RawPdu
    length_delta: int | None = None  # declared length of the step's first PDU changed by this (None: exact)


@dataclass(frozen=True)
class Plan:
    associate: Associate | None
    steps: tuple[Step, ...] = field(default=())


# -- strategies ------------------------------------------------------------------------------------------------
# Mostly what a real peer sends, so that conversations go deep; the rest malformed in one way or another.


def often(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], percent: int = 85) -> st.SearchStrategy[Any]:
    """``common`` about ``percent`` % of the time, else ``rare`` (shrinks towards ``common``)."""
    return st.integers(0, 99).flatmap(lambda n: common if n < percent else rare)


_ids = often(st.integers(1, 20), st.integers(0, 0xFFFF), 80)
_syntaxes = often(
    st.lists(st.sampled_from([EXPLICIT, IMPLICIT]), min_size=1, max_size=2, unique=True),
    st.lists(st.sampled_from(SYNTAXES), min_size=1, max_size=3, unique=True),
    70,
).map(tuple)
_contexts = often(
    st.lists(st.builds(Context, st.sampled_from(ABSTRACT), _syntaxes), min_size=1, max_size=5),
    st.lists(st.builds(Context, st.sampled_from(ABSTRACT), _syntaxes), max_size=1),
    95,
).map(tuple)
_max_length = often(
    st.sampled_from([16384, 0, 65536, 1 << 20]),
    st.sampled_from([1, 6, 7, 20, 64, 100]) | st.integers(0, 0xFFFFFFFF),
    75,
)
associates = st.builds(
    Associate,
    called=often(st.sampled_from([AET, AET + "_E"]), st.sampled_from(CALLED)),
    calling=often(st.sampled_from(["FULL", "FULL", "QUERYONLY", "NOFIND"]), st.sampled_from(CALLING)),
    contexts=_contexts,
    max_length=_max_length,
    protocol_version=often(st.just(1), st.sampled_from([2, 3]), 95),
    application_context=often(st.just(APPLICATION_CONTEXT), st.sampled_from(["1.2.840.10008.3.1.1.2", "1.2.3"]), 95),
    implementation_uid=often(st.just(True), st.just(False), 95),
    version_name=st.booleans(),
    even_ids=often(st.just(False), st.just(True), 97),
)
_fragmenting = often(
    st.just(Fragmenting()),
    st.builds(
        Fragmenting,
        st.lists(st.integers(1, 300), min_size=1, max_size=4).map(tuple),
        st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
    ),
    60,
)
#: Which context a message goes on: one of its service (most), any proposed one (200+), one never proposed (100+).
_context_index = often(st.integers(0, 4), st.integers(100, 105) | st.integers(200, 204), 85)
stores = st.builds(
    Store,
    _context_index,
    st.integers(0, 1),
    often(st.just(True), st.just(False), 60),
    often(st.just("none"), st.sampled_from(STORE_DEFECTS), 60),
    st.integers(0, 999),
    _ids,
    _fragmenting,
)
echoes = st.builds(
    Echo,
    _context_index,
    _ids,
    often(st.just("none"), st.sampled_from(["no message id", "other class", "with data set"]), 80),
)
_patient_ids = ["PID001", "PID00?", "PID*", "PID_5%", "PID002\\PID003", "FZ*", "NOBODY"]
_qr_keys = st.dictionaries(
    st.sampled_from(
        [
            "PatientName",
            "StudyDate",
            "ModalitiesInStudy",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "Modality",
            "AccessionNumber",
            "StudyDescription",
            "SpecificCharacterSet",
            "NumberOfStudyRelatedInstances",
            "InstanceNumber",
            "StudyTime",
        ]
    ),
    st.sampled_from(
        [
            "",
            "*",
            "DOE*",
            "M?LLER*",
            "20070208",
            "19980101-20071231",
            "-2000",
            "CT",
            "PT\\MR",
            "ISO_IR 100",
            "ISO_IR 192",
            "BOGUS",
            "A1*",
            "1",
            "0830-",
        ]
    ),
    max_size=5,
)
_qr_identifiers = st.tuples(
    often(st.sampled_from(["PATIENT", "STUDY", "SERIES", "IMAGE"]), st.sampled_from(["FOO", "", None]), 85),
    st.sampled_from(_patient_ids),
    _qr_keys,
).map(
    lambda t: tuple(
        ([("QueryRetrieveLevel", t[0])] if t[0] is not None else []) + [("PatientID", t[1]), *sorted(t[2].items())]
    )
)
_mwl_identifiers = st.sampled_from(
    [
        (("ScheduledProcedureStepSequence", "MR"),),
        (("ScheduledProcedureStepSequence", ""),),
        (("PatientName", "*"), ("ScheduledProcedureStepSequence", "CT")),
    ]
)
_find_class = often(st.sampled_from([STUDY_FIND, PATIENT_FIND, MWL_FIND]), st.just(CT), 95)
finds = st.builds(
    Find,
    _context_index,
    _find_class,
    _ids,
    often(_qr_identifiers | _mwl_identifiers, st.binary(max_size=40), 90),
    st.booleans(),
    _fragmenting,
    often(st.just(False), st.just(True), 95),
)
cancels = st.builds(Cancel, _context_index, _ids)
raw_pdus = st.one_of(
    st.just(RawPdu("release")),
    st.just(RawPdu("abort")),
    st.builds(RawPdu, st.just("unknown type"), st.integers(0x08, 0xFF), st.binary(max_size=12)),
    st.builds(RawPdu, st.just("peer-only type"), st.sampled_from([0x01, 0x02, 0x03, 0x06]), st.binary(max_size=12)),
    st.just(RawPdu("second associate")),
    st.builds(RawPdu, st.just("truncated"), st.integers(0x01, 0x07), st.binary(min_size=0, max_size=8)),
    st.builds(RawPdu, st.just("p-data body"), st.just(0x04), st.binary(max_size=16)),
)
_messages = st.one_of(stores, stores, echoes, finds, finds, cancels)
steps = often(st.builds(Step, _messages), st.builds(Step, raw_pdus), 85)
#: A declared PDU length off by a few bytes, or any length up to 1 MiB: only on the last step, and never on an
#: A-RELEASE-RQ, see test_release_with_a_pdu_cut_short_behind_it.
_length_delta = st.sampled_from([-1, 1, 2, -6]) | st.integers(-8, MAX_DECLARED)
_cut = st.builds(Step, _messages | raw_pdus.filter(lambda r: r.kind != "release"), _length_delta)
_ending = often(
    st.just((Step(RawPdu("release")),)), st.lists(steps, max_size=1).map(tuple) | _cut.map(lambda s: (s,)), 60
)
plans = st.builds(
    Plan,
    often(associates, st.none(), 95),
    st.tuples(st.lists(steps, max_size=6).map(tuple), _ending).map(lambda t: t[0] + t[1]),
)


# -- rendering -------------------------------------------------------------------------------------------------


def _item(item_type: int, data: bytes) -> bytes:
    return bytes((item_type, 0)) + struct.pack(">H", len(data)) + data


def _ae(title: str) -> bytes:
    return title.encode("latin-1")[:16].ljust(16, b" ")


def _proposed(plan: Plan) -> list[tuple[int, str]]:
    """(context ID, abstract syntax) of each proposed context."""
    if plan.associate is None:
        return []
    start = 2 if plan.associate.even_ids else 1
    return [(2 * n + start, cx.abstract) for n, cx in enumerate(plan.associate.contexts)]


def render_associate(rq: Associate) -> bytes:
    """The A-ASSOCIATE-RQ PDU, item by item as PS3.8 9.3.2 lays it out."""
    contexts = b""
    start = 2 if rq.even_ids else 1
    for n, cx in enumerate(rq.contexts):
        body = bytes((2 * n + start, 0, 0, 0)) + _item(0x30, cx.abstract.encode())
        body += b"".join(_item(0x40, ts.encode()) for ts in cx.syntaxes)
        contexts += _item(0x20, body)
    user = _item(0x51, struct.pack(">I", rq.max_length))
    if rq.implementation_uid:
        user += _item(0x52, b"1.2.826.0.1.3680043.10.1234.7")
    if rq.version_name:
        user += _item(0x55, b"FUZZ_1")
    body = (
        struct.pack(">H", rq.protocol_version)
        + b"\x00\x00"
        + _ae(rq.called)
        + _ae(rq.calling)
        + bytes(32)
        + _item(0x10, rq.application_context.encode())
        + contexts
        + _item(0x50, user)
    )
    return b"\x01\x00" + struct.pack(">I", len(body)) + body


def _even(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def command_set(fields: dict[int, bytes]) -> bytes:
    """A command set (group 0000, implicit VR little endian), its group length first."""
    body = b"".join(struct.pack("<HHI", 0, element, len(value)) + value for element, value in sorted(fields.items()))
    return struct.pack("<HHI", 0, 0, 4) + struct.pack("<I", len(body)) + body


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def _ui(value: str) -> bytes:
    return _even(value.encode(), b"\x00")


def pdata(command: bytes, data: bytes | None, context_id: int, fragmenting: Fragmenting) -> bytes:
    """P-DATA-TF PDUs carrying a command set and its data set, cut as ``fragmenting`` says."""
    pdvs = []
    for payload, kind in ((command, 0x01), (data, 0x00)):
        if payload is None:
            continue
        sizes = itertools.cycle(fragmenting.sizes)
        pos = 0
        while True:
            size = next(sizes)
            chunk = payload[pos : pos + size]
            pos += size
            last = pos >= len(payload)
            pdvs.append(struct.pack(">IBB", len(chunk) + 2, context_id, kind | (0x02 if last else 0)) + chunk)
            if last:
                break
    out = []
    groups = itertools.cycle(fragmenting.per_pdu)
    while pdvs:
        take = next(groups)
        body = b"".join(pdvs[:take])
        del pdvs[:take]
        out.append(b"\x04\x00" + struct.pack(">I", len(body)) + body)
    return b"".join(out)


@dataclass
class Instances:
    """The two small instances an example may store, with UIDs no other example uses."""

    datasets: list[Dataset]

    @classmethod
    def fresh(cls, serial: int) -> Instances:
        root = f"{dicomdata.ROOT}97.{100000 + serial}"
        out = []
        for n in range(2):
            inst = dicomdata.Instance(
                f"FZ{100000 + serial}",
                "FUZZ^PATIENT",
                f"{root}.1",
                f"{root}.2",
                f"{root}.3.{n}",
                instance_number=n + 1,
                rows=4,
                columns=4,
            )
            out.append(inst.dataset())
        return cls(out)

    def encoded(self, n: int, explicit: bool) -> bytes:
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = not explicit
        write_dataset(fp, self.datasets[n])
        return fp.getvalue()

    def uids(self) -> list[str]:
        return [str(ds.SOPInstanceUID) for ds in self.datasets] + [f"{self.datasets[0].SOPInstanceUID}.9"]


STORAGE = {CT, MR, PRIVATE}


def _context_id(index: int, proposed: list[tuple[int, str]], service: set[str]) -> int:
    """The context ID a message goes on (see ``_context_index``)."""
    if index >= 200 and proposed:
        return proposed[index % len(proposed)][0]
    if index >= 100 or not proposed:
        return (99, 0, 255, 2, 4, 101)[index % 6]
    fitting = [cx_id for cx_id, abstract in proposed if abstract in service] or [cx_id for cx_id, _ in proposed]
    return fitting[index % len(fitting)]


def render_store(s: Store, ids: list[tuple[int, str]], inst: Instances) -> tuple[bytes, int]:
    ds = inst.datasets[s.instance]
    sop_uid, sop_class = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
    data: bytes | None
    data = inst.encoded(s.instance, s.explicit)
    if s.defect == "truncated":
        data = data[: len(data) * s.cut // 1000]
    elif s.defect == "data set uid differs":
        other = ds.copy()
        other.SOPInstanceUID = inst.uids()[2]
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, not s.explicit
        write_dataset(fp, other)
        data = fp.getvalue()
    fields = {
        0x0002: _ui(sop_class),
        0x0100: _us(0x0001),
        0x0110: _us(s.message_id),
        0x0700: _us(2),
        0x0800: _us(0x0001),
        0x1000: _ui(sop_uid),
    }
    if s.defect == "command uid differs":
        fields[0x1000] = _ui(inst.uids()[2])
    elif s.defect == "class differs":
        fields[0x0002] = _ui(MR if sop_class == CT else CT)
    elif s.defect == "no message id":
        del fields[0x0110]
    elif s.defect == "no class uid":
        del fields[0x0002]
    elif s.defect == "no instance uid":
        del fields[0x1000]
    elif s.defect == "no data set type":
        del fields[0x0800]
    elif s.defect == "no data set":
        fields[0x0800] = _us(0x0101)
        data = None
    elif s.defect == "response field":
        fields[0x0100] = _us(0x8001)
    elif s.defect == "unknown command":
        fields[0x0100] = _us(0x0040)  # C-STORE-RQ | 0x0040: no such command
    expect = (
        1 if s.defect in ("none", "truncated", "command uid differs", "data set uid differs", "class differs") else 0
    )
    return pdata(command_set(fields), data, _context_id(s.context, ids, STORAGE), s.fragmenting), expect


def render_echo(e: Echo, ids: list[tuple[int, str]]) -> tuple[bytes, int]:
    fields = {0x0002: _ui(VERIFICATION), 0x0100: _us(0x0030), 0x0110: _us(e.message_id), 0x0800: _us(0x0101)}
    data = None
    if e.defect == "no message id":
        del fields[0x0110]
    elif e.defect == "other class":
        fields[0x0002] = _ui(CT)
    elif e.defect == "with data set":
        fields[0x0800] = _us(0x0001)
        data = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY "
    cx_id = _context_id(e.context, ids, {VERIFICATION})
    return pdata(command_set(fields), data, cx_id, Fragmenting()), int(e.defect == "none")


def _element(tag: int, value: str, explicit: bool) -> bytes:
    """One data element of a flat identifier, written by hand: values invalid for the VR ("*" in an IS) too."""
    vr = dictionary_VR(tag)
    raw = _even(value.encode("latin-1"), b"\x00" if vr == "UI" else b" ")
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if explicit:
        return head + vr.encode() + struct.pack("<H", len(raw)) + raw
    return head + struct.pack("<I", len(raw)) + raw


def _identifier(f: Find) -> bytes:
    if isinstance(f.identifier, bytes):
        return f.identifier
    if not any(keyword == "ScheduledProcedureStepSequence" for keyword, _ in f.identifier):
        tags = sorted((keyword_dict[keyword], value) for keyword, value in f.identifier)
        return b"".join(_element(tag, value, f.explicit) for tag, value in tags)
    ds = Dataset()
    for keyword, value in f.identifier:
        if keyword == "ScheduledProcedureStepSequence":
            item = Dataset()
            item.Modality = value
            item.ScheduledProcedureStepStartDate = ""
            item.ScheduledStationAETitle = ""
            ds.ScheduledProcedureStepSequence = [item]
            ds.PatientID = ""
        else:
            setattr(ds, keyword, value)
    encoded = encode(ds, not f.explicit, True)
    assert encoded is not None
    return bytes(encoded)


def render_find(f: Find, ids: list[tuple[int, str]]) -> tuple[bytes, int]:
    fields = {
        0x0002: _ui(f.sop_class),
        0x0100: _us(0x0020),
        0x0110: _us(f.message_id),
        0x0700: _us(0),
        0x0800: _us(0x0001),
    }
    if f.no_priority:
        del fields[0x0700]
    expect = 0 if f.no_priority else 1
    return pdata(command_set(fields), _identifier(f), _context_id(f.context, ids, {f.sop_class}), f.fragmenting), expect


def render_cancel(c: Cancel, ids: list[tuple[int, str]]) -> tuple[bytes, int]:
    fields = {0x0100: _us(0x0FFF), 0x0120: _us(c.message_id), 0x0800: _us(0x0101)}
    return pdata(command_set(fields), None, _context_id(c.context, ids, FIND_CLASSES), Fragmenting()), 0


def render_raw(r: RawPdu, called: str) -> tuple[bytes, int]:
    if r.kind == "release":
        return RELEASE_RQ, 1
    if r.kind == "abort":
        return ABORT_RQ, 0
    if r.kind == "second associate":
        return render_associate(Associate(called, "FULL", (Context(VERIFICATION, (IMPLICIT,)),), 16384)), 0
    if r.kind == "truncated":
        # A header that announces more than ever comes: the rest of the conversation is read as its body.
        return bytes((r.pdu_type, 0)) + struct.pack(">I", len(r.body) + 64) + r.body, 0
    return bytes((r.pdu_type, 0)) + struct.pack(">I", len(r.body)) + r.body, 0


@dataclass(frozen=True)
class Rendered:
    label: str
    data: bytes
    expect: int  # answers to wait for: AC/RJ/RP PDUs and final DIMSE responses
    desync: bool  # after this step the PDU boundaries are no longer the plan's


def render(plan: Plan, inst: Instances) -> list[Rendered]:
    out = []
    called = plan.associate.called if plan.associate else AET
    if plan.associate is not None:
        out.append(Rendered(repr(plan.associate), render_associate(plan.associate), 1, False))
    ids = _proposed(plan)
    for step in plan.steps:
        what = step.what
        if isinstance(what, Store):
            data, expect = render_store(what, ids, inst)
        elif isinstance(what, Echo):
            data, expect = render_echo(what, ids)
        elif isinstance(what, Find):
            data, expect = render_find(what, ids)
        elif isinstance(what, Cancel):
            data, expect = render_cancel(what, ids)
        else:
            data, expect = render_raw(what, called)
        desync = isinstance(what, RawPdu) and what.kind == "truncated"
        if step.length_delta is not None:
            declared = int.from_bytes(data[2:6], "big")
            wanted = step.length_delta if abs(step.length_delta) > 8 else declared + step.length_delta
            declared = min(max(0, wanted), MAX_DECLARED)
            data = data[:2] + struct.pack(">I", declared) + data[6:]
            desync, expect = True, 0
        out.append(Rendered(repr(step), data, expect, desync))
    return out


# -- the peer --------------------------------------------------------------------------------------------------

CLOSED = b"<closed>"
STILL_OPEN = b"<still open>"
#: How long to wait for an answer that should come, for one that may or may not (pynetdicom's threads poll: under
#: load an answer it owes may come late, and the next PDU must not overtake it), and for the close at the end.
ANSWER_WAIT, QUIET_WAIT, CLOSE_WAIT = 10.0, float(os.environ.get("APPLIANCE_FUZZ_QUIET", "0.15")), 10.0


class Peer:
    """One connection: send steps, read every PDU that comes back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.buffer = b""
        self.answers: list[bytes] = []
        self.closed = False
        self._command = b""

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False when nothing came by ``deadline`` or the connection closed."""
        if self.closed:
            return False
        self.sock.settimeout(max(0.0, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return False
        except OSError:  # reset: as closed (FIN or RST after an A-ABORT is the operating system's choice)
            chunk = b""
        if not chunk:
            self.closed = True
            if self.buffer:
                self.answers.append(b"<partial>" + self.buffer)
                self.buffer = b""
            self.answers.append(CLOSED)
            return False
        self.buffer += chunk
        return True

    def _take(self) -> int:
        """Move whole PDUs from the buffer to the answers; how many answer units they complete."""
        units = 0
        while len(self.buffer) >= 6:
            length = int.from_bytes(self.buffer[2:6], "big")
            if len(self.buffer) < 6 + length:
                break
            pdu, self.buffer = self.buffer[: 6 + length], self.buffer[6 + length :]
            if pdu[:1] == b"\x07":
                # Which source and reason an A-ABORT gives is the implementation's choice (PS3.8 9.3.8): compared
                # as "an A-ABORT" (what differs is listed in the report of issue 13).
                pdu = pdu[:8] + b"\xff\xff"
            self.answers.append(pdu)
            units += self._units(pdu)
        return units

    def _units(self, pdu: bytes) -> int:
        if pdu[0] != 0x04:
            return 1
        units, pos = 0, 6
        while pos + 6 <= len(pdu):
            length = int.from_bytes(pdu[pos : pos + 4], "big")
            control, fragment = pdu[pos + 5], pdu[pos + 6 : pos + 4 + length]
            pos += 4 + length
            if control & 0x01:
                self._command += fragment
                if control & 0x02:
                    try:
                        status = decode_command(self._command).get(0x0900)
                    except ValueError:
                        status = None
                    self._command = b""
                    if status not in (0xFF00, 0xFF01):
                        units += 1
        return units

    def step(self, rendered: Rendered, expect: int) -> None:
        """Send one step unless the node has closed; read until ``expect`` answers came, then until quiet."""
        if self.closed or (self.answers and self.answers[-1][:1] == b"\x07"):
            return
        with contextlib.suppress(OSError):  # the node closed meanwhile: what it sent is read below
            self.sock.settimeout(ANSWER_WAIT)
            self.sock.sendall(rendered.data)
        got = 0
        deadline = time.monotonic() + (ANSWER_WAIT if expect else QUIET_WAIT)
        while not self.closed:
            if not self._fill(deadline):
                break
            got += self._take()
            if got >= expect:
                deadline = time.monotonic()  # take what already came, wait no longer

    def finish(self) -> list[bytes]:
        """Half-close, then read until the node closes."""
        if not self.closed:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + CLOSE_WAIT
            while self._fill(deadline):
                self._take()
            if not self.closed:
                self.answers.append(STILL_OPEN)
        self.sock.close()
        return self.answers


def converse(port: int, rendered: list[Rendered]) -> list[bytes]:
    peer = Peer(port)
    desync = False
    for step in rendered:
        peer.step(step, 0 if desync else step.expect)
        desync = desync or step.desync
    return peer.finish()


# -- the two nodes ---------------------------------------------------------------------------------------------


def _worklist_file(folder: Path) -> Path:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.AccessionNumber = "ACCFZ1"
    ds.PatientName = "Müller^Hans"
    ds.PatientID = "WL1"
    ds.StudyInstanceUID = f"{dicomdata.ROOT}96.1"
    ds.RequestedProcedureID = "RP1"
    ds.RequestedProcedureDescription = "Requested WL1"
    ds.ReferencedStudySequence = []
    ds.ReferencedPatientSequence = []
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    step = Dataset()
    step.Modality = "MR"
    step.ScheduledStationAETitle = "MOD1"
    step.ScheduledProcedureStepStartDate = "20260905"
    step.ScheduledProcedureStepStartTime = "1000"
    step.ScheduledPerformingPhysicianName = "Tech^Tom"
    step.ScheduledProcedureStepDescription = "Übersicht"
    step.ScheduledProcedureStepID = "S1"
    ds.ScheduledProcedureStepSequence = [step]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / "a.wl"
    ds.save_as(path, enforce_file_format=False)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, archive_dir: Path) -> Iterator[dict[bool, Node]]:
    """{fast_path: node}: the same configuration, stored instances and worklist; fast path on and off."""
    nodes: dict[bool, Node] = {}
    wl = tmp_path_factory.mktemp("wl")
    _worklist_file(wl)
    try:
        for fast in (True, False):
            cfg = make_config(
                tmp_path_factory.mktemp(f"fast{fast}"),
                accept_any_ae=False,
                nodes=KNOWN,
                fast_path=fast,
                acse_timeout=1,
                network_timeout=20,
                max_associations=64,
            )
            node = Node(cfg)
            nodes[fast] = node
            assert all(server.fast_path is fast for server in node.dicom.servers)
            dcmtk(
                "storescu", "-aet", "FULL", "-aec", node.aet, "+sd", HOST, str(node.port), str(archive_dir), check=True
            )
            stored, failed = import_files(node.app.worklist, [wl])
            assert len(stored) == 1, failed
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


def stored(node: Node, uids: list[str]) -> list[tuple[Any, ...]]:
    """What a node keeps of these instances: index rows (less receive times and file names) and file bytes."""
    rows = node.app.db.conn.execute(
        "SELECT i.sop_uid, i.sop_class_uid, i.instance_number, i.transfer_syntax, i.size, i.frames, i.calling_ae,"
        " i.called_ae, i.path, s.series_uid, st.study_uid, st.num_instances, p.patient_id, p.patient_name "
        "FROM instances i JOIN series s ON s.id = i.series_fk JOIN studies st ON st.id = s.study_fk "
        "JOIN patients p ON p.id = st.patient_fk "
        f"WHERE i.sop_uid IN ({','.join('?' * len(uids))}) ORDER BY i.sop_uid",
        uids,
    ).fetchall()
    out = []
    for row in rows:
        values = dict(row)
        content = node.app.store_area.path(values.pop("path")).read_bytes()
        out.append((*values.values(), content))
    return out


def until_abort(answers: list[bytes]) -> list[bytes]:
    """The answers up to the first A-ABORT, and whether the connection then closed.

    What an acceptor still writes after its A-ABORT (pynetdicom sometimes a second A-ABORT for the rest of a PDU
    it could not frame) is noise the peer must ignore (PS3.8 9.1.3).
    """
    for n, pdu in enumerate(answers):
        if pdu[:1] == b"\x07":
            return [*answers[: n + 1], answers[-1] if answers[-1] in (CLOSED, STILL_OPEN) else STILL_OPEN]
    return answers


def describe(rendered: list[Rendered], answers: dict[bool, list[bytes]]) -> str:
    lines = ["sequence sent:"]
    for n, step in enumerate(rendered):
        lines.append(f"  {n}: {step.label}\n     {step.data.hex()}")
    for fast in (True, False):
        lines.append(f"answers with fast_path = {str(fast).lower()}:")
        lines += [
            f"  {pdu[:1].hex() if pdu[:1] != b'<' else ''} {pdu.hex() if pdu[:1] != b'<' else pdu.decode()}"
            for pdu in answers[fast]
        ]
    return "\n".join(lines)


_serial = itertools.count(1)
_EXAMPLES = int(os.environ.get("APPLIANCE_FUZZ_EXAMPLES", "0"))
_fuzz = settings(
    max_examples=_EXAMPLES or 100,
    derandomize=not _EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=False,
)


def run_both(pair: dict[bool, Node], plan: Plan) -> None:
    """Send the plan to both nodes at once; require the same answers and the same stored instances."""
    inst = Instances.fresh(next(_serial))
    rendered = render(plan, inst)
    with ThreadPoolExecutor(2) as both:
        futures = {fast: both.submit(converse, node.port, rendered) for fast, node in pair.items()}
        answers = {fast: until_abort(future.result(timeout=120)) for fast, future in futures.items()}
    note(describe(rendered, answers))
    assert answers[True] == answers[False], describe(rendered, answers)
    kept = {fast: stored(node, inst.uids()) for fast, node in pair.items()}
    if kept[True] != kept[False]:  # a store the answers did not wait for may still be under way: wait, look again
        wait_until(lambda: not any(node.dicom.active() for node in pair.values()))
        kept = {fast: stored(node, inst.uids()) for fast, node in pair.items()}
    assert kept[True] == kept[False], describe(rendered, answers)


@_fuzz
@given(plan=plans)
def test_same_answers_to_random_pdu_sequences(pair: dict[bool, Node], plan: Plan) -> None:
    run_both(pair, plan)


@pytest.mark.xfail(
    strict=True,
    reason="pynetdicom's DUL thread both reads and sends: once the first bytes of the "
    "next PDU are in, it blocks reading the rest and never sends the A-RELEASE-RP (nor a C-STORE-RSP) "
    "it owes; the fast path answers what is complete. Reported in issue 13; which one is wanted is the "
    "lead's call",
)
def test_release_with_a_pdu_cut_short_behind_it(pair: dict[bool, Node]) -> None:
    """An A-RELEASE-RQ that declares 0 bytes (its 4 reserved bytes missing) and one stray byte behind it."""
    plan = Plan(
        Associate(AET, "FULL", (Context(VERIFICATION, (IMPLICIT,)),), 16384),
        (Step(RawPdu("release"), length_delta=-4),),
    )
    run_both(pair, plan)
