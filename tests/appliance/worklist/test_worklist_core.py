"""Worklist core rules without a network: status precedence, patient updates, message log retention, config."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from appliance.config import ConfigError, parse_config
from appliance.db import Database
from appliance.errors import InvalidItem
from appliance.worklist.hl7log import MessageLog
from appliance.worklist.store import (
    ItemKey,
    Order,
    PatientRef,
    PatientResult,
    PatientUpdate,
    SpsStatus,
    StepOrder,
    Worklist,
)

STUDY = "1.2.826.0.1.3680043.99.7"


def order(
    status: SpsStatus = SpsStatus.SCHEDULED,
    name: str = "Doe^Jane",
    *sps_ids: str,
    patient: str = "P1",
    start: str = "110000",
    study: str = STUDY,
    **attrs: str,
) -> Order:
    steps = tuple(
        StepOrder(
            s,
            status,
            {
                "Modality": "CT",
                "ScheduledStationAETitle": "CT1",
                "ScheduledProcedureStepStartDate": "20260905",
                "ScheduledProcedureStepStartTime": start,
                "ScheduledProcedureStepDescription": "CT",
            },
        )
        for s in sps_ids or ("S1",)
    )
    return Order(
        study,
        PatientRef(patient),
        {"PatientName": name},
        {"RequestedProcedureID": "RP1", "RequestedProcedureDescription": "CT", **attrs},
        steps,
        replace_steps=status == SpsStatus.SCHEDULED,
    )


@pytest.fixture
def wl(tmp_path: Path) -> Worklist:
    return Worklist(Database(tmp_path / "wl.db"))


def status(wl: Worklist, sps: str = "S1", study: str = STUDY) -> str:
    found = wl.item(ItemKey(study, sps))
    assert found is not None
    return found[1]


def test_a_changed_order_does_not_undo_the_modalitys_progress(wl: Worklist) -> None:
    wl.apply_orders([order()])
    with wl.db.transaction() as conn:
        wl.set_step_status(conn, ItemKey(STUDY, "S1"), SpsStatus.STARTED)
    result = wl.apply_orders([order(SpsStatus.SCHEDULED, "Doe^Janet", start="120000")])
    assert result.updated == [ItemKey(STUDY, "S1")]
    assert status(wl) == "STARTED"
    attrs, _, _ = wl.item(ItemKey(STUDY, "S1"))  # type: ignore[misc]
    assert attrs["PatientName"] == "Doe^Janet"
    wl.apply_orders([order(SpsStatus.CANCELED)])
    assert status(wl) == "CANCELED"
    wl.apply_orders([order()])  # re-ordered after a cancel: scheduled again
    assert status(wl) == "SCHEDULED"


def test_patient_update_changes_open_items_only(wl: Worklist) -> None:
    wl.apply_orders([order(SpsStatus.SCHEDULED, "Doe^Jane", "S1", "S2")])
    wl.apply_orders([order(SpsStatus.SCHEDULED, "Doe^Jane", "S3", study="1.2.3.8")])
    with wl.db.transaction() as conn:
        wl.set_step_status(conn, ItemKey(STUDY, "S2"), SpsStatus.COMPLETED)
    assert wl.update_patient(PatientUpdate(PatientRef("P1"), {"PatientName": "Roe^Jane"})).changed == 2
    names = {r.sps_id: r.patient_name for r in wl.items()}
    assert names == {"S1": "Roe^Jane", "S2": "Doe^Jane", "S3": "Roe^Jane"}
    assert wl.update_patient(PatientUpdate(PatientRef("NOBODY"), {"PatientName": "X^Y"})) == PatientResult(0, False)


def test_a_bad_value_changes_nothing(wl: Worklist) -> None:
    wl.apply_orders([order()])
    with pytest.raises(InvalidItem) as info:
        wl.apply_orders([order(SpsStatus.SCHEDULED, "Doe^Jane", "S1", "S2", AccessionNumber="A" * 17)])
    assert info.value.attribute == "AccessionNumber"
    assert [r.sps_id for r in wl.items()] == ["S1"]
    with pytest.raises(InvalidItem):
        wl.update_patient(PatientUpdate(PatientRef("P1"), {"PatientBirthDate": "1970-01-01"}))
    truncating = Worklist(wl.db, parse_config({"worklist": {"long_values": "truncate"}}).worklist)
    truncating.apply_orders([order(AccessionNumber="A" * 17)])
    assert wl.items()[0].accession == "A" * 16


def test_message_log_retention(tmp_path: Path) -> None:
    db = Database(tmp_path / "log.db")
    log = MessageLog(db, retention_days=30)
    log.record("127.0.0.1:1", "ORM^O01", "C1", "AA", "", b"MSH|...", "MSA|AA|C1")
    assert [m.control_id for m in log.recent()] == ["C1"]
    assert log.purge(datetime.now() + timedelta(days=29)) == 0
    assert log.purge(datetime.now() + timedelta(days=31)) == 1
    assert log.recent() == []
    off = MessageLog(db, retention_days=0)
    off.record("p", "ORM^O01", "C2", "AA", "", b"x", "")
    assert off.recent() == []


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"hl7": {"missing_study_uid": "maybe"}}, "missing_study_uid"),
        ({"hl7": {"station_aets": {"CT": 5}}}, "station_aets"),
        ({"hl7": {"station_aets": {"CT": "BAD\\AE"}}}, "station_aets CT"),
        ({"hl7": {"accepted_senders": "RIS"}}, "accepted_senders"),
        ({"hl7": {"port": 70000}}, "[hl7] port"),
        ({"hl7": {"send_ack": "no"}}, "send_ack"),
        ({"hl7": {"unknown": 1}}, "unknown key"),
        ({"worklist": {"hidden_statuses": ["DONE"]}}, "hidden_statuses"),
        ({"worklist": {"dropped_steps": "keep"}}, "dropped_steps"),
    ],
)
def test_config_errors(table: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(table)
    assert message in str(info.value)


def test_unknown_default_charset_is_a_config_error(tmp_path: Path) -> None:
    from appliance.core import Appliance
    from hl7.listener import HL7Listener

    app = Appliance(parse_config({"appliance": {"data_dir": str(tmp_path)}, "hl7": {"default_charset": "klingon"}}))
    with pytest.raises(ConfigError) as info:
        HL7Listener(app)
    assert "default_charset" in str(info.value)
    app.stop()
