"""A raw DICOM peer for the fast-path tests: A-ASSOCIATE-RQ and DIMSE messages as bytes, whole PDUs read back.

With these a test sends exactly the same bytes to a node with the fast path on and off and compares the
answers byte for byte, or stops reading, aborts or closes at a chosen point.
"""

from __future__ import annotations

import socket
import struct

import pytest
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]  # generated at import time

from appliance.dicom import fast as fastpath

from conftest import HOST

RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
ABORT_RQ = b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00"


def record_fast_runs(monkeypatch: pytest.MonkeyPatch) -> list[fastpath.FastAssociation]:
    """Record every association the fast path serves from now on (for a ``fast_runs`` fixture)."""
    served: list[fastpath.FastAssociation] = []
    real = fastpath.FastAssociation.run

    def run(self: fastpath.FastAssociation) -> None:
        served.append(self)
        real(self)

    monkeypatch.setattr(fastpath.FastAssociation, "run", run)
    return served


def associate_rq(called: str, calling: str, contexts: list[PresentationContext], max_length: int = 16384) -> bytes:
    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title = calling
    prim.called_ae_title = called
    for n, cx in enumerate(contexts):
        cx.context_id = 2 * n + 1
    prim.presentation_context_definition_list = contexts
    length = MaximumLengthNotification()
    length.maximum_length_received = max_length
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.826.0.1.3680043.10.1234.7"
    prim.user_information = [length, impl]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(prim)
    return pdu.encode()


def message_pdus(msg: object, primitive: object, context_id: int, max_pdu: int = 16384) -> list[bytes]:
    msg.primitive_to_message(primitive)  # type: ignore[attr-defined]
    out = []
    for pdata in msg.encode_msg(context_id, max_pdu):  # type: ignore[attr-defined]
        pdu = P_DATA_TF()
        pdu.from_primitive(pdata)
        out.append(pdu.encode())
    return out


def read_pdu(sock: socket.socket) -> bytes:
    """One whole PDU, or b'' when the connection closed."""
    data = b""
    while len(data) < 6:
        chunk = sock.recv(6 - len(data))
        if not chunk:
            return b""
        data += chunk
    length = struct.unpack(">I", data[2:6])[0]
    while len(data) < 6 + length:
        chunk = sock.recv(6 + length - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def conversation(port: int, aet: str, steps: list[bytes]) -> list[bytes]:
    """Send an A-ASSOCIATE-RQ and messages; return the AC and one answer PDU per message, then release."""
    answers = []
    with socket.create_connection((HOST, port), timeout=20) as sock:
        for step in steps:
            sock.sendall(step)
            answers.append(read_pdu(sock))
        sock.sendall(RELEASE_RQ)
        answers.append(read_pdu(sock))
    return answers


def requesting_ae(calling: str, *contexts: str) -> AE:
    """A pynetdicom SCU proposing ``contexts`` (CT Image Storage when none is given)."""
    ae = AE(ae_title=calling)
    for cx in contexts or (CTImageStorage,):
        ae.add_requested_context(cx)
    return ae


def reject_reason(assoc) -> tuple[int, int, int]:
    prim = assoc.acceptor.primitive
    return int(prim.result), int(prim.result_source), int(prim.diagnostic)
