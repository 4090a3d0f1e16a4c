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
from pynetdicom.sop_class import CTImageStorage, Verification

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
@given(st.lists(st.tuples(st.integers(0x0008, 0x0030), st.integers(0, 0xFFFF), st.binary(max_size=40)),
                max_size=12))
def test_parser_fuzz_element_streams(elements: list[tuple[int, int, bytes]]) -> None:
    """Well-framed elements with arbitrary values: either a record or InvalidDataset from extract."""
    from io import BytesIO

    from pydicom import dcmread

    body = b"".join(struct.pack("<HHI", g, e, len(v)) + v for g, e, v in sorted(elements))
    check_structure(body, True, True)
    meta = (b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x12\x001.2.840.10008.1.2\x00")
    try:
        ds = dcmread(BytesIO(meta + body), force=True)
        extract(ds)
    except InvalidDataset:
        pass
