"""The staff settings page shows the AMQP state (connected, backlog, last error) and the message log."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from pathlib import Path

import pika
from amqpsupport import Broker, amqp_table, make_cfg

from appliance.notify.log import AmqpLog
from webui import create_app

import dicomdata
from conftest import wait_until

_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def _admin(flask, site):
    site.users.add("admin", "admin-password-1", "admin")
    client = flask.test_client()
    page = client.get("/staff/login").get_data(as_text=True)
    found = _CSRF_RE.search(page)
    assert found is not None, "no CSRF token on the login page"
    token = html.unescape(found.group(1))
    rsp = client.post("/staff/login", data={"name": "admin", "password": "admin-password-1", "csrf_token": token})
    assert rsp.status_code == 302
    return client


def _card(client) -> str:
    page = client.get("/staff/settings").get_data(as_text=True)
    start = page.index('id="amqp"')
    return html.unescape(page[start : page.index("</section>", start)])


def test_settings_page_shows_state_backlog_and_log(broker: Broker, running, tmp_path: Path) -> None:
    table = amqp_table(broker)
    r = running(make_cfg(tmp_path / "data", table, web={"port": 0}))
    flask = create_app(r.cfg, r.app, {"TESTING": True})
    site = flask.extensions["appliance"].site
    site.admin.messaging = r.service
    try:
        _check_page(broker, r, table, site, _admin(flask, site))
    finally:
        site.close()


def _check_page(broker: Broker, r, table: dict, site, client) -> None:
    inst = dicomdata.study("PAGE1", "PAGE^TEST", ("CT",), 1)[0]
    r.store(inst)
    conn = broker.client()
    conn.channel().basic_publish(
        table["ris_exchange"], "MWL", b"<mwl><oops/></mwl>", pika.BasicProperties(message_id="bad-1")
    )
    conn.close()
    wait_until(lambda: r.backlog() == 0 and AmqpLog(r.app.db).recent(10, "in"))
    wait_until(lambda: r.link("consumer")["state"] == "connected")
    card = _card(client)
    assert f"127.0.0.1:{broker.port} /" in card
    assert "connected (2 message(s))" in card  # the publisher: study and series
    assert "0 event(s) waiting to be sent" in card
    assert f"<study><uid>{inst.study_uid}</uid></study>" in card
    assert "rejected: <mwl> holds no <procedure>" in card
    # Broker gone: the page says so and counts what waits.
    r.service.stop()
    from appliance.notify.outbox import Outbox
    from appliance.notify.service import AmqpService

    r.service = AmqpService(replace(r.cfg, amqp=replace(r.cfg.amqp, port=1)), Outbox(r.app.db), consume=False)
    r.service.start()
    site.admin.messaging = r.service
    r.store(dicomdata.study("PAGE2", "PAGE^TEST", ("CT",), 1)[0])
    wait_until(lambda: r.link()["state"] == "disconnected")
    card = _card(client)
    assert "disconnected: no AMQP broker reachable at 127.0.0.1:1 (connection refused)" in card
    assert "2 event(s) waiting to be sent" in card


def test_settings_page_when_off(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path / "data", {"enabled": False}, web={"port": 0})
    from appliance.core import Appliance

    app = Appliance(cfg)
    flask = create_app(cfg, app, {"TESTING": True})
    site = flask.extensions["appliance"].site
    try:
        assert "Off (" in _card(_admin(flask, site))
    finally:
        site.close()
        app.stop()
