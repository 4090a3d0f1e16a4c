"""MPPS SCP (PS3.4 F.7) with pynetdicom as the modality, and the worklist step that follows it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hl7support import findscu_mwl, sps
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep, Verification  # type: ignore[attr-defined]

from appliance.worklist.store import ItemKey, Order, PatientRef, SpsStatus, StepOrder

from conftest import HOST, Node

STUDY = "1.2.826.0.1.3680043.99.1"


def schedule(node: Node, *sps_ids: str) -> None:
    """Put steps on the worklist through the core, as an HL7 order would."""
    steps = tuple(
        StepOrder(
            s,
            SpsStatus.SCHEDULED,
            {
                "Modality": "CT",
                "ScheduledStationAETitle": "CT1",
                "ScheduledProcedureStepStartDate": "20260905",
                "ScheduledProcedureStepStartTime": "110000",
                "ScheduledProcedureStepDescription": f"step {s}",
            },
        )
        for s in sps_ids
    )
    node.app.worklist.apply_orders(
        [
            Order(
                STUDY,
                PatientRef("MPPS1"),
                {"PatientName": "Doe^Jane"},
                {"RequestedProcedureID": "RP1", "RequestedProcedureDescription": "CT", "AccessionNumber": "ACC1"},
                steps,
            )
        ]
    )


def status_of(node: Node, sps_id: str) -> str:
    found = node.app.worklist.item(ItemKey(STUDY, sps_id))
    assert found is not None
    return found[1]


def in_progress(*steps: tuple[str, str], status: str = "IN PROGRESS") -> Dataset:
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MPPS1"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT1"
    ds.PerformedProcedureStepStartDate = "20260905"
    ds.PerformedProcedureStepStartTime = "111500"
    ds.Modality = "CT"
    if status:
        ds.PerformedProcedureStepStatus = status
    items = []
    for study, sps_id in steps:
        item = Dataset()
        item.StudyInstanceUID = study
        item.AccessionNumber = "ACC1"
        item.RequestedProcedureID = "RP1"
        item.ScheduledProcedureStepID = sps_id
        items.append(item)
    ds.ScheduledStepAttributesSequence = items
    return ds


def final(status: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20260905"
    ds.PerformedProcedureStepEndTime = "113000"
    ds.PerformedSeriesSequence = []
    return ds


@pytest.fixture
def modality(node: Node) -> Iterator[Association]:
    ae = AE(ae_title="CT1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    yield assoc
    assoc.release()


def create(assoc: Association, ds: Dataset, uid: str) -> int:
    status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
    return int(status.Status)


def update(assoc: Association, ds: Dataset, uid: str) -> Dataset:
    status, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
    return status


def test_in_progress_then_completed(node: Node, modality: Association, tmp_path: Path) -> None:
    schedule(node, "SPS-1", "SPS-2")
    uid = generate_uid()
    assert create(modality, in_progress((STUDY, "SPS-1")), uid) == 0x0000
    assert status_of(node, "SPS-1") == "STARTED"
    assert status_of(node, "SPS-2") == "SCHEDULED"
    [started] = findscu_mwl(node, tmp_path, "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID=SPS-1")
    assert sps(started).ScheduledProcedureStepStatus == "STARTED"
    assert create(modality, in_progress((STUDY, "SPS-1")), uid) == 0x0111  # duplicate SOP Instance
    assert update(modality, final("COMPLETED"), uid).Status == 0x0000
    assert status_of(node, "SPS-1") == "COMPLETED"
    # A completed step leaves the default worklist.
    assert [sps(a).ScheduledProcedureStepID for a in findscu_mwl(node, tmp_path)] == ["SPS-2"]
    again = update(modality, final("DISCONTINUED"), uid)
    assert again.Status == 0x0110
    assert again.get("ErrorID") == 0xA710
    assert status_of(node, "SPS-1") == "COMPLETED"
    stored = node.app.mpps.get(uid)
    assert stored is not None and stored[0] == "COMPLETED"
    assert stored[1]["PerformedProcedureStepEndTime"] == "113000"


def test_discontinued(node: Node, modality: Association) -> None:
    schedule(node, "SPS-1", "SPS-2")
    uid = generate_uid()
    assert create(modality, in_progress((STUDY, "SPS-1"), (STUDY, "SPS-2")), uid) == 0
    assert (status_of(node, "SPS-1"), status_of(node, "SPS-2")) == ("STARTED", "STARTED")
    assert update(modality, final("DISCONTINUED"), uid).Status == 0
    assert (status_of(node, "SPS-1"), status_of(node, "SPS-2")) == ("DISCONTINUED", "DISCONTINUED")


def test_refusals(node: Node, modality: Association) -> None:
    schedule(node, "SPS-1")
    assert create(modality, in_progress((STUDY, "SPS-1"), status="COMPLETED"), generate_uid()) == 0x0106
    assert create(modality, in_progress((STUDY, "SPS-1"), status=""), generate_uid()) == 0x0120
    assert update(modality, final("COMPLETED"), generate_uid()).Status == 0x0112  # unknown instance
    uid = generate_uid()
    assert create(modality, in_progress((STUDY, "SPS-1")), uid) == 0
    assert update(modality, final("FINISHED"), uid).Status == 0x0106
    assert node.app.mpps.get(uid)[0] == "IN PROGRESS"  # type: ignore[index]
    # Intermediate N-SET (no status) is allowed while IN PROGRESS.
    extra = Dataset()
    extra.PerformedProcedureStepDescription = "CT abdomen"
    assert update(modality, extra, uid).Status == 0
    assert status_of(node, "SPS-1") == "STARTED"


def test_unscheduled_mpps_changes_no_step(node: Node, modality: Association) -> None:
    schedule(node, "SPS-1")
    uid = generate_uid()
    assert create(modality, in_progress((STUDY, "")), uid) == 0  # no SPS ID: unscheduled case
    assert create(modality, in_progress(("1.2.3.999", "SPS-1")), generate_uid()) == 0  # another study
    assert status_of(node, "SPS-1") == "SCHEDULED"
    assert update(modality, final("COMPLETED"), uid).Status == 0
    assert status_of(node, "SPS-1") == "SCHEDULED"


def test_state_survives_a_restart(node_factory, tmp_path: Path) -> None:
    data = tmp_path / "restart"
    first = node_factory(data_dir=data)
    schedule(first, "SPS-1")
    ae = AE(ae_title="CT1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate(HOST, first.port, ae_title=first.aet)
    uid = generate_uid()
    assert create(assoc, in_progress((STUDY, "SPS-1")), uid) == 0
    assoc.release()
    first.stop()
    second = node_factory(data_dir=data)
    assoc = ae.associate(HOST, second.port, ae_title=second.aet)
    assert update(assoc, final("COMPLETED"), uid).Status == 0
    assoc.release()
    assert status_of(second, "SPS-1") == "COMPLETED"


def test_mpps_needs_the_mwl_right(node_factory) -> None:
    strict = node_factory(accept_any_ae=False, nodes=[{"ae_title": "VIEWER", "host": HOST, "mwl": False}])
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.add_requested_context(Verification)
    assoc = ae.associate(HOST, strict.port, ae_title=strict.aet)
    assert assoc.is_established
    assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [Verification]
    assert [(str(cx.abstract_syntax), cx.result) for cx in assoc.rejected_contexts] == [
        (ModalityPerformedProcedureStep, 0x03)
    ]  # abstract syntax not supported (for this AE)
    assoc.release()
