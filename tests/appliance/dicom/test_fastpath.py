"""The fast receive path (appliance.dicom.fast): which associations take it, and that they behave as before.

"As before" is checked against the same node with the fast path off (pynetdicom serving everything):
the A-ASSOCIATE-AC and the C-STORE/C-ECHO responses must be the same bytes. C-FIND on the fast path:
tests/appliance/dicom/test_fast_find.py.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import pytest
from fastpath_support import (
    associate_rq,
    conversation,
    message_pdus,
    read_pdu,
    record_fast_runs,
    reject_reason,
    requesting_ae,
)
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_messages import C_ECHO_RQ, C_ECHO_RSP, C_FIND_RQ, C_FIND_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

import tls
from appliance.config import NodeConfig
from appliance.core import Appliance
from appliance.dicom import fast as fastpath
from appliance.dicom.fast import dimse as dimse_codec
from appliance.dicom.server import DicomNode

import dicomdata
from conftest import HOST, Node, dcmtk, free_port, make_config, wait_until

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
PRIVATE_CLASS = "1.2.826.0.1.3680043.10.1234.99.1"


@pytest.fixture
def fast_runs(monkeypatch: pytest.MonkeyPatch) -> list[fastpath.FastAssociation]:
    """Every association served by the fast path during the test."""
    return record_fast_runs(monkeypatch)


@pytest.fixture
def released(node: Node) -> list[tuple[str, list[str], bool]]:
    """(called AE, SOP Instance UIDs, released normally) per association that stored something."""
    calls: list[tuple[str, list[str], bool]] = []
    node.app.released_listeners.append(lambda called, _assoc, uids, ok: calls.append((called, uids, ok)))
    return calls


# -- raw peer ------------------------------------------------------------------------------------------


def store_pdus(ds_bytes: bytes, sop_uid: str, context_id: int = 1, message_id: int = 1) -> list[bytes]:
    req = C_STORE()
    req.MessageID = message_id
    req.AffectedSOPClassUID = CTImageStorage
    req.AffectedSOPInstanceUID = sop_uid
    req.Priority = 2
    req.DataSet = BytesIO(ds_bytes)
    return message_pdus(C_STORE_RQ(), req, context_id)


def dataset_bytes(inst: dicomdata.Instance) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, inst.dataset())
    return fp.getvalue()


# -- which associations take the fast path --------------------------------------------------------------


#: Modality Performed Procedure Step: served by pynetdicom.
MPPS = "1.2.840.10008.3.1.2.3.3"


def test_storescu_and_echoscu_take_the_fast_path(node: Node, tmp_path: Path, fast_runs: list, released: list) -> None:
    items = dicomdata.study("PFAST", "FAST^PATH", ("CT", "MR"), 2)
    for inst in items:
        inst.write(tmp_path)
    dcmtk("storescu", "-aec", node.aet + "_E", "+sd", HOST, str(node.port), str(tmp_path), check=True)
    dcmtk("echoscu", "-aec", node.aet, HOST, str(node.port), check=True)
    assert len(fast_runs) == 2
    assert node.app.index.counts()["instances"] == 4
    for rel in node.app.store_area.iter_files():
        stored = dcmread(node.app.store_area.path(rel))
        sent = dcmread(tmp_path / f"{stored.SOPInstanceUID}.dcm")
        assert stored == sent and stored.file_meta.SourceApplicationEntityTitle == "STORESCU"
    wait_until(lambda: released)
    [(called, uids, normally)] = released
    assert called == node.aet + "_E" and normally
    assert sorted(uids) == sorted(i.sop_uid for i in items)
    wait_until(lambda: not node.dicom.active())  # the release is logged before the worker ends


def test_pynetdicom_store_and_echo_take_the_fast_path(node: Node, fast_runs: list) -> None:
    ds = dicomdata.study("PPYN", "PYN^ET", ("CT",), 1)[0].dataset()
    assoc = requesting_ae("PYNET", CTImageStorage, Verification).associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    assert len(fast_runs) == 1
    assert node.app.index.lookup(ds.SOPInstanceUID) is not None


def test_private_sop_class_and_small_pdus(node_factory, fast_runs: list) -> None:
    node = node_factory(max_pdu=4096)  # the data set arrives in many P-DATA-TF PDUs
    ds = dicomdata.study("PPDU", "SMALL^PDU", ("OT",), 1, rows=64, columns=64)[0].dataset()
    ds.SOPClassUID = PRIVATE_CLASS
    ae = requesting_ae("TINYPDU", PRIVATE_CLASS)
    ae.maximum_pdu_size = 64  # and our answer has to be cut into 58-byte fragments
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0
    assert len(fast_runs) == 1
    found = node.app.index.lookup(ds.SOPInstanceUID)
    assert found is not None and found.sop_class_uid == PRIVATE_CLASS
    assert dcmread(node.app.file_path(found)).PixelData == ds.PixelData


def test_query_and_retrieve_contexts_take_the_fast_path(node: Node, fast_runs: list) -> None:
    inst = dicomdata.study("PQRY", "QUERY^PATH", ("CT",), 1)[0]
    assoc = requesting_ae(
        "QR", CTImageStorage, StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelMove
    ).associate(HOST, node.port, ae_title=node.aet)
    assert assoc.send_c_store(inst.dataset()).Status == 0
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = inst.study_uid
    answers = [
        ds
        for status, ds in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
        if status.Status == 0xFF00
    ]
    assoc.release()
    assert len(fast_runs) == 1
    assert [a.StudyInstanceUID if a is not None else None for a in answers] == [inst.study_uid]


def test_mpps_goes_to_pynetdicom(node: Node, fast_runs: list) -> None:
    assoc = requesting_ae("MODALITY", MPPS, CTImageStorage).associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    assoc.release()
    assert fast_runs == []


@pytest.mark.parametrize(
    "other",
    [StudyRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelGet],
    ids=["move", "get"],
)
def test_move_and_get_take_the_fast_path(node: Node, fast_runs: list, other: str) -> None:
    assoc = requesting_ae("MODALITY", other, CTImageStorage).associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    assoc.release()
    assert len(fast_runs) == 1


def test_fast_path_off_serves_everything_with_pynetdicom(
    node_factory, fast_runs: list, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="appliance.dicom"):
        node = node_factory(fast_path=False)  # [dicom] fast_path = false
    assert "fast path off ([dicom] fast_path = false)" in caplog.text
    assoc = requesting_ae("OFF", Verification).associate(HOST, node.port, ae_title=node.aet)
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    assert fast_runs == []


def test_a_low_level_handler_turns_the_fast_path_off_and_says_so(
    fast_runs: list, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    class Debugging(DicomNode):
        def _handlers(self) -> list:
            return [*super()._handlers(), (evt.EVT_PDU_RECV, lambda event: None)]

    app = Appliance(make_config(tmp_path / "dbg"))
    node = Debugging(app)
    with caplog.at_level(logging.INFO, logger="appliance.dicom"):
        node.start()
    try:
        assert "fast path off: handler(s) bound to EVT_PDU_RECV" in caplog.text
        assoc = requesting_ae("DBG", Verification).associate(HOST, node.ports[0], ae_title=app.config.dicom.ae_title)
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        assert fast_runs == []
    finally:
        node.stop()
        app.db.close()


# -- the same bytes as pynetdicom ------------------------------------------------------------------------


def test_same_bytes_as_pynetdicom(node_factory, fast_runs: list) -> None:
    """AC, C-STORE-RSP (success, duplicate, refused) and C-ECHO-RSP are byte for byte pynetdicom's."""
    inst = dicomdata.study("PBYTES", "BYTES^SAME", ("CT",), 1)[0]
    contexts = [
        build_context(CTImageStorage, [EXPLICIT_LE, "1.2.840.10008.1.2.4.50"]),
        build_context(Verification, ["1.2.840.10008.1.2.4.50", IMPLICIT_LE]),
        build_context(Verification, ["1.2.840.10008.1.2.4.50"]),  # no supported syntax: rejected
        build_context(PRIVATE_CLASS, [IMPLICIT_LE]),
    ]
    echo = C_ECHO()
    echo.MessageID = 7
    echo.AffectedSOPClassUID = Verification
    steps = [
        associate_rq("DISCPACS", "SAMEBYTES", contexts),
        b"".join(store_pdus(dataset_bytes(inst), inst.sop_uid, 1, 1)),
        b"".join(store_pdus(dataset_bytes(inst), inst.sop_uid, 1, 2)),  # a duplicate
        b"".join(store_pdus(b"\x08\x00\x18\x00UI\xff\x00", "1.2.3.4", 1, 3)),  # truncated: 0xC000
        b"".join(message_pdus(C_ECHO_RQ(), echo, 3)),
    ]
    answers = {}
    for fast in (True, False):
        node = node_factory()
        for server in node.dicom.servers:
            server.fast_path = fast
        answers[fast] = conversation(node.port, node.aet, steps)
        assert node.app.index.counts()["instances"] == 1
    assert len(fast_runs) == 1
    assert answers[True][0][0] == 0x02  # A-ASSOCIATE-AC
    assert answers[True] == answers[False]


def test_a_repeated_request_is_answered_as_the_rights_are_now(node: Node, fast_runs: list) -> None:
    """The same A-ASSOCIATE-RQ bytes again (a workstation's next C-GET) get the same A-ASSOCIATE-AC, until the
    calling AE's rights change: then the new rights are applied, as to a request never seen."""
    steps = [
        associate_rq(
            node.aet,
            "WS1",
            [
                build_context(StudyRootQueryRetrieveInformationModelGet, [IMPLICIT_LE]),
                build_context(CTImageStorage, [IMPLICIT_LE]),
            ],
        )
    ]

    def results() -> dict[int, int]:
        ac = A_ASSOCIATE_AC()
        ac.decode(conversation(node.port, node.aet, steps)[0])
        contexts = ac.to_primitive().presentation_context_definition_results_list
        return {int(cx.context_id or 0): int(cx.result or 0) for cx in contexts}

    first = results()
    assert first == {1: 0x00, 3: 0x00}
    assert results() == first
    node.app.node_registry.add(NodeConfig("WS1", HOST, 104, get=False))
    assert results() == {1: 0x03, 3: 0x00}  # C-GET: not offered to WS1 any more; storage still accepted
    assert len(fast_runs) == 3


def test_encode_response_matches_pynetdicom() -> None:
    cases = [
        (0x0000, None, "1.2.3.4"),
        (0xA700, "store disk has 10 MB free, limit is 500 MB", "1.2.3.44"),
        (0xC000, "odd", "1.2.840.10008.5.1.4.1.1.2.1.5"),
        (0x0124, "calling AE has no store right", "1.2"),
    ]
    for status, comment, uid in cases:
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = 9
        rsp.AffectedSOPClassUID = CTImageStorage
        rsp.AffectedSOPInstanceUID = uid
        rsp.Status = status
        if comment:
            rsp.ErrorComment = comment  # type: ignore[assignment]  # pynetdicom types it as None only
        expected = message_pdus(C_STORE_RSP(), rsp, 5)
        command = dimse_codec.encode_response(0x8001, 9, CTImageStorage, status, comment, uid)
        assert [dimse_codec.pdata_pdus(command, 5, 16384)] == expected
        assert dimse_codec.pdata_pdus(command, 5, 64) == b"".join(message_pdus(C_STORE_RSP(), rsp, 5, 64))
    echo = C_ECHO()
    echo.MessageIDBeingRespondedTo = 3
    echo.AffectedSOPClassUID = Verification
    echo.Status = 0
    assert [
        dimse_codec.pdata_pdus(dimse_codec.encode_response(0x8030, 3, Verification, 0, None, None), 1, 0)
    ] == message_pdus(C_ECHO_RSP(), echo, 1, 0)


@pytest.mark.parametrize("max_pdu", [16384, 64, 0])
@pytest.mark.parametrize(
    ("status", "comment", "identifier"),
    [
        (0xFF00, None, b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY " * 30),
        (0x0000, None, None),
        (0xFE00, None, None),
        (0xA900, "unsupported QueryRetrieveLevel 'FOO'", None),
        (0xC001, "identifier cannot be decoded", None),
    ],
)
def test_find_response_matches_pynetdicom(
    max_pdu: int, status: int, comment: str | None, identifier: bytes | None
) -> None:
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = 11
    rsp.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
    rsp.Status = status
    if comment:
        rsp.ErrorComment = comment  # type: ignore[assignment]  # pynetdicom types it as None only
    if identifier:
        rsp.Identifier = BytesIO(identifier)
    command = dimse_codec.encode_response(
        0x8020, 11, StudyRootQueryRetrieveInformationModelFind, status, comment, None, identifier is not None
    )
    ours = dimse_codec.pdata_pdus(command, 3, max_pdu)
    if identifier:
        ours += dimse_codec.pdata_pdus(identifier, 3, max_pdu, data_set=True)
    assert ours == b"".join(message_pdus(C_FIND_RSP(), rsp, 3, max_pdu))


# -- policy ----------------------------------------------------------------------------------------------

NODES = [
    {"ae_title": "FULL", "host": HOST, "port": 104},
    {"ae_title": "QUERYONLY", "host": HOST, "port": 104, "store": False},
]


def test_rejections_of_storage_only_proposals(node_factory, fast_runs: list) -> None:
    strict = node_factory(accept_any_ae=False, nodes=NODES)
    assert reject_reason(requesting_ae("STRANGER").associate(HOST, strict.port, ae_title=strict.aet)) == (1, 1, 3)
    assert reject_reason(requesting_ae("FULL").associate(HOST, strict.port, ae_title="SOMEONE")) == (1, 1, 7)
    proc = dcmtk("echoscu", "-aet", "STRANGER", "-aec", strict.aet, HOST, str(strict.port))
    assert proc.returncode != 0 and "Calling AE Title Not Recognized" in proc.stderr
    assert fast_runs == []
    # A known node without the store right associates, and each C-STORE is refused with 0x0124.
    ds = dicomdata.study("PRIGHT", "NO^RIGHT", ("CT",), 1)[0].dataset()
    assoc = requesting_ae("QUERYONLY").associate(HOST, strict.port, ae_title=strict.aet)
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0x0124 and "store right" in status.ErrorComment
    assert len(fast_runs) == 1 and strict.app.index.counts()["instances"] == 0


def test_association_limit_is_shared_with_pynetdicom(node_factory, fast_runs: list) -> None:
    node = node_factory(max_associations=2)
    fast = requesting_ae("F1").associate(HOST, node.port, ae_title=node.aet)
    slow = requesting_ae("S1", CTImageStorage, MPPS).associate(HOST, node.port, ae_title=node.aet)
    assert fast.is_established and slow.is_established
    wait_until(lambda: len(node.dicom.active()) == 2)
    assert reject_reason(requesting_ae("F2").associate(HOST, node.port, ae_title=node.aet)) == (2, 3, 2)
    assert reject_reason(requesting_ae("S2", MPPS).associate(HOST, node.port, ae_title=node.aet)) == (2, 3, 2)
    slow.release()
    wait_until(lambda: len(node.dicom.active()) == 1)
    again = requesting_ae("F3").associate(HOST, node.port, ae_title=node.aet)
    assert again.is_established
    assert reject_reason(requesting_ae("F4").associate(HOST, node.port, ae_title=node.aet)) == (2, 3, 2)
    for assoc in (fast, again):
        assoc.release()
    wait_until(lambda: not node.dicom.active())
    assert len(fast_runs) == 2


# -- aborts, timeouts, protocol errors -------------------------------------------------------------------


def _open(node: Node, contexts: list[PresentationContext] | None = None) -> socket.socket:
    sock = socket.create_connection((HOST, node.port), timeout=20)
    sock.sendall(associate_rq(node.aet, "RAWPEER", contexts or [build_context(CTImageStorage, [EXPLICIT_LE])]))
    assert read_pdu(sock)[0] == 0x02
    return sock


@pytest.mark.parametrize("how", ["a-abort", "close"])
def test_abort_mid_dataset_leaves_nothing(node: Node, fast_runs: list, released: list, how: str) -> None:
    first, second = dicomdata.study("PABORT", "ABORT^MID", ("CT",), 2, rows=256, columns=256)
    with _open(node) as sock:
        sock.sendall(b"".join(store_pdus(dataset_bytes(first), first.sop_uid)))
        answer = read_pdu(sock)
        assert answer[0] == 0x04 and dimse_codec.decode_command(answer[12:])[0x0900] == 0x0000
        pdus = store_pdus(dataset_bytes(second), second.sop_uid, message_id=2)
        whole = b"".join(pdus)
        sock.sendall(whole[: len(whole) // 2])  # command and half of the data set
        time.sleep(0.2)
        if how == "a-abort":
            sock.sendall(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")
    wait_until(lambda: not node.dicom.active())
    assert node.app.index.lookup(first.sop_uid) is not None
    assert node.app.index.lookup(second.sop_uid) is None
    assert len(node.app.store_area.iter_files()) == 1
    assert list(node.app.store_area.tmp.iterdir()) == []
    wait_until(lambda: released)
    assert released == [(node.aet, [first.sop_uid], False)]
    assert len(fast_runs) == 1


@pytest.mark.parametrize(
    ("label", "send"),
    [
        ("second A-ASSOCIATE-RQ", lambda aet: associate_rq(aet, "AGAIN", [build_context(Verification)])),
        ("unknown PDU type", lambda aet: b"\x09\x00\x00\x00\x00\x02\x00\x00"),
        ("PDV longer than its PDU", lambda aet: b"\x04\x00\x00\x00\x00\x10\x00\x00\x10\x00\x01\x03" + bytes(10)),
        ("C-FIND on a storage context", lambda aet: b"".join(message_pdus(C_FIND_RQ(), _find(), 1))),
        ("unaccepted context ID", lambda aet: b"".join(store_pdus(_TINY, "1.2.3", context_id=99))),
    ],
)
def test_protocol_errors_abort(node: Node, fast_runs: list, label: str, send: Callable[[str], bytes]) -> None:
    with _open(node) as sock:
        sock.sendall(send(node.aet))
        answer = read_pdu(sock)
        assert answer == b"" or answer[0] == 0x07, label
    wait_until(lambda: not node.dicom.active())
    assert len(fast_runs) == 1
    # The listener goes on serving.
    assert requesting_ae("AFTER", Verification).associate(HOST, node.port, ae_title=node.aet).send_c_echo().Status == 0


_TINY: bytes = b"\x08\x00\x18\x00UI\x06\x001.2.3\x00"


def _find() -> C_FIND:
    req = C_FIND()
    req.MessageID = 1
    req.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
    req.Priority = 2
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    from pynetdicom.dsutils import encode

    identifier = encode(query, True, True)
    assert identifier is not None
    req.Identifier = BytesIO(identifier)
    return req


def test_idle_association_is_aborted_after_network_timeout(node_factory, fast_runs: list) -> None:
    node = node_factory(network_timeout=1, acse_timeout=1)
    with _open(node) as sock:
        start = time.monotonic()
        answer = read_pdu(sock)
        assert answer == b"" or answer[0] == 0x07
        assert time.monotonic() - start < 10
    wait_until(lambda: not node.dicom.active())
    assert len(fast_runs) == 1


def test_silent_connection_is_closed_after_acse_timeout(node_factory, fast_runs: list) -> None:
    node = node_factory(acse_timeout=1)
    with socket.create_connection((HOST, node.port), timeout=20) as sock:
        start = time.monotonic()
        assert sock.recv(10) == b""
        assert time.monotonic() - start < 10
    assert fast_runs == []


def test_stop_aborts_open_fast_associations(node: Node, fast_runs: list) -> None:
    assoc = requesting_ae("LINGER").associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    wait_until(lambda: node.dicom.active())
    node.dicom.stop(grace=0.2)
    wait_until(lambda: assoc.is_aborted or not assoc.is_established)
    wait_until(lambda: not node.dicom.active())  # the worker leaves the open list when its thread ends


# -- TLS -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tls.Paths]:
    yield tls.init_pki(tmp_path_factory.mktemp("pki"), ["localhost"], ["127.0.0.1"])


def test_tls_storage_takes_the_fast_path(node_factory, pki: tls.Paths, tmp_path: Path, fast_runs: list) -> None:
    ctx = tls.server_context(pki.server_cert, pki.server_key, pki.ca_cert, verify_peer=True)
    node = node_factory(server_tls=ctx, tls_port=free_port())
    items = dicomdata.study("PTLSF", "TLS^FAST", ("CT",), 3)
    for inst in items:
        inst.write(tmp_path)
    args = ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca_cert)]
    dcmtk("storescu", *args, "-aec", node.aet, "+sd", HOST, str(node.tls_port), str(tmp_path), check=True)
    assert len(fast_runs) == 1
    assert node.app.index.counts()["instances"] == 3
    # A query on the TLS port takes the fast path too (tests/appliance/dicom/test_fast_find.py for its answers).
    proc = dcmtk(
        "findscu",
        *args,
        "-S",
        "-aec",
        node.aet,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "PatientID=PTLSF",
        "-k",
        "PatientName",
        HOST,
        str(node.tls_port),
        check=True,
    )
    assert "TLS^FAST" in proc.stderr
    assert len(fast_runs) == 2
    # A retrieve goes to pynetdicom with the request bytes the fast path read replayed.
    ctx = tls.client_context(pki.client_cert, pki.client_key, pki.ca_cert)
    assoc = requesting_ae("MOVER", StudyRootQueryRetrieveInformationModelMove).associate(
        HOST, node.tls_port, ae_title=node.aet, tls_args=(ctx, "localhost")
    )
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = items[0].study_uid
    statuses = [s.Status for s, _ in assoc.send_c_move(query, "NOWHERE", StudyRootQueryRetrieveInformationModelMove)]
    assoc.release()
    assert statuses == [0xA801]  # move destination unknown
    assert len(fast_runs) == 3
