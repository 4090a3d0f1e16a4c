"""Worklist orders in: the manual's XML messages on the input queue become worklist items through the core."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pika
from amqpsupport import Broker, amqp_table, drain, make_cfg

from appliance.notify.amqp import declare
from appliance.notify.log import AmqpLog
from appliance.worklist.store import ItemKey

from conftest import wait_until


def procedure(
    accession: str = "ACC-100",
    study_uid: str = ":SERVER",
    patient: str = "PAT100",
    steps: str = "",
    name: str = "MÜLLER^ANNA",
) -> bytes:
    steps = (
        steps
        or """
      <step><id>SPS-1</id><modality>CT</modality><station_aet>CT1</station_aet><start_date>20261204</start_date>
        <start_time>093000</start_time><description>CT head plain</description><physician>WHO^DR</physician>
        <protocol_code><code>P1</code><scheme>99LOCAL</scheme><meaning>Head protocol</meaning></protocol_code>
      </step>"""
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<mwl><procedure>
  <patient><id>{patient}</id><name>{name}</name><birth_date>19750302</birth_date><sex>F</sex></patient>
  <study_uid>{study_uid}</study_uid>
  <accession_number>{accession}</accession_number>
  <admission_id>ADM-7</admission_id>
  <requested_procedure_id>RP-{accession}</requested_procedure_id>
  <requested_procedure_description>CT of the head</requested_procedure_description>
  <requested_procedure_code><code>CTHEAD</code><scheme>99LOCAL</scheme><meaning>CT head</meaning>
  </requested_procedure_code>
  {steps}
</procedure></mwl>""".encode()


def publish(broker: Broker, table: dict, *bodies: bytes) -> None:
    conn = broker.client()
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        for n, body in enumerate(bodies):
            channel.basic_publish(
                table["ris_exchange"], "MWL", body, pika.BasicProperties(delivery_mode=2, message_id=f"in-{n}")
            )
    finally:
        conn.close()


def queue_depth(broker: Broker, queue: str) -> int:
    conn = broker.client()
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        conn.close()


def logged_in(app, n: int) -> list:
    entries = AmqpLog(app.db).recent(500, "in")
    return entries if len(entries) >= n else []


def test_new_procedure_becomes_worklist_items(broker: Broker, running, tmp_path: Path) -> None:
    table = amqp_table(broker)
    r = running(make_cfg(tmp_path / "data", table))
    two_steps = """
      <step><id>S-A</id><modality>MR</modality><station_aet>MR1</station_aet><start_date>20261204</start_date>
        <start_time>100000</start_time><description>MR brain</description></step>
      <step><id>S-B</id><modality>CT</modality><station_aet>CT1</station_aet><start_date>20261204</start_date>
        <start_time>110000</start_time><description>CT chest</description></step>"""
    publish(broker, table, procedure(), procedure("ACC-101", "1.2.826.0.1.3680043.2.1125.77", steps=two_steps))
    wait_until(lambda: logged_in(r.app, 2))
    items = {i.accession + "/" + i.sps_id: i for i in r.app.worklist.items()}
    assert set(items) == {"ACC-100/SPS-1", "ACC-101/S-A", "ACC-101/S-B"}
    first = items["ACC-100/SPS-1"]
    assert first.study_uid.startswith("2.25.")  # ":SERVER": we made the UID
    assert first.patient_name == "MÜLLER^ANNA" and first.station_aet == "CT1" and first.status == "SCHEDULED"
    assert first.source == "amqp"
    attrs, _, charset = r.app.worklist.item(ItemKey(first.study_uid, "SPS-1"))
    assert charset == "ISO_IR 192"
    assert attrs["AdmissionID"] == "ADM-7"
    assert attrs["RequestedProcedureCodeSequence"][0]["CodeValue"] == "CTHEAD"
    step = attrs["ScheduledProcedureStepSequence"][0]
    assert step["ScheduledProtocolCodeSequence"][0]["CodeMeaning"] == "Head protocol"
    assert step["ScheduledPerformingPhysicianName"] == "WHO^DR"
    assert items["ACC-101/S-A"].study_uid == "1.2.826.0.1.3680043.2.1125.77"
    assert queue_depth(broker, table["mwl_queue"]) == 0  # acknowledged
    assert {e.outcome for e in AmqpLog(r.app.db).recent(10, "in")} == {"applied"}


def test_cancel_and_missed_by_accession(broker: Broker, running, tmp_path: Path) -> None:
    table = amqp_table(broker)
    r = running(make_cfg(tmp_path / "data", table))
    publish(broker, table, procedure("ACC-200"), procedure("ACC-201", patient="PAT201"))
    wait_until(lambda: logged_in(r.app, 2))
    publish(
        broker,
        table,
        b"<mwl-canceled><accession_number>ACC-200</accession_number></mwl-canceled>",
        b"<mwl-missed><accession_number>ACC-201</accession_number></mwl-missed>",
    )
    wait_until(lambda: logged_in(r.app, 4))
    status = {i.accession: i.status for i in r.app.worklist.items()}
    assert status == {"ACC-200": "CANCELED", "ACC-201": "DISCONTINUED"}
    # The status changes go out like any other.
    wait_until(lambda: r.backlog() == 0)
    out = [
        (ET.fromstring(b).findtext("accession_number"), ET.fromstring(b).findtext("status"))
        for b, _ in drain(broker, table["mwl_changed_queue"])
    ]
    assert out == [("ACC-200", "CANCELED"), ("ACC-201", "DISCONTINUED")]


def test_bad_messages_are_rejected_dead_lettered_and_do_not_block(broker: Broker, running, tmp_path: Path) -> None:
    table = amqp_table(broker, max_message_kb=4)
    cfg = make_cfg(tmp_path / "data", table)
    declare(cfg.amqp)
    # The site's input queue has a dead-letter exchange: rejected messages end up there.
    conn = broker.client()
    ch = conn.channel()
    dlx = table["mwl_queue"] + ".dlx"
    ch.exchange_declare(dlx, "fanout", durable=True)
    ch.queue_declare(dlx, durable=True)
    ch.queue_bind(dlx, dlx)
    ch.queue_delete(table["mwl_queue"])
    ch.queue_declare(table["mwl_queue"], durable=True, arguments={"x-dead-letter-exchange": dlx})
    ch.queue_bind(table["mwl_queue"], table["ris_exchange"], "MWL")
    conn.close()
    r = running(cfg, declare=False)
    bad = [
        b"<mwl><procedure><patient><id>X",  # not well-formed
        b"\xff\xfe<mwl/>",  # not UTF-8 XML
        b"<order/>",  # unknown message
        b'<!DOCTYPE mwl [<!ENTITY a "aaaa">]><mwl>&a;</mwl>',  # entities are never expanded
        procedure("ACC-300", steps="<step><modality>CT</modality></step>"),  # incomplete: no description
        b"<mwl-canceled><accession_number>NOPE</accession_number></mwl-canceled>",  # unknown accession
        procedure("ACC-301", name="X" * 5000),  # over max_message_kb
    ]
    publish(broker, table, *bad, procedure("ACC-302"))
    entries = wait_until(lambda: logged_in(r.app, len(bad) + 1))
    outcomes = {e.message_id: (e.outcome, e.error) for e in entries}
    assert [outcomes[f"in-{n}"][0] for n in range(len(bad) + 1)] == ["rejected"] * len(bad) + ["applied"]
    assert "not well-formed" in outcomes["in-0"][1]
    assert "unknown message <order>" in outcomes["in-2"][1]
    assert "document type" in outcomes["in-3"][1]
    assert "the step needs a description or a complete protocol code" in outcomes["in-4"][1]
    assert "NOPE" in outcomes["in-5"][1]
    assert "too large" in outcomes["in-6"][1]
    assert [i.accession for i in r.app.worklist.items()] == ["ACC-302"]  # nothing half-written
    assert queue_depth(broker, table["mwl_queue"]) == 0
    dead = drain(broker, dlx)
    assert [p.message_id for _, p in dead] == [f"in-{n}" for n in range(len(bad))]
