"""Hostile input on the DICOM port: malformed PDUs and data sets from a scripted raw-socket peer.

Whatever arrives, the listener keeps serving, nothing half-written is stored, and a
silent peer is dropped after the configured timeout.
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]  # generated at import time

from appliance.errors import InvalidDataset
from appliance.index import extract
from appliance.validate import check_structure

from conftest import HOST, Node, wait_until


def _echo(node: Node) -> bool:
    ae = AE(ae_title="PROBE")
    ae.add_requested_context(Verification)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    if not assoc.is_established:
        return False
    ok = assoc.send_c_echo().Status == 0
    assoc.release()
    return ok


def _ae_field(title: str) -> bytes:
    return title.encode().ljust(16)


def associate_rq(called: str, calling: str = "PARROT", abstract: str = CTImageStorage) -> bytes:
    """A minimal A-ASSOCIATE-RQ PDU proposing one context with Explicit VR Little Endian."""

    def item(kind: int, body: bytes) -> bytes:
        return struct.pack(">BBH", kind, 0, len(body)) + body

    app_ctx = item(0x10, b"1.2.840.10008.3.1.1.1")
    pres = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, abstract.encode()) + item(0x40, b"1.2.840.10008.1.2.1"))
    user = item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.3.4"))
    body = struct.pack(">HH", 1, 0) + _ae_field(called) + _ae_field(calling) + bytes(32) + app_ctx + pres + user
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    head = b""
    while len(head) < 6:
        chunk = sock.recv(6 - len(head))
        if not chunk:
            return -1, b""
        head += chunk
    kind, _, length = struct.unpack(">BBI", head)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return kind, body


def _send(node: Node, payload: bytes, read: bool = True) -> int:
    with socket.create_connection((HOST, node.port), timeout=10) as sock:
        sock.sendall(payload)
        if not read:
            return 0
        try:
            return _read_pdu(sock)[0]
        except (TimeoutError, ConnectionResetError):
            return -1


BAD_OPENINGS = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # a browser on the DICOM port
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),  # a TLS ClientHello on the plain port
    b"\x01\x00\xff\xff\xff\xff" + bytes(100),  # A-ASSOCIATE-RQ claiming 4 GB
    b"\x01\x00\x00\x00\x00\x10" + bytes(16),  # too short to be an association request
    b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00",  # A-ABORT before any association
    b"\x04\x00\x00\x00\x00\x0c\x00\x00\x00\x08\x01\x03" + bytes(6),  # P-DATA before any association
    bytes(range(256)) * 4,
]


@pytest.mark.parametrize("payload", BAD_OPENINGS, ids=range(len(BAD_OPENINGS)))
def test_garbage_before_association_never_harms_the_listener(node: Node, payload: bytes) -> None:
    answer = _send(node, payload)
    assert answer in (-1, 0x03, 0x07)  # closed, A-ASSOCIATE-RJ or A-ABORT
    assert _echo(node)


def test_association_then_malformed_pdata(node: Node) -> None:
    with socket.create_connection((HOST, node.port), timeout=10) as sock:
        sock.sendall(associate_rq(node.aet))
        kind, _ = _read_pdu(sock)
        assert kind == 0x02  # A-ASSOCIATE-AC
        # A P-DATA-TF whose PDV length runs past the PDU: the peer is broken.
        sock.sendall(b"\x04\x00\x00\x00\x00\x10" + b"\x00\x00\x10\x00\x01\x03" + bytes(10))
        try:
            kind, _ = _read_pdu(sock)
        except (TimeoutError, ConnectionResetError):
            kind = -1
        assert kind in (-1, 0x07)
    assert _echo(node)
    wait_until(lambda: not node.dicom.active(), timeout=20)
    assert node.app.index.counts()["instances"] == 0


def test_abrupt_close_mid_dataset_stores_nothing(node: Node) -> None:
    ae = AE(ae_title="HALF")
    ae.add_requested_context(CTImageStorage)
    with socket.create_connection((HOST, node.port), timeout=10) as sock:
        sock.sendall(associate_rq(node.aet, "HALF"))
        assert _read_pdu(sock)[0] == 0x02
        # Command set fragment (last) then only the first part of a data set, then close.
        pdv = b"\x01\x03" + b"\x00\x00\x00\x00\x04\x00\x00\x00" + struct.pack("<I", 2)
        sock.sendall(struct.pack(">BBI", 4, 0, len(pdv) + 4) + struct.pack(">I", len(pdv)) + pdv)
        data = b"\x01\x00" + b"\x08\x00\x18\x00UI\x10\x001.2.3.4.5.6.7.8"
        sock.sendall(struct.pack(">BBI", 4, 0, len(data) + 4) + struct.pack(">I", len(data)) + data)
    assert _echo(node)
    # The broken association does not linger (it would count against max_associations).
    wait_until(lambda: not node.dicom.active(), timeout=20)
    assert node.app.index.counts()["instances"] == 0
    assert list(node.app.store_area.tmp.iterdir()) == []


def test_silent_peer_is_dropped_after_network_timeout(node_factory) -> None:
    node = node_factory(network_timeout=2, acse_timeout=2)
    with socket.create_connection((HOST, node.port), timeout=30) as sock:
        sock.sendall(associate_rq(node.aet))
        assert _read_pdu(sock)[0] == 0x02
        wait_until(lambda: node.dicom.active(), timeout=10)
        # Say nothing more: the association must be released by the server on its own.
        wait_until(lambda: not node.dicom.active(), timeout=30)
        kind = _read_pdu(sock)[0]
        assert kind in (-1, 0x07)  # connection closed or A-ABORT
    assert _echo(node)


def test_silent_tcp_client_before_association_is_dropped(node_factory) -> None:
    node = node_factory(network_timeout=2, acse_timeout=2)
    with socket.create_connection((HOST, node.port), timeout=30) as sock:
        assert _echo(node)  # others are served meanwhile
        sock.settimeout(30)
        assert _read_pdu(sock)[0] in (-1, 0x07)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.booleans(), st.booleans())
def test_parser_fuzz_any_bytes(data: bytes, implicit: bool, little: bool) -> None:
    """Any bytes: the structural check either passes or raises InvalidDataset, nothing else."""
    try:
        check_structure(data, implicit, little)
    except InvalidDataset:
        return


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0x0008, 0x0030), st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=12))
def test_parser_fuzz_element_streams(elements: list[tuple[int, int, bytes]]) -> None:
    """Well-framed elements with arbitrary values: either a record or InvalidDataset from extract."""
    from io import BytesIO

    from pydicom import dcmread

    body = b"".join(struct.pack("<HHI", g, e, len(v)) + v for g, e, v in sorted(elements))
    check_structure(body, True, True)
    meta = b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x12\x001.2.840.10008.1.2\x00"
    try:
        ds = dcmread(BytesIO(meta + body), force=True)
        extract(ds)
    except InvalidDataset:
        pass


# -- nested sequences and PDU lengths (issue 15) -----------------------------------------------------------


def _sequence(tag: tuple[int, int], inner: bytes, defined: bool, explicit: bool) -> bytes:
    """One sequence holding one item that holds ``inner``, Little Endian."""
    if defined:
        item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
        length = len(item)
    else:
        item = (
            struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
            + inner
            + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
            + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        )
        length = 0xFFFFFFFF
    head = struct.pack("<HH2sHI", *tag, b"SQ", 0, length) if explicit else struct.pack("<HHI", *tag, length)
    return head + item


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.booleans(), st.booleans()), max_size=2 * 32 + 4),
    st.booleans(),
    st.binary(min_size=0, max_size=24),
)
def test_nested_sequence_fuzz(levels: list[tuple[bool, bool]], explicit: bool, leaf: bytes) -> None:
    """Sequences nested at random depths, lengths defined or not, standard or private tags, both VR encodings.

    Deeper than the limit: refused with TooDeep, whichever way it is nested. Within it: accepted, and
    pydicom reads and re-encodes the whole data set (what disc authoring and retrieve do).
    """
    from io import BytesIO

    from pydicom import dcmread
    from pydicom.filewriter import dcmwrite

    from appliance.validate import MAX_DEPTH, TooDeep

    value = leaf + b" " * (len(leaf) % 2)
    inner = (
        struct.pack("<HH2sHI", 0x0040, 0xA160, b"UT", 0, len(value))
        if explicit
        else struct.pack("<HHI", 0x0040, 0xA160, len(value))
    ) + value
    for defined, private in levels:
        inner = _sequence((0x0029, 0x1010) if private else (0x0040, 0xA730), inner, defined, explicit)
    if any(private for _, private in levels):
        inner = (
            struct.pack("<HH2sH", 0x0029, 0x0010, b"LO", 4) + b"TEST"
            if explicit
            else struct.pack("<HHI", 0x0029, 0x0010, 4) + b"TEST"
        ) + inner
    if len(levels) > MAX_DEPTH:
        with pytest.raises(TooDeep):
            check_structure(inner, not explicit, True)
        return
    check_structure(inner, not explicit, True)
    syntax = b"1.2.840.10008.1.2.1\x00" if explicit else b"1.2.840.10008.1.2\x00"
    meta = b"\x00" * 128 + b"DICM" + struct.pack("<HH2sH", 2, 0x10, b"UI", len(syntax)) + syntax
    ds = dcmread(BytesIO(meta + inner), force=True)
    out = BytesIO()
    dcmwrite(out, ds)  # every element converted and written: the full re-encode


def _pdu_answer(node: Node, payload: bytes, associate: bool) -> int:
    with socket.create_connection((HOST, node.port), timeout=30) as sock:
        if associate:
            sock.sendall(associate_rq(node.aet))
            assert _read_pdu(sock)[0] == 0x02
        sock.sendall(payload)
        try:
            return _read_pdu(sock)[0]
        except (TimeoutError, ConnectionResetError):
            return -1


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    st.integers(0, 255),
    st.one_of(st.integers(0, 64), st.integers(2**20, 2**32 - 1)),
    st.binary(max_size=32),
    st.booleans(),
)
def test_pdu_length_fuzz(node_factory, kind: int, length: int, body: bytes, associate: bool) -> None:
    """Any PDU type and declared length, before or after the association: an answer within the timeouts,
    memory that follows what arrived (not what was declared), and the listener still serving."""
    node = _fuzz_node(node_factory)
    rss = _rss_kb()
    answer = _pdu_answer(node, struct.pack(">BBI", kind, 0, length) + body[:length], associate)
    if associate and kind == 0x05:
        assert answer in (-1, 0x06, 0x07)  # a release request (with a body or not)
    else:
        assert answer in (-1, 0x07) or (associate and kind == answer == 0x04), answer  # A-ABORT or closed
    assert _rss_kb() - rss < 64 * 1024
    assert _echo(node)


_FUZZ_NODES: dict[int, Node] = {}


def _fuzz_node(node_factory) -> Node:
    # One node for all examples of a run (hypothesis calls the test many times with the same fixture).
    key = id(node_factory)
    if key not in _FUZZ_NODES:
        _FUZZ_NODES.clear()
        _FUZZ_NODES[key] = node_factory(acse_timeout=2, network_timeout=2)
    return _FUZZ_NODES[key]


def _rss_kb() -> int:
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
