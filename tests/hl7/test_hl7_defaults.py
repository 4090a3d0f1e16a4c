"""Plug-and-play HL7 defaults (issue 14): what a typical HIS order gets on the default settings.

Every default has a test here that fails when the default changes: the nodes below are started with the
built-in ``[hl7]`` and ``[worklist]`` defaults (only ports and ACK addressing set), not the spec's test table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from hl7support import HL7Node, MLLPClient, er7, findscu_mwl, orm, segments, sps
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from hl7.mapping import order_uid

from conftest import HOST

#: Only what the listener needs to run in a test; every policy stays at its built-in default.
PLAIN = {"station_aets": {}, "sending_facility": "CLINIC"}


@pytest.fixture
def plain(hl7_factory: Any) -> HL7Node:
    return hl7_factory(hl7=PLAIN)


def test_order_without_zds_gets_a_deterministic_uid(hl7_factory: Any, tmp_path: Path) -> None:
    first_node = hl7_factory(hl7=PLAIN)
    client = MLLPClient(first_node.hl7_port)
    assert segments(client.request(orm(zds=None, accession="ACC-9")))["MSA"] == "MSA|AA|MSG0001"
    [row] = first_node.app.worklist.items()
    # ORC-2 ORD-1, ORC-3 FIL-1, OBR-18 ACC-9: the UID is derived from the order, not random.
    assert row.study_uid == order_uid("ORD-1", "FIL-1", "ACC-9")
    assert row.study_uid.startswith("2.25.") and len(row.study_uid) <= 64
    # An update of the same order (new start) keeps the UID and the one item.
    ack = client.request(orm("XO", msg_id="M2", zds=None, accession="ACC-9", start="20260907080000"))
    assert segments(ack)["MSA"] == "MSA|AA|M2"
    [again] = first_node.app.worklist.items()
    assert (again.study_uid, again.start_date) == (row.study_uid, "20260907")
    # ...and a cancel of it finds the same step.
    assert segments(client.request(orm("CA", "CA", msg_id="M3", zds=None, accession="ACC-9")))["MSA"] == "MSA|AA|M3"
    assert first_node.app.worklist.items()[0].status == "CANCELED"
    client.close()
    # Another appliance makes the same UID for the same order (nothing random, nothing stored).
    other = hl7_factory(hl7=PLAIN)
    client = MLLPClient(other.hl7_port)
    assert segments(client.request(orm(zds=None, accession="ACC-9")))["MSA"] == "MSA|AA|MSG0001"
    client.close()
    assert other.app.worklist.items()[0].study_uid == row.study_uid
    # Another order of the same patient gets another UID.
    assert order_uid("ORD-2", "FIL-2", "ACC-10") != row.study_uid


def test_order_without_station_is_accepted_with_a_warning(
    plain: HL7Node, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = MLLPClient(plain.hl7_port)
    with caplog.at_level(logging.WARNING, logger="hl7"):
        seg = segments(client.request(orm(modality="US", zds=None)))
    client.close()
    assert seg["MSA"] == "MSA|AA|MSG0001" and "ERR" not in seg
    warnings = [r.getMessage() for r in caplog.records if r.name == "hl7" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no Scheduled Station AE Title" in warnings[0] and "SPS-1 (US)" in warnings[0]
    [logged] = plain.app.hl7_log.recent()
    assert logged.ack_code == "AA" and "no Scheduled Station AE Title" in logged.error
    # Found by a query without a station key, with the station present and empty...
    [answer] = findscu_mwl(plain, tmp_path, "PatientID=4MR1")
    assert sps(answer).Modality == "US"
    assert "ScheduledStationAETitle" in sps(answer) and sps(answer).ScheduledStationAETitle in ("", None)
    # ...and not by a station's own query (DCMTK matches an empty value only universally).
    assert findscu_mwl(plain, tmp_path, "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=US1") == []


def test_station_comes_from_station_aets_then_default(hl7_factory: Any, tmp_path: Path) -> None:
    node = hl7_factory(hl7={"station_aets": {"US": "US1"}, "default_station_aet": "ANY1"})
    client = MLLPClient(node.hl7_port)
    assert segments(client.request(orm(modality="US")))["MSA"] == "MSA|AA|MSG0001"
    assert (
        segments(client.request(orm(msg_id="M2", modality="CT", zds="1.2.3.9", sps_id="S9", accession="A9")))["MSA"]
        == "MSA|AA|M2"
    )
    client.close()
    stations = {r.modality: r.station_aet for r in node.app.worklist.items()}
    assert stations == {"US": "US1", "CT": "ANY1"}


def _mpps_complete(node: HL7Node, study: str, sps_id: str) -> None:
    """A modality performs the step: MPPS N-CREATE IN PROGRESS, then N-SET COMPLETED (pynetdicom)."""
    ae = AE(ae_title="MR1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    ds = Dataset()
    ds.PatientID = "4MR1"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "MR"
    ref = Dataset()
    ref.StudyInstanceUID = study
    ref.ScheduledProcedureStepID = sps_id
    ds.ScheduledStepAttributesSequence = [ref]
    uid = generate_uid()
    status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
    assert status.Status == 0
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
    assert status.Status == 0
    assoc.release()


@pytest.mark.parametrize("control", ["CA", "DC"])
def test_cancel_of_a_completed_step_is_refused_by_default(plain: HL7Node, control: str) -> None:
    client = MLLPClient(plain.hl7_port)
    assert segments(client.request(orm()))["MSA"] == "MSA|AA|MSG0001"
    _mpps_complete(plain, "1.2.3.4", "SPS-1")
    seg = segments(client.request(orm(control, "CA", msg_id="M2")))
    client.close()
    assert seg["MSA"].startswith("MSA|AE|M2|step SPS-1 of study 1.2.3.4 is already COMPLETED")
    assert seg["ERR"] == "ERR|ORC^1^1^206&Application record locked&HL70357"
    assert plain.app.worklist.items()[0].status == "COMPLETED"


def test_cancel_of_a_completed_step_can_always_apply(hl7_factory: Any) -> None:
    node = hl7_factory(hl7=PLAIN, worklist={"cancel_completed": "apply"})
    client = MLLPClient(node.hl7_port)
    assert segments(client.request(orm()))["MSA"] == "MSA|AA|MSG0001"
    _mpps_complete(node, "1.2.3.4", "SPS-1")
    assert segments(client.request(orm("CA", "CA", msg_id="M2")))["MSA"] == "MSA|AA|M2"
    client.close()
    assert node.app.worklist.items()[0].status == "CANCELED"


A08_UNKNOWN = er7(
    "MSH|^~\\&|HIS|HOSP|PACS|HOSP|20260905130000||ADT^A08|A1|P|2.5",
    "PID|||NOBODY^^^HOSP^MR||Nobody^Nora||19700101|F",
    "PV1||O",
)
A40_UNKNOWN = er7(
    "MSH|^~\\&|HIS|HOSP|PACS|HOSP|20260905140000||ADT^A40^ADT_A39|A2|P|2.5",
    "PID|||NEW7^^^HOSP^MR||Nobody^Nora",
    "MRG|GONE7^^^HOSP^MR",
)


def test_adt_for_unknown_patients_is_aa_nothing_to_update_by_default(plain: HL7Node) -> None:
    client = MLLPClient(plain.hl7_port)
    assert segments(client.request(orm()))["MSA"] == "MSA|AA|MSG0001"
    seg = segments(client.request(A08_UNKNOWN))
    assert seg["MSA"] == "MSA|AA|A1|Nothing to update: patient ID NOBODY has no worklist item" and "ERR" not in seg
    seg = segments(client.request(A40_UNKNOWN))
    assert seg["MSA"] == "MSA|AA|A2|Nothing to update: prior patient ID GONE7 has no worklist item"
    # A known patient still gets a plain AA.
    known = A08_UNKNOWN.replace("NOBODY", "4MR1").replace("|A1|", "|A3|")
    assert segments(client.request(known))["MSA"] == "MSA|AA|A3"
    client.close()
    assert [r.patient_name for r in plain.app.worklist.items()] == ["Nobody^Nora"]


def test_adt_for_unknown_patients_can_be_refused(hl7_factory: Any) -> None:
    node = hl7_factory(hl7={**PLAIN, "unknown_patient": "reject"})
    client = MLLPClient(node.hl7_port)
    seg = segments(client.request(A08_UNKNOWN))
    assert seg["MSA"] == "MSA|AE|A1|patient ID NOBODY has no worklist item"
    assert seg["ERR"] == (
        "ERR||PID^1^3^1^1|204^Unknown key identifier^HL70357|E||||patient ID NOBODY has no worklist item"
    )
    seg = segments(client.request(A40_UNKNOWN))
    assert seg["MSA"].startswith("MSA|AE|A2|prior patient ID GONE7")
    assert seg["ERR"].startswith("ERR||MRG^1^1^1^1|204^")
    client.close()


def test_order_control_outside_table_0119_is_err_103(plain: HL7Node) -> None:
    client = MLLPClient(plain.hl7_port)
    seg = segments(client.request(orm("ZZ", "SC", version="2.5.1")))
    assert seg["MSA"].startswith("MSA|AE|MSG0001|Table value not found: order control 'ZZ'")
    assert seg["ERR"].startswith("ERR||ORC^1^1^1^1|103^Table value not found^HL70357|E|")
    # A table-0119 code the worklist does not take is still 101.
    seg = segments(client.request(orm("RP", "SC", msg_id="M2", version="2.5.1")))
    assert seg["ERR"].startswith("ERR||ORC^1^1^1^1|101^Required field missing^HL70357|E|")
    client.close()
    assert plain.app.worklist.count() == 0
