"""``appliance amqp test|declare`` and the ``[amqp]`` settings."""

from __future__ import annotations

from pathlib import Path

import pika
import pytest
from amqpsupport import Broker, amqp_table

from appliance.cli import main
from appliance.config import parse_config
from appliance.errors import ConfigError

from conftest import free_port


def _config(tmp_path: Path, table: dict) -> Path:
    lines = [f'[appliance]\ndata_dir = "{tmp_path / "data"}"', "[amqp]"]
    for key, value in table.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {str(value).lower()}")
    path = tmp_path / "appliance.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_test_says_what_is_missing_and_declare_creates_it(broker: Broker, tmp_path: Path, capsys) -> None:
    table = amqp_table(broker)
    cfg = str(_config(tmp_path, table))
    assert main(["amqp", "test", "--config", cfg]) == 1
    out = capsys.readouterr().out
    assert f"connected to 127.0.0.1:{broker.port}" in out
    assert f"MISSING exchange {table['ris_exchange']}" in out
    assert f"MISSING queue {table['mwl_queue']}" in out
    assert "5 missing" in out
    assert main(["amqp", "declare", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert (
        f"queue {table['studies_queue']} (durable) bound to {table['request_exchange']} with "
        "pacs_new_study_rk, pacs_new_series_rk" in out
    )
    assert main(["amqp", "test", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert "MISSING" not in out and f"ok      queue {table['mwl_queue']} (input): present" in out
    # Declared durable and bound as said: a message routed by the new-series key reaches the studies queue.
    conn = broker.client()
    try:
        ch = conn.channel()
        assert ch.queue_declare(table["studies_queue"], durable=True, passive=True).method.message_count == 0
        ch.confirm_delivery()
        ch.basic_publish(
            table["request_exchange"],
            "pacs_new_series_rk",
            b"<series><uid>1</uid></series>",
            pika.BasicProperties(delivery_mode=2),
        )
        _, _, body = ch.basic_get(table["studies_queue"], auto_ack=True)
        assert body == b"<series><uid>1</uid></series>"
    finally:
        conn.close()
    assert main(["amqp", "declare", "--config", cfg]) == 0  # again: nothing changes, no error


def test_unreachable_broker_and_wrong_password(broker: Broker, tmp_path: Path, capsys) -> None:
    cfg = _config(tmp_path, amqp_table(broker, port=free_port(), connect_timeout=5))
    assert main(["amqp", "test", "--config", str(cfg)]) != 0
    assert "no AMQP broker reachable at 127.0.0.1" in capsys.readouterr().err
    cfg = _config(tmp_path, amqp_table(broker, password="wrong"))
    assert main(["amqp", "test", "--config", str(cfg)]) != 0
    assert "refused user 'guest' (wrong user or password)" in capsys.readouterr().err
    cfg = _config(tmp_path, amqp_table(broker, vhost="no-such-vhost"))
    assert main(["amqp", "declare", "--config", str(cfg)]) != 0
    assert "may not use virtual host 'no-such-vhost'" in capsys.readouterr().err


def test_settings() -> None:
    cfg = parse_config({}).amqp
    assert (cfg.enabled, cfg.host, cfg.port, cfg.vhost, cfg.user, cfg.password, cfg.format) == (
        False,
        "127.0.0.1",
        5672,
        "/",
        "guest",
        "guest",
        "xml",
    )
    assert (
        cfg.ris_exchange,
        cfg.request_exchange,
        cfg.mwl_queue,
        cfg.mwl_routing_key,
        cfg.mwl_changed_queue,
        cfg.mwl_state_routing_key,
        cfg.studies_queue,
        cfg.new_study_routing_key,
        cfg.new_series_routing_key,
    ) == (
        "appliance.RIS",
        "appliance.request",
        "appliance.MWL",
        "MWL",
        "appliance.MWL_changed",
        "mwl_state_rk",
        "appliance.Studies",
        "pacs_new_study_rk",
        "pacs_new_series_rk",
    )
    assert parse_config({"amqp": {"tls": True}}).amqp.port == 5671
    assert parse_config({"amqp": {"tls": True, "port": 5999}}).amqp.port == 5999
    assert parse_config({"amqp": {"host": "::1"}}).amqp.host == "::1"
    for bad, text in (
        ({"format": "yaml"}, "format"),
        ({"port": 70000}, "port"),
        ({"prefetch": 0}, "prefetch"),
        ({"mwl_queue": ""}, "mwl_queue"),
        ({"colour": "red"}, "unknown key"),
    ):
        with pytest.raises(ConfigError, match=text):
            parse_config({"amqp": bad})


def test_tls_with_the_tls_files(broker: Broker, running, tmp_path: Path, capsys) -> None:
    """``tls = true``: the broker's certificate is checked against ``[tls] ca``; events go out over TLS."""
    from amqpsupport import drain, make_cfg

    import dicomdata
    from conftest import wait_until

    table = amqp_table(broker, tls=True, port=broker.tls_port)
    cfg_file = _config(tmp_path, table)
    cfg_file.write_text(cfg_file.read_text() + f'[tls]\nca = "{broker.tls_dir / "ca.crt"}"\n')
    assert main(["amqp", "declare", "--config", str(cfg_file)]) == 0
    assert main(["amqp", "test", "--config", str(cfg_file)]) == 0
    assert f"connected to 127.0.0.1:{broker.tls_port}" in capsys.readouterr().out
    r = running(make_cfg(tmp_path / "data2", table, tls={"ca": str(broker.tls_dir / "ca.crt")}), declare=False)
    inst = dicomdata.study("TLS1", "T^LS", ("CT",), 1)[0]
    r.store(inst)
    wait_until(lambda: r.backlog() == 0, timeout=60)
    assert [b.decode() for b, _ in drain(broker, table["studies_queue"])] == [
        f"<study><uid>{inst.study_uid}</uid></study>",
        f"<series><uid>{inst.series_uid}</uid></series>",
    ]
    # A CA that did not sign the broker's certificate: refused, and said so.
    other = tmp_path / "other-ca"
    import tls

    tls.cmd_init(other, ["localhost"], ["127.0.0.1"])
    cfg_file.write_text(cfg_file.read_text().replace(str(broker.tls_dir / "ca.crt"), str(other / "ca.crt")))
    assert main(["amqp", "test", "--config", str(cfg_file)]) != 0
    assert "certificate" in capsys.readouterr().err.lower()
