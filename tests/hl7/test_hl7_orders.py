"""HL7 -> MWL test cases of shared/specs/hl7-mwl.md (b): ER7 in over MLLP, exact ACK out, DCMTK findscu -W answer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hl7support import HL7Node, MLLPClient, er7, findscu_mwl, omi, orm, segment, segments, sps

SAET_MR1 = "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=MR1"


def test_case1_orm_happy_path(hl7_node: HL7Node, client: MLLPClient, tmp_path: Path) -> None:
    ack = client.request(orm())
    msh, msa = ack.split("\r")[:2]
    assert re.fullmatch(r"MSH\|\^~\\&\|APPLIANCE\|CLINIC\|RIS\|HOSP\|\d{14}\|\|ACK\^O01\^ACK\|\w+\|P\|2\.3\.1", msh)
    assert msa == "MSA|AA|MSG0001"
    assert ack.endswith("\r") and ack.count("\r") == 2
    [answer] = findscu_mwl(
        hl7_node, tmp_path, SAET_MR1, "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20260905"
    )
    step = sps(answer)
    assert (answer.AccessionNumber, answer.RequestedProcedureID, answer.StudyInstanceUID) == (
        "ACC-1",
        "RP-1",
        "1.2.3.4",
    )
    assert (
        step.ScheduledProcedureStepID,
        step.ScheduledProcedureStepStartDate,
        step.ScheduledProcedureStepStartTime,
    ) == ("SPS-1", "20260905", "110000")
    assert (step.Modality, step.ScheduledProcedureStepDescription) == ("MR", "MRI head")
    assert answer.RequestedProcedurePriority == "ROUTINE"
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"
    assert answer.SpecificCharacterSet == "ISO_IR 100"
    found = hl7_node.app.worklist.item(_key("1.2.3.4", "SPS-1"))
    assert found is not None
    attrs, status, _ = found
    code = attrs["ScheduledProcedureStepSequence"][0]["ScheduledProtocolCodeSequence"][0]
    assert (code["CodeValue"], code["CodingSchemeDesignator"]) == ("MRHEAD", "L")
    assert status == "SCHEDULED"


def _key(study: str, sps_id: str):
    from appliance.worklist.store import ItemKey

    return ItemKey(study, sps_id)


def test_case2_omi_with_two_ipc(hl7_node: HL7Node, client: MLLPClient, tmp_path: Path) -> None:
    ack = client.request(omi())
    assert segments(ack)["MSA"] == "MSA|AA|MSG0002"
    assert "|ACK^O23^ACK|" in ack
    answers = findscu_mwl(hl7_node, tmp_path, "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=MR1AE")
    assert len(answers) == 2
    assert {a.StudyInstanceUID for a in answers} == {"1.2.3.5"}
    assert {a.AccessionNumber for a in answers} == {"ACC-2026-0004"}
    assert sorted(sps(a).ScheduledProcedureStepID for a in answers) == ["SPS-2026-0004-1", "SPS-2026-0004-2"]
    assert {sps(a).ScheduledProcedureStepStartTime for a in answers} == {"113000"}
    [second] = findscu_mwl(hl7_node, tmp_path, "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID=*-2")
    assert sps(second).ScheduledProcedureStepDescription == "MR head with contrast"
    found = hl7_node.app.worklist.item(_key("1.2.3.5", "SPS-2026-0004-1"))
    assert found is not None
    attrs, _, _ = found
    step = attrs["ScheduledProcedureStepSequence"][0]
    assert step["ScheduledProtocolCodeSequence"][0]["CodeValue"] == "MR-HEAD-NC"
    assert (step["ScheduledStationName"], step["ScheduledProcedureStepLocation"]) == ("MR Room", "Floor 1")


def test_case3_xo_update_moves_and_renames(hl7_node: HL7Node, client: MLLPClient, tmp_path: Path) -> None:
    assert segments(client.request(orm()))["MSA"] == "MSA|AA|MSG0001"
    ack = client.request(orm("XO", "SC", "MSG0003", start="20260906090000", name="Doe^Jane"))
    assert segments(ack)["MSA"] == "MSA|AA|MSG0003"
    assert hl7_node.app.worklist.count() == 1
    date = "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate="
    assert findscu_mwl(hl7_node, tmp_path, date + "20260905") == []
    [answer] = findscu_mwl(hl7_node, tmp_path, date + "20260906")
    assert answer.PatientName == "Doe^Jane"
    assert sps(answer).ScheduledProcedureStepStartTime == "090000"


@pytest.mark.parametrize(("policy", "expected"), [("delete", None), ("cancel", "CANCELED")])
def test_case4_update_drops_a_step(hl7_factory, tmp_path: Path, policy: str, expected: str | None) -> None:
    node = hl7_factory(worklist={"dropped_steps": policy})
    client = MLLPClient(node.hl7_port)
    assert segments(client.request(omi()))["MSA"] == "MSA|AA|MSG0002"
    assert segments(client.request(omi("MSG0004", ipcs=(1,), control="XO")))["MSA"] == "MSA|AA|MSG0004"
    client.close()
    answers = findscu_mwl(node, tmp_path, "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=MR1AE")
    assert [sps(a).ScheduledProcedureStepID for a in answers] == ["SPS-2026-0004-1"]
    found = node.app.worklist.item(_key("1.2.3.5", "SPS-2026-0004-2"))
    assert (found[1] if found else None) == expected


@pytest.mark.parametrize(("control", "status"), [("CA", "CANCELED"), ("DC", "DISCONTINUED")])
def test_case5_cancel_and_discontinue(
    hl7_node: HL7Node, client: MLLPClient, tmp_path: Path, control: str, status: str
) -> None:
    assert segments(client.request(orm()))["MSA"] == "MSA|AA|MSG0001"
    assert segments(client.request(orm(control, "CA", "MSG0005")))["MSA"] == "MSA|AA|MSG0005"
    assert findscu_mwl(hl7_node, tmp_path, SAET_MR1) == []
    [answer] = findscu_mwl(
        hl7_node, tmp_path, SAET_MR1, f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus={status}"
    )
    assert sps(answer).ScheduledProcedureStepStatus == status
    assert [r.status for r in hl7_node.app.worklist.items()] == [status]


def test_case6_unknown_order_control(hl7_node: HL7Node, client: MLLPClient, tmp_path: Path) -> None:
    assert segments(client.request(orm()))["MSA"] == "MSA|AA|MSG0001"
    ack = client.request(orm("HD", "HD", "MSG0006", version="2.5.1", name="Changed^Name"))
    seg = segments(ack)
    text = "Invalid order control in field 1 and/or invalid order status in field 5"
    assert seg["MSA"] == f"MSA|AE|MSG0006|{text}"
    assert seg["ERR"] == f"ERR||ORC^1^1^1^1|101^Required field missing^HL70357|E||||{text}"
    # A v2.3.1 sender gets the field in ERR-1.
    seg = segments(client.request(orm("HD", "HD", "MSG0007")))
    assert seg["MSA"].startswith("MSA|AE|MSG0007|")
    assert seg["ERR"] == "ERR|ORC^1^1^101&Required field missing&HL70357"
    [answer] = findscu_mwl(hl7_node, tmp_path, SAET_MR1)
    assert answer.PatientName == "CompressedSamples^MR1"


def test_case7_missing_study_uid_rejected(hl7_factory) -> None:
    hl7_node = hl7_factory(hl7={"missing_study_uid": "reject"})
    client = MLLPClient(hl7_node.hl7_port)
    seg = segments(client.request(orm(zds=None)))
    assert seg["MSA"] == "MSA|AE|MSG0001|Required field missing: Study Instance UID"
    assert seg["ERR"] == "ERR|ZDS^1^1^101&Required field missing&HL70357"
    client.close()
    assert hl7_node.app.worklist.count() == 0


def test_case7_accession_based_uid(hl7_factory) -> None:
    node = hl7_factory(hl7={"missing_study_uid": "accession"})
    client = MLLPClient(node.hl7_port)
    for n in (1, 2):
        ack = client.request(orm("XO" if n == 2 else "NW", msg_id=f"M{n}", zds=None, accession="ACC-7", rp_id=""))
        assert segments(ack)["MSA"] == f"MSA|AA|M{n}"
    client.close()
    [row] = node.app.worklist.items()
    assert row.study_uid.startswith("2.25.") and row.accession == "ACC-7"
    attrs, _, _ = node.app.worklist.item(_key(row.study_uid, row.sps_id))
    assert attrs["RequestedProcedureID"] == "ACC-7"


def test_case7_generated_uid_is_reused(hl7_factory) -> None:
    node = hl7_factory(hl7={"missing_study_uid": "generate"})
    client = MLLPClient(node.hl7_port)
    assert segments(client.request(orm(zds=None, accession="ACC-8")))["MSA"] == "MSA|AA|MSG0001"
    [first] = node.app.worklist.items()
    assert first.study_uid.startswith("2.25.")
    ack = client.request(orm("XO", msg_id="M2", zds=None, accession="ACC-8", start="20260907080000"))
    assert segments(ack)["MSA"] == "MSA|AA|M2"
    client.close()
    [again] = node.app.worklist.items()
    assert (again.study_uid, again.start_date) == (first.study_uid, "20260907")


def test_case8_latin1_without_msh18(hl7_node: HL7Node, client: MLLPClient, tmp_path: Path) -> None:
    msg = orm(name="M\xfcller^Hans").encode("latin-1")
    assert segments(client.request(msg))["MSA"] == "MSA|AA|MSG0001"
    [answer] = findscu_mwl(hl7_node, tmp_path, SAET_MR1)
    assert answer.PatientName == "Müller^Hans"
    assert answer.SpecificCharacterSet == "ISO_IR 100"


def test_case8_utf8_and_cyrillic(hl7_node: HL7Node, client: MLLPClient, tmp_path: Path) -> None:
    utf8 = orm(name="Müller^Hans", charset="UNICODE UTF-8").encode("utf-8")
    assert segments(client.request(utf8, "utf-8"))["MSA"] == "MSA|AA|MSG0001"
    cyrillic = orm(
        name="Иванов^Пётр", charset="8859/5", msg_id="M2", pid="CYR1", zds="1.2.3.9", sps_id="SPS-9", accession="ACC-9"
    )
    ack = client.request(cyrillic.encode("iso8859-5"), "iso8859-5")
    assert segments(ack)["MSA"] == "MSA|AA|M2"
    assert "|8859/5" in ack.split("\r")[0]  # the ACK says which character set it is in
    answers = {a.PatientID: a for a in findscu_mwl(hl7_node, tmp_path, SAET_MR1)}
    assert answers["4MR1"].PatientName == "Müller^Hans"
    assert answers["4MR1"].SpecificCharacterSet == "ISO_IR 192"
    assert answers["CYR1"].PatientName == "Иванов^Пётр"
    assert answers["CYR1"].SpecificCharacterSet == "ISO_IR 144"


def test_case8_undecodable_bytes_get_an_ae(hl7_node: HL7Node, client: MLLPClient) -> None:
    msg = orm(charset="UNICODE UTF-8").encode("ascii").replace(b"CompressedSamples", b"Comp\xff\xfeSamples")
    seg = segments(client.request(msg))
    assert seg["MSA"].startswith("MSA|AE|MSG0001|message bytes are not valid UNICODE UTF-8")
    assert seg["ERR"].startswith("ERR|MSH^1^18^102&Data type error&HL70357")
    assert hl7_node.app.worklist.count() == 0
    # The connection still serves the next message.
    assert segments(client.request(orm(msg_id="M2")))["MSA"] == "MSA|AA|M2"


def test_case9_escapes(hl7_node: HL7Node, client: MLLPClient, tmp_path: Path) -> None:
    msg = orm(name="O\\E\\Brien^Pat", obr4="CTHEAD^CT Head \\T\\ Neck^L", modality="CT", obr13="Asthma\\.br\\Diabetes")
    assert segments(client.request(msg))["MSA"] == "MSA|AA|MSG0001"
    [answer] = findscu_mwl(
        hl7_node, tmp_path, "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT1", "MedicalAlerts"
    )
    assert sps(answer).ScheduledProcedureStepDescription == "CT Head & Neck"
    assert answer.MedicalAlerts == "Asthma Diabetes"
    # "\" separates DICOM values: PN cannot hold it, so it becomes a space.
    assert answer.PatientName == "O Brien^Pat"


def test_case10_names(hl7_node: HL7Node, client: MLLPClient, tmp_path: Path) -> None:
    msg = orm(name="Doe^Jane^Marie^Jr^Dr", pv1_8="1234^Curie^Marie^^^Prof", obr34="77&Tech&Tom")
    assert segments(client.request(msg))["MSA"] == "MSA|AA|MSG0001"
    [answer] = findscu_mwl(hl7_node, tmp_path, SAET_MR1)
    assert answer.PatientName == "Doe^Jane^Marie^Dr^Jr"
    assert answer.ReferringPhysicianName == "Curie^Marie^^Prof"
    assert sps(answer).ScheduledPerformingPhysicianName == "Tech^Tom"


def test_case11_demographics(hl7_node: HL7Node, client: MLLPClient, tmp_path: Path) -> None:
    msg = orm(pid_extra="197001011230|A", pv1_15="B6", extra=("OBX|1|NM|^BODY WEIGHT||62|kg",))
    assert segments(client.request(msg))["MSA"] == "MSA|AA|MSG0001"
    msg = orm(msg_id="M2", pid="U1", zds="1.2.3.11", sps_id="S11", accession="A11", pid_extra="19800101|U")
    assert segments(client.request(msg))["MSA"] == "MSA|AA|M2"
    answers = {a.PatientID: a for a in findscu_mwl(hl7_node, tmp_path, SAET_MR1, "PregnancyStatus", "PatientWeight")}
    first = answers["4MR1"]
    assert (first.PatientBirthDate, first.PatientSex, first.PregnancyStatus) == ("19700101", "O", 3)
    assert float(first.PatientWeight) == 62
    second = answers["U1"]
    assert second.PatientSex in ("", None)
    assert "PregnancyStatus" in second and second.PregnancyStatus in ("", None)


def test_case12_priority_and_time(hl7_node: HL7Node, client: MLLPClient, tmp_path: Path) -> None:
    assert segments(client.request(orm(orc7="^^^202609051130+0200^^S")))["MSA"] == "MSA|AA|MSG0001"
    [answer] = findscu_mwl(hl7_node, tmp_path, SAET_MR1)
    assert (sps(answer).ScheduledProcedureStepStartDate, sps(answer).ScheduledProcedureStepStartTime) == (
        "20260905",
        "113000",
    )
    assert answer.RequestedProcedurePriority == "STAT"
    assert segments(client.request(omi(tq1_9="A")))["MSA"] == "MSA|AA|MSG0002"
    [high, _] = findscu_mwl(hl7_node, tmp_path, "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=MR1AE")
    assert high.RequestedProcedurePriority == "HIGH"
    seg = segments(client.request(orm(msg_id="M3", orc7="^^^2026-09-05^^R", zds="1.2.3.12")))
    assert seg["MSA"].startswith("MSA|AE|M3|Data type error")
    assert seg["ERR"] == "ERR|ORC^1^7^102&Data type error&HL70357"
    assert hl7_node.app.worklist.count() == 3


def test_case13_hl7_null_clears_and_empty_keeps(hl7_node: HL7Node, client: MLLPClient, tmp_path: Path) -> None:
    assert segments(client.request(orm(pv1_8="1234^Curie^Marie")))["MSA"] == "MSA|AA|MSG0001"
    assert segments(client.request(orm("XO", msg_id="M2")))["MSA"] == "MSA|AA|M2"
    [kept] = findscu_mwl(hl7_node, tmp_path, SAET_MR1)
    assert kept.ReferringPhysicianName == "Curie^Marie"
    assert segments(client.request(orm("XO", msg_id="M3", pv1_8='""')))["MSA"] == "MSA|AA|M3"
    [cleared] = findscu_mwl(hl7_node, tmp_path, SAET_MR1)
    assert "ReferringPhysicianName" in cleared and cleared.ReferringPhysicianName in ("", None)


def test_case14_patient_update_and_merge(hl7_node: HL7Node, client: MLLPClient, tmp_path: Path) -> None:
    assert segments(client.request(orm()))["MSA"] == "MSA|AA|MSG0001"
    second = orm(msg_id="M2", zds="1.2.3.14", sps_id="SPS-14", accession="ACC-14")
    assert segments(client.request(second))["MSA"] == "MSA|AA|M2"
    a08 = er7(
        "MSH|^~\\&|HIS|HOSP|PACS|HOSP|20260905130000||ADT^A08|MSG0008|P|2.3.1",
        "PID|||4MR1^^^HOSP^MR||Renamed^Anna||19700101|F",
        "PV1||O",
    )
    ack = client.request(a08)
    assert "|ACK^A08^ACK|" in ack and segments(ack)["MSA"] == "MSA|AA|MSG0008"
    answers = findscu_mwl(hl7_node, tmp_path, "PatientID=4MR1")
    assert [a.PatientName for a in answers] == ["Renamed^Anna", "Renamed^Anna"]
    a40 = er7(
        "MSH|^~\\&|HIS|HOSP|PACS|HOSP|20260905140000||ADT^A40^ADT_A39|MSG0040|P|2.5",
        "PID|||NEW1^^^HOSP^MR||Renamed^Anna||19700101|F",
        "MRG|4MR1^^^HOSP^MR",
    )
    assert segments(client.request(a40))["MSA"] == "MSA|AA|MSG0040"
    assert findscu_mwl(hl7_node, tmp_path, "PatientID=4MR1") == []
    assert len(findscu_mwl(hl7_node, tmp_path, "PatientID=NEW1")) == 2
    seg = segments(client.request(orm("XO", msg_id="M9")))
    assert seg["MSA"].startswith("MSA|AE|M9|patient ID 4MR1 was merged into NEW1")
    assert seg["ERR"] == "ERR|PID^1^3^204&Unknown key identifier&HL70357"


def test_case14_merge_without_mrg_is_rejected(hl7_node: HL7Node, client: MLLPClient) -> None:
    a40 = er7("MSH|^~\\&|HIS|HOSP|PACS|HOSP|20260905140000||ADT^A40|M1|P|2.5", "PID|||NEW1")
    seg = segments(client.request(a40))
    assert seg["MSA"].startswith("MSA|AE|M1|")
    assert seg["ERR"].startswith("ERR||MRG^1^1^1^1|101^")


def test_case15_unsupported_types(hl7_node: HL7Node, client: MLLPClient) -> None:
    siu = er7("MSH|^~\\&|RIS|HOSP|PACS|HOSP|20260905120000||SIU^S12|M1|P|2.5", "SCH|1")
    seg = segments(client.request(siu))
    assert seg["MSA"].startswith("MSA|AR|M1|")
    assert seg["ERR"].startswith("ERR||MSH^1^9^1^1|200^Unsupported message type^HL70357|E")
    o02 = orm(msg_id="M2", version="2.5").replace("ORM^O01", "ORM^O02")
    seg = segments(client.request(o02))
    assert seg["MSA"].startswith("MSA|AR|M2|")
    assert seg["ERR"].startswith("ERR||MSH^1^9^1^2|201^Unsupported event code^HL70357|E")
    assert hl7_node.app.worklist.count() == 0


def test_case15_sender_not_accepted(hl7_factory) -> None:
    node = hl7_factory(hl7={"accepted_senders": ["OTHER|HOSP", "RIS2"]})
    client = MLLPClient(node.hl7_port)
    seg = segments(client.request(orm()))
    assert seg["MSA"].startswith("MSA|AR|MSG0001|Table value not found")
    assert seg["ERR"] == "ERR|MSH^1^3^103&Table value not found&HL70357"
    ris2 = orm(msg_id="M2").replace("|RIS|HOSP|", "|RIS2|ELSEWHERE|")
    assert segments(client.request(ris2))["MSA"] == "MSA|AA|M2"
    client.close()


def test_incomplete_orders_are_never_stored(hl7_node: HL7Node, client: MLLPClient) -> None:
    seg = segments(client.request(orm(msg_id="M2", obr4="")))
    assert seg["MSA"].startswith("MSA|AE|M2|")
    seg = segments(client.request(orm(msg_id="M3", pid="")))
    assert seg["MSA"] == "MSA|AE|M3|Required field missing: patient ID (PID-3)"
    assert seg["ERR"] == "ERR|PID^1^3^101&Required field missing&HL70357"
    seg = segments(client.request(orm(msg_id="M4", modality="RAD")))
    assert seg["ERR"] == "ERR|OBR^1^24^103&Table value not found&HL70357"
    assert hl7_node.app.worklist.count() == 0


def test_message_with_two_orders_is_all_or_nothing(hl7_node: HL7Node, client: MLLPClient) -> None:
    good = orm()
    obr2 = segment("OBR", {2: "ORD-2", 3: "FIL-2", 4: "^^^X^Y^L", 18: "A2", 19: "R2", 20: "S2", 24: "CT"})
    obr2 += "\rZDS|1.2.3.99\r"
    bad_second = good + "ORC|NW|ORD-2|FIL-2||SC||^^^2026-09-05^^R\r" + obr2
    seg = segments(client.request(bad_second))
    assert seg["MSA"].startswith("MSA|AE|MSG0001|Data type error")
    assert hl7_node.app.worklist.count() == 0
    two = good + "ORC|NW|ORD-2|FIL-2||SC||^^^20260905120000^^R\r" + obr2
    assert segments(client.request(two))["MSA"] == "MSA|AA|MSG0001"
    assert sorted(r.station_aet for r in hl7_node.app.worklist.items()) == ["CT1", "MR1"]


def test_log_keeps_messages_and_acks(hl7_node: HL7Node, client: MLLPClient) -> None:
    client.request(orm())
    client.request(orm("HD", "HD", "MSG0002"))
    log = hl7_node.app.hl7_log.recent()
    assert [(m.control_id, m.ack_code, m.message_type) for m in log] == [
        ("MSG0002", "AE", "ORM^O01"),
        ("MSG0001", "AA", "ORM^O01"),
    ]
    assert log[1].message.startswith(b"MSH|^~\\&|RIS|")
    assert "MSA|AA|MSG0001" in log[1].ack
    assert "Invalid order control" in log[0].error


def test_send_ack_off(hl7_factory) -> None:
    node = hl7_factory(hl7={"send_ack": False})
    client = MLLPClient(node.hl7_port, timeout=1.0)
    client.send(orm())
    client.send(orm(msg_id="M2", zds="1.2.3.20", sps_id="S20", accession="A20"))
    # Both are applied, in order, and nothing comes back.
    from conftest import wait_until

    wait_until(lambda: node.app.worklist.count() == 2)
    with pytest.raises(TimeoutError):
        client.sock.recv(10)
    client.close()
