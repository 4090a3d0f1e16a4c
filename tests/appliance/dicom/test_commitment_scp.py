"""Storage Commitment as SCP: a modality (pynetdicom) and Orthanc ask us to commit what they sent.

The report must name exactly what is stored (indexed, file in place) and fail the rest with the standard
Failure Reasons, on the same association or on a new one to the requester.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from io import BytesIO
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

import dicomdata
from conftest import HOST, Node, free_port, wait_until

COMMITMENT = "1.2.840.10008.1.20.1"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def _request(items: list[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    ds.ReferencedSOPSequence = []
    for sop_class, sop_uid in items:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        ds.ReferencedSOPSequence.append(item)
    return ds


def _modality() -> AE:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(COMMITMENT)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    return ae


def _on_report(reports: list[tuple[int, Dataset]], done: threading.Event) -> Callable[[Any], tuple[int, None]]:
    def handle(event: Any) -> tuple[int, None]:
        reports.append((int(event.request.EventTypeID), event.event_information))
        done.set()
        return 0x0000, None

    return handle


def test_commitment_on_the_same_association(node: Node) -> None:
    stored = dicomdata.study("PCOMMIT", "COMMIT^SAME", ("CT",), 2)
    reports: list[tuple[int, Dataset]] = []
    done = threading.Event()
    ae = _modality()
    assoc = ae.associate(
        HOST, node.port, ae_title=node.aet, evt_handlers=[(evt.EVT_N_EVENT_REPORT, _on_report(reports, done))]
    )
    assert assoc.is_established
    for inst in stored:
        assert assoc.send_c_store(inst.dataset()).Status == 0
    missing = generate_uid()
    request = _request(
        [(CTImageStorage, i.sop_uid) for i in stored]
        + [(CTImageStorage, missing), ("1.2.840.10008.5.1.4.1.1.4", stored[0].sop_uid)]
    )
    answer, _ = assoc.send_n_action(request, 1, COMMITMENT, COMMITMENT_INSTANCE)
    assert answer.Status == 0x0000
    assert done.wait(20), "no N-EVENT-REPORT on the association"
    assoc.release()
    event_type, info = reports[0]
    assert event_type == 2  # some failed
    assert info.TransactionUID == request.TransactionUID
    assert {i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence} == {i.sop_uid for i in stored}
    failures = {(i.ReferencedSOPInstanceUID, i.ReferencedSOPClassUID): i.FailureReason for i in info.FailedSOPSequence}
    assert failures == {(missing, CTImageStorage): 0x0112, (stored[0].sop_uid, "1.2.840.10008.5.1.4.1.1.4"): 0x0119}


def test_commitment_report_on_a_new_association_to_a_known_node(node_factory: Callable[..., Node]) -> None:
    listen = free_port()
    node = node_factory(nodes=[{"ae_title": "MODALITY", "host": HOST, "port": listen}])
    stored = dicomdata.study("PCOMMIT2", "COMMIT^NEW", ("CT",), 3)
    reports: list[tuple[int, Dataset]] = []
    done = threading.Event()
    receiver = AE(ae_title="MODALITY")
    receiver.add_supported_context(COMMITMENT, scu_role=True, scp_role=True)
    server = receiver.start_server(
        (HOST, listen), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, _on_report(reports, done))]
    )
    assert server is not None
    try:
        ae = _modality()
        assoc = ae.associate(HOST, node.port, ae_title=node.aet)
        for inst in stored:
            assert assoc.send_c_store(inst.dataset()).Status == 0
        request = _request([(CTImageStorage, i.sop_uid) for i in stored])
        answer, _ = assoc.send_n_action(request, 1, COMMITMENT, COMMITMENT_INSTANCE)
        assoc.release()  # before the report: it must come on a new association
        assert answer.Status == 0x0000
        assert done.wait(20), "no N-EVENT-REPORT on a new association"
    finally:
        server.shutdown()
    event_type, info = reports[0]
    assert event_type == 1
    assert {i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence} == {i.sop_uid for i in stored}
    assert "FailedSOPSequence" not in info


def test_a_file_gone_from_the_store_is_not_committed(node: Node) -> None:
    inst = dicomdata.study("PCOMMIT3", "COMMIT^GONE", ("CT",), 1)[0]
    reports: list[tuple[int, Dataset]] = []
    done = threading.Event()
    assoc = _modality().associate(
        HOST, node.port, ae_title=node.aet, evt_handlers=[(evt.EVT_N_EVENT_REPORT, _on_report(reports, done))]
    )
    assert assoc.send_c_store(inst.dataset()).Status == 0
    found = node.app.index.lookup(inst.sop_uid)
    assert found is not None
    node.app.file_path(found).unlink()
    answer, _ = assoc.send_n_action(_request([(CTImageStorage, inst.sop_uid)]), 1, COMMITMENT, COMMITMENT_INSTANCE)
    assert answer.Status == 0 and done.wait(20)
    assoc.release()
    assert reports[0][0] == 2 and reports[0][1].FailedSOPSequence[0].FailureReason == 0x0110


def _without_transaction() -> Dataset:
    ds = _request([(CTImageStorage, "1.2.3")])
    del ds.TransactionUID
    return ds


@pytest.mark.parametrize(
    ("action_type", "info", "code"),
    [
        (2, _request([(CTImageStorage, "1.2.3")]), 0x0123),
        (1, _without_transaction(), 0x0120),
    ],
)
def test_bad_requests_are_refused(node: Node, action_type: int, info: Dataset, code: int) -> None:
    assoc = _modality().associate(HOST, node.port, ae_title=node.aet)
    answer, _ = assoc.send_n_action(info, action_type, COMMITMENT, COMMITMENT_INSTANCE)
    assoc.release()
    assert answer.Status == code


def test_a_node_without_the_commit_right_has_the_context_rejected(node_factory: Callable[..., Node]) -> None:
    node = node_factory(
        accept_any_ae=False, nodes=[{"ae_title": "MODALITY", "host": HOST, "port": 104, "commit": False}]
    )
    assoc = _modality().associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    assert COMMITMENT not in {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    assoc.release()


def test_orthanc_asks_us_to_commit_what_it_sent(node_factory: Callable[..., Node], orthanc_factory: Any) -> None:
    """Orthanc (REST /modalities/{name}/store with StorageCommitment) stores to us, asks for commitment and
    takes our N-EVENT-REPORT on the association we open to it."""
    orthanc = orthanc_factory(aet="ORTHCOMMIT")
    node = node_factory(nodes=[{"ae_title": "ORTHCOMMIT", "host": HOST, "port": orthanc.dicom_port}])
    orthanc.put_modality("appliance", node.aet, node.port)
    stored = dicomdata.study("PCOMMIT4", "COMMIT^ORTHANC", ("CT",), 2)
    ids = []
    for inst in stored:
        buffer = BytesIO()
        inst.dataset().save_as(buffer, enforce_file_format=True)
        ids.append(orthanc.post("/instances", buffer.getvalue())["ID"])
    job = orthanc.post(
        "/modalities/appliance/store", {"Resources": ids, "StorageCommitment": True, "Synchronous": True}
    )
    transaction = job.get("StorageCommitmentTransactionUID")
    assert transaction, job
    state = wait_until(
        lambda: (s := orthanc.get(f"/storage-commitment/{transaction}"))["Status"] != "Pending" and s, timeout=30
    )
    assert state["Status"] == "Success", state
    assert all(node.app.index.lookup(i.sop_uid) is not None for i in stored)
