"""The one DICOM failure guard and the retrieve decisions shared by both acceptors."""

from __future__ import annotations

import logging
from io import BytesIO

import pytest
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    MRImageStorage,
)
from pynetdicom.dimse_messages import C_GET_RSP, C_MOVE_RSP, C_STORE_RQ
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.pdu import P_DATA_TF

from appliance.dicom import guard, retrieve
from appliance.dicom.fast import dimse
from appliance.errors import CodecError, DatabaseError, IndexFailure, InvalidDataset, NotFound, OutOfResources
from appliance.index import StoredInstance
from appliance.query import QueryError
from appliance.worklist.mpps import MppsDuplicate, MppsFinal


@pytest.mark.parametrize(
    ("service", "error", "code"),
    [
        ("C-STORE", InvalidDataset("truncated"), 0xC000),
        ("C-STORE", OutOfResources("disk full"), 0xA700),
        ("C-STORE", IndexFailure("locked"), 0x0110),
        ("C-STORE", OSError(5, "I/O error"), 0x0110),
        ("C-FIND", QueryError("bad level"), 0xA900),
        ("C-FIND", DatabaseError("read-only"), 0xA700),
        ("C-FIND", KeyError("x"), 0xC001),
        ("MWL", QueryError("bad"), 0xA900),
        ("C-MOVE", NotFound("unknown destination"), 0xA801),
        ("C-MOVE", QueryError("bad level"), 0xA900),
        ("C-MOVE", DatabaseError("locked"), 0xA701),
        ("C-MOVE", RuntimeError("bug"), 0xC000),
        ("C-GET", QueryError("bad level"), 0xA900),
        ("C-GET", ZeroDivisionError(), 0xC000),
        ("MPPS", MppsDuplicate("twice"), 0x0111),
        ("MPPS", MppsFinal("completed"), 0x0110),
        ("sub-operation", CodecError("no decoder"), 0x0110),
    ],
)
def test_every_failure_has_its_status_and_never_success(
    service: str, error: Exception, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="appliance.dicom"):
        answer = guard.failure(service, error, "PEER", "1.2.3")
    assert answer.Status == code != 0x0000
    assert len(caplog.records) == 1 and "PEER" in caplog.text and f"0x{code:04X}" in caplog.text
    if isinstance(error, MppsFinal):
        assert answer.ErrorID == 0xA710


def test_an_unexpected_error_is_logged_with_its_traceback_but_not_told_to_the_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="appliance.dicom"):
        answer = guard.failure("C-FIND", KeyError("secret internals"), "PEER")
    assert "internal error" in answer.ErrorComment and "secret" not in answer.ErrorComment
    assert caplog.records[0].exc_info is not None


def test_error_comments_are_valid_lo_values() -> None:
    comment = guard.error_comment("line one\r\nline\\two\x00" + "x" * 100 + "é")
    assert len(comment) <= 64 and comment.isprintable() and "\\" not in comment and comment.isascii()


def _stored(sop_class: str, syntax: str, n: int = 1) -> StoredInstance:
    return StoredInstance(f"1.2.3.{n}", sop_class, syntax, "x", 1, "1.2", "1")


def test_contexts_propose_each_stored_syntax_alone_and_the_uncompressed_pair() -> None:
    contexts = retrieve.store_contexts(
        [
            _stored(CTImageStorage, JPEG2000Lossless),
            _stored(CTImageStorage, JPEGLSLossless),
            _stored(MRImageStorage, ExplicitVRLittleEndian),
        ]
    )
    plain = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert contexts == [
        (CTImageStorage, [JPEG2000Lossless]),
        (CTImageStorage, [JPEGLSLossless]),
        (CTImageStorage, plain),
        (MRImageStorage, plain),
    ]
    assert retrieve.store_contexts([_stored(CTImageStorage, ExplicitVRLittleEndian)], prefer=JPEG2000Lossless) == [
        (CTImageStorage, [JPEG2000Lossless]),
        (CTImageStorage, plain),
    ]


def test_contexts_keep_every_class_sendable_past_128() -> None:
    many = [
        _stored(f"1.2.840.10008.5.1.4.1.1.{n}", s, n)
        for n in range(100)
        for s in (JPEG2000Lossless, ExplicitVRLittleEndian)
    ]
    contexts = retrieve.store_contexts(many)
    assert len(contexts) == 128
    plain = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert {cls for cls, syntaxes in contexts if syntaxes == plain} == {s.sop_class_uid for s in many}


def test_sub_operation_counts_and_final_status() -> None:
    ops = retrieve.SubOperations(4)
    assert ops.final_status() == 0x0000 and ops.remaining == 4
    ops.record("1", 0x0000)
    ops.record("2", 0xB007)
    ops.record("3", 0xA700)
    ops.record("4", None)
    assert (ops.completed, ops.warning, ops.failed, ops.remaining) == (1, 1, 2, 0)
    failed = ops.failed_list()
    assert ops.final_status() == 0xB000 and failed is not None and failed.FailedSOPInstanceUIDList == ["3", "4"]
    none = retrieve.SubOperations(2)
    none.fail_rest(["a", "b"])
    assert none.final_status() == 0xA702


def _pynetdicom_pdus(message: object, primitive: object) -> bytes:
    message.primitive_to_message(primitive)  # type: ignore[attr-defined]
    out = b""
    for pdata in message.encode_msg(1, 16384):  # type: ignore[attr-defined]
        pdu = P_DATA_TF()
        pdu.from_primitive(pdata)
        out += pdu.encode()
    return out


def test_store_request_and_retrieve_responses_are_encoded_as_pynetdicom_does() -> None:
    store = C_STORE()
    store.MessageID, store.Priority = 7, 0
    store.AffectedSOPClassUID, store.AffectedSOPInstanceUID = CTImageStorage, "1.2.3.4"
    store.MoveOriginatorApplicationEntityTitle, store.MoveOriginatorMessageID = "MOVER", 3
    store.DataSet = BytesIO(b"")
    ours = dimse.pdata_pdus(dimse.encode_store_request(7, CTImageStorage, "1.2.3.4", 0, ("MOVER", 3)), 1, 16384)
    assert _pynetdicom_pdus(C_STORE_RQ(), store)[: len(ours)] == ours  # the command set; the data set follows
    for field, primitive, message in (
        (dimse.C_MOVE_RSP, C_MOVE(), C_MOVE_RSP()),
        (dimse.C_GET_RSP, C_GET(), C_GET_RSP()),
    ):
        primitive.MessageIDBeingRespondedTo = 5
        primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
        primitive.Status = 0xFF00
        primitive.NumberOfRemainingSuboperations = 3
        primitive.NumberOfCompletedSuboperations = 1
        primitive.NumberOfFailedSuboperations = 0
        primitive.NumberOfWarningSuboperations = 2
        ours = dimse.pdata_pdus(
            dimse.encode_retrieve_response(field, 5, "1.2.840.10008.5.1.4.1.2.2.2", 0xFF00, (3, 1, 0, 2)), 1, 16384
        )
        assert ours == _pynetdicom_pdus(message, primitive)
