"""Events out: one persistent, confirmed message per new study, new series and worklist step status change."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from amqpsupport import Broker, amqp_table, drain, encoded, make_cfg

from appliance.worklist.store import ItemKey, Order, PatientRef, SpsStatus, StepOrder

import dicomdata
from conftest import HOST, dcmtk, free_port, wait_until


def _order(accession: str, study_uid: str = "", sps: str = "S1") -> Order:
    return Order(
        study_uid,
        PatientRef("PAT1"),
        {"PatientName": "DOE^JANE", "PatientBirthDate": "19800101", "PatientSex": "F"},
        {
            "AccessionNumber": accession,
            "RequestedProcedureID": f"RP-{accession}",
            "RequestedProcedureDescription": "CT head",
        },
        (
            StepOrder(
                sps,
                SpsStatus.SCHEDULED,
                {
                    "Modality": "CT",
                    "ScheduledStationAETitle": "CT1",
                    "ScheduledProcedureStepStartDate": "20261204",
                    "ScheduledProcedureStepStartTime": "101500",
                    "ScheduledProcedureStepDescription": "head",
                },
            ),
        ),
        source="test",
    )


def test_new_study_and_series_from_c_store(broker: Broker, running, tmp_path: Path) -> None:
    table = amqp_table(broker)
    cfg = make_cfg(
        tmp_path / "data", table, dicom={"bind": HOST, "port": free_port(), "tls_port": 0, "free_space_limit_mb": 1}
    )
    r = running(cfg)
    from appliance.dicom.server import DicomNode

    node = DicomNode(r.app, None)
    node.start()
    try:
        files = tmp_path / "files"
        files.mkdir()
        insts = dicomdata.study("PAT7", "DOE^JOHN", ("CT", "MR"), 2)
        for inst in insts:
            inst.write(files)
        dcmtk("storescu", "-aec", cfg.dicom.ae_title, "+sd", HOST, str(cfg.dicom.port), str(files), check=True)
        wait_until(lambda: r.backlog() == 0)
    finally:
        node.stop(grace=2.0)
    got = drain(broker, table["studies_queue"])
    bodies = [ET.fromstring(b) for b, _ in got]
    # One study and two series, nothing for the four instances as such.
    assert sorted((e.tag, e.findtext("uid")) for e in bodies) == sorted(
        [("study", insts[0].study_uid), ("series", insts[0].series_uid), ("series", insts[2].series_uid)]
    )
    assert bodies[0].tag == "study"  # the study is reported before its series
    for body, props in got:
        assert props.delivery_mode == 2
        assert props.content_type == "application/xml"
        assert len(props.message_id) == 32
        assert body.decode("utf-8")
    assert len({p.message_id for _, p in got}) == 3
    # Stored again: nothing new to report.
    for inst in insts:
        r.store(inst)
    wait_until(lambda: r.backlog() == 0)
    assert drain(broker, table["studies_queue"]) == []


def test_worklist_status_changes_and_json(broker: Broker, running, tmp_path: Path) -> None:
    table = amqp_table(broker, format="json", notify_new_series=False)
    r = running(make_cfg(tmp_path / "data", table))
    wl = r.app.worklist
    result = wl.apply_orders([_order("ACC-9", "1.2.826.0.1.3680043.2.1125.9")])
    key = result.created[0]
    with wl.db.transaction() as conn:  # MPPS's way: a status change in the core's transaction
        assert wl.set_step_status(conn, key, SpsStatus.STARTED)
    with wl.db.transaction() as conn:
        wl.set_step_status(conn, key, SpsStatus.STARTED)  # no change: no message
    with wl.db.transaction() as conn:
        wl.set_step_status(conn, ItemKey(key.study_uid, key.sps_id), SpsStatus.COMPLETED)
    insts = dicomdata.study("PAT1", "DOE^JANE", ("CT",), 3)
    for inst in insts:
        r.store(inst)
    wait_until(lambda: r.backlog() == 0)
    states = [json.loads(b) for b, _ in drain(broker, table["mwl_changed_queue"])]
    assert [(s["event"], s["accession_number"], s["status"]) for s in states] == [
        ("mwl_status", "ACC-9", "IN_PROGRESS"),
        ("mwl_status", "ACC-9", "COMPLETED"),
    ]
    assert states[0]["sps_id"] == "S1" and states[0]["patient_id"] == "PAT1" and states[0]["modality"] == "CT"
    studies = [json.loads(b) for b, _ in drain(broker, table["studies_queue"])]
    assert len(studies) == 1  # new series are off
    assert studies[0]["event"] == "new_study"
    assert studies[0]["study_uid"] == insts[0].study_uid
    assert studies[0]["patient_id"] == "PAT1" and studies[0]["accession_number"] == "ACC1"
    assert studies[0]["modalities"] == "CT" and studies[0]["series_count"] == 1
    assert studies[0]["instance_count"] >= 1


def test_xml_escapes_and_is_utf8(broker: Broker, running, tmp_path: Path) -> None:
    table = amqp_table(broker)
    r = running(make_cfg(tmp_path / "data", table))
    r.app.worklist.apply_orders([_order("A<&>Ü", "1.2.826.0.1.3680043.2.1125.10")])
    with r.app.worklist.db.transaction() as conn:
        r.app.worklist.set_step_status(conn, ItemKey("1.2.826.0.1.3680043.2.1125.10", "S1"), SpsStatus.CANCELED)
    wait_until(lambda: r.backlog() == 0)
    [(body, _)] = drain(broker, table["mwl_changed_queue"])
    root = ET.fromstring(body)
    assert root.tag == "mwl"
    assert root.findtext("accession_number") == "A<&>Ü"
    assert root.findtext("status") == "CANCELED"


def test_disabled_records_nothing(broker: Broker, tmp_path: Path) -> None:
    from appliance.cli.amqp import build_amqp
    from appliance.core import Appliance
    from appliance.notify.outbox import Outbox

    on = make_cfg(tmp_path / "data", amqp_table(broker))
    app = Appliance(on)
    assert build_amqp(app, on) is not None
    assert Outbox(app.db).recording() == {"study", "series", "mwl"}
    off = make_cfg(tmp_path / "data", {"enabled": False})
    assert build_amqp(app, off) is None
    assert Outbox(app.db).recording() == set()
    inst = dicomdata.study("P", "N^N", ("CT",), 1)[0]
    ds = inst.dataset()
    app.store(encoded(inst), str(ds.file_meta.TransferSyntaxUID), str(ds.SOPClassUID), inst.sop_uid)
    assert Outbox(app.db).backlog("amqp") == 0
    app.stop()


def test_status_changes_from_mpps_hl7_and_staff(broker: Broker, running, tmp_path: Path) -> None:
    from hl7support import orm
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

    from appliance.dicom.server import DicomNode
    from hl7.handlers import MessageProcessor

    table = amqp_table(broker, notify_new_study=False, notify_new_series=False)
    cfg = make_cfg(
        tmp_path / "data", table, dicom={"bind": HOST, "port": free_port(), "tls_port": 0, "free_space_limit_mb": 1}
    )
    r = running(cfg)
    study = "1.2.826.0.1.3680043.2.1125.55"
    steps = tuple(
        StepOrder(
            s,
            SpsStatus.SCHEDULED,
            {
                "Modality": "CT",
                "ScheduledStationAETitle": "CT1",
                "ScheduledProcedureStepStartDate": "20261204",
                "ScheduledProcedureStepStartTime": "110000",
                "ScheduledProcedureStepDescription": f"step {s}",
            },
        )
        for s in ("S1", "S2")
    )
    r.app.worklist.apply_orders(
        [
            Order(
                study,
                PatientRef("MPPS1"),
                {"PatientName": "Doe^Jane"},
                {"RequestedProcedureID": "RP1", "RequestedProcedureDescription": "CT", "AccessionNumber": "ACC1"},
                steps,
            )
        ]
    )
    node = DicomNode(r.app, None)
    node.start()
    try:
        ae = AE(ae_title="CT1")
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate(HOST, cfg.dicom.port, ae_title=cfg.dicom.ae_title)
        assert assoc.is_established
        ds = Dataset()
        ds.PatientID, ds.PerformedProcedureStepID, ds.Modality = "MPPS1", "PPS1", "CT"
        ds.PerformedProcedureStepStatus = "IN PROGRESS"
        ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20261204", "111500"
        item = Dataset()
        item.StudyInstanceUID, item.ScheduledProcedureStepID, item.AccessionNumber = study, "S1", "ACC1"
        ds.ScheduledStepAttributesSequence = [item]
        uid = "1.2.826.0.1.3680043.2.1125.56"
        status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
        assert status.Status == 0
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        done.PerformedProcedureStepEndDate, done.PerformedProcedureStepEndTime = "20261204", "113000"
        done.PerformedSeriesSequence = []
        status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
        assert status.Status == 0
        assoc.release()
    finally:
        node.stop(grace=2.0)
    cancel = orm(
        control="CA",
        status="CA",
        msg_id="C1",
        pid="MPPS1",
        zds=study,
        accession="ACC1",
        rp_id="RP1",
        sps_id="S2",
        modality="CT",
    )
    ack = MessageProcessor(r.app, cfg.hl7)(cancel.encode(), "test")
    assert ack is not None and b"MSA|AA" in ack
    s2 = next(i for i in r.app.worklist.items() if i.sps_id == "S2")
    assert r.app.worklist.reset([s2.id]) == 1  # the staff UI's "set back to SCHEDULED"
    wait_until(lambda: r.backlog() == 0)
    got = [
        (ET.fromstring(b).findtext("accession_number"), ET.fromstring(b).findtext("status"))
        for b, _ in drain(broker, table["mwl_changed_queue"])
    ]
    assert got == [("ACC1", "IN_PROGRESS"), ("ACC1", "COMPLETED"), ("ACC1", "CANCELED"), ("ACC1", "SCHEDULED")]
