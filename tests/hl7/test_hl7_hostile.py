"""Hostile HL7 input (issue 15): what an attacker on the network can send to the MLLP port, and the bounds that hold.

Every attack client here is bounded in count and time and talks to a listener on loopback.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from hl7support import HL7Node, MLLPClient, findscu_mwl, orm, segments

from conftest import HOST, free_port, wait_until

SAET_MR1 = "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=MR1"


def test_hex_escape_nul_does_not_reach_names(hl7_node: HL7Node, client: MLLPClient, tmp_path: Path) -> None:
    """``\\X00\\`` in a name spelled a NUL that the worklist stored and C-FIND returned."""
    msg = orm(name="Evil\\X00\\Doe^Ja\\X0007\\ne", obr4="^^^MRHEAD^MRI\\X1B5B\\ head^L")
    assert segments(client.request(msg))["MSA"] == "MSA|AA|MSG0001"
    [answer] = findscu_mwl(hl7_node, tmp_path, SAET_MR1)
    assert answer.PatientName == "EvilDoe^Jane"
    assert answer.ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription == "MRI[ head"
    found = hl7_node.app.worklist.item(_key("1.2.3.4", "SPS-1"))
    assert found is not None
    stored, _, _ = found
    assert stored["PatientName"] == "EvilDoe^Jane"


def _key(study: str, sps_id: str):
    from appliance.worklist.store import ItemKey

    return ItemKey(study, sps_id)


# -- idle connections cannot shut senders out (finding 6) -------------------------------------------------------


def _connect(port: int, source: str = HOST) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(20)
    sock.connect((HOST, port))
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed this connection (EOF or reset), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def _ordered_within(port: int, seconds: float, source: str = HOST, msg_id: str = "HIS1") -> None:
    start = time.monotonic()
    his = MLLPClient.__new__(MLLPClient)
    his.sock, his.buf = _connect(port, source), b""
    try:
        assert segments(his.request(orm(msg_id=msg_id)))["MSA"] == f"MSA|AA|{msg_id}"
    finally:
        his.close()
    assert time.monotonic() - start < seconds


def test_idle_connections_do_not_shut_out_the_his(hl7_factory) -> None:
    """50 connections that say nothing used to block every HIS for idle_timeout (300 s)."""
    node = hl7_factory({"first_message_timeout": 3, "idle_timeout": 300})
    server = node.hl7.server
    attack = [_connect(node.hl7_port) for _ in range(50)]
    try:
        # A HIS on another address, and one behind the attacker's own address (a NAT), are both served at once.
        _ordered_within(node.hl7_port, 5, source="127.0.0.2", msg_id="OTHER")
        _ordered_within(node.hl7_port, 5, msg_id="SAME")
        assert server.open_connections <= server.max_connections_per_peer + 1
        # The silent connections still open are closed after first_message_timeout, not idle_timeout.
        wait_until(lambda: all(_closed_by_server(s) for s in attack), timeout=15)
        wait_until(lambda: server.open_connections == 0)
    finally:
        for sock in attack:
            sock.close()
    assert node.app.worklist.item(_key("1.2.3.4", "SPS-1"))[0]["PatientID"] == "4MR1"


def test_a_trickled_message_is_cut_off(hl7_factory) -> None:
    node = hl7_factory({"message_timeout": 2})
    sock = _connect(node.hl7_port)
    try:
        start = time.monotonic()
        payload = b"\x0b" + orm().encode("latin-1")
        closed = False
        for byte in payload[:80]:  # a byte every 0.2 s: never silent long, never done
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            if _closed_by_server(sock):
                closed = True
                break
            time.sleep(0.2)
        assert closed and time.monotonic() - start < 12  # message_timeout 2 s (idle_timeout is 300 s)
        _ordered_within(node.hl7_port, 5)
    finally:
        sock.close()


def test_when_every_connection_is_busy_new_ones_are_refused(hl7_factory) -> None:
    """Only idle connections make room; connections in the middle of a message are not cut."""
    node = hl7_factory({"max_connections": 3, "max_connections_per_peer": 3, "message_timeout": 30})
    busy = [_connect(node.hl7_port) for _ in range(3)]
    try:
        for sock in busy:
            sock.sendall(b"\x0bMSH|^~\\&|RIS|HOSP")  # a message begun, not finished
        server = node.hl7.server
        wait_until(lambda: [c.state for c in server._open.values()] == ["busy"] * 3)
        late = _connect(node.hl7_port)
        wait_until(lambda: _closed_by_server(late))
        late.close()
        assert not any(_closed_by_server(s) for s in busy)
        busy[0].sendall(orm(msg_id="DONE").encode("latin-1")[len("MSH|^~\\&|RIS|HOSP") :] + b"\x1c\x0d")
        reader = MLLPClient.__new__(MLLPClient)
        reader.sock, reader.buf = busy[0], b""
        assert segments(reader.ack())["MSA"] == "MSA|AA|DONE"
    finally:
        for sock in busy:
            sock.close()


# -- one huge field is not repeated whole (finding 7) -----------------------------------------------------------


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_huge_field_does_not_flood_the_ack_log_and_database(tmp_path: Path) -> None:
    """A 10 MB field used to come back whole in the AE text, twice in appliance.log and in each message-log
    row: 12 such messages rotated every log file away. Now each is cut: the history survives."""
    data = tmp_path / "data"
    port = free_port()
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(f"""[appliance]
data_dir = "{data}"
log_max_mb = 1
log_backups = 2
[dicom]
bind = "{HOST}"
port = 0
tls_port = 0
[hl7]
bind = "{HOST}"
port = {port}
station_aets = {{ MR = "MR1" }}
[web]
port = 0
""")
    out = (tmp_path / "serve.out").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(cfg)],
        text=True,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: (
                (data / "logs" / "appliance.log").exists()
                and "HL7 listening" in (data / "logs" / "appliance.log").read_text()
            ),
            timeout=60,
        )
        # A 10 MB name with a terminal escape and an escaped line break that would start a forged record.
        name = "Doe" + "1" * (10 * 1024 * 1024) + "\x1b[2J\\X0D0A\\2026 FORGED^Jo"
        client = MLLPClient(port, timeout=60)
        for n in range(12):
            ack = client.request(orm(msg_id=f"BIG{n}", version="2.5.1", name=name))
            assert segments(ack)["MSA"].startswith(f"MSA|AE|BIG{n}|")
            assert "longer than PN allows" in segments(ack)["ERR"] and len(ack) < 2000
        assert segments(client.request(orm(msg_id="AFTER")))["MSA"] == "MSA|AA|AFTER"
        client.close()
        assert _rss_mb(proc.pid) < 400  # a 16 MB message limit, not a multiple of it per message
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        out.close()
    log = data / "logs" / "appliance.log"
    text = log.read_text()
    assert "HL7 listening" in text and not (data / "logs" / "appliance.log.1").exists()  # nothing rotated away
    assert log.stat().st_size < 200_000
    assert "BIG11" in text and "\x1b" not in text
    # One line per record: the field's CR did not start a forged line.
    assert all(line[:4].isdigit() for line in text.splitlines() if line)
    with sqlite3.connect(data / "appliance.db") as db:
        rows = db.execute("SELECT control_id, length(message), length(ack), length(error) FROM hl7_messages").fetchall()
    assert len(rows) == 13
    for control, message, ack_len, error in rows:
        assert message <= 64 * 1024 + 100 and ack_len < 2000 and error < 400, (control, message, ack_len, error)


def test_a_full_database_disk_refuses_messages(hl7_factory) -> None:
    """Like the store: below [hl7] free_space_limit_mb the message is refused (AR, send again later)."""
    node = hl7_factory({"free_space_limit_mb": 1_000_000_000})  # more than any disk has
    client = MLLPClient(node.hl7_port)
    try:
        ack = segments(client.request(orm(msg_id="FULL")))
    finally:
        client.close()
    assert ack["MSA"].startswith("MSA|AR|FULL|") and "database disk has" in ack["MSA"]
    assert "207" in ack["ERR"]
    assert node.app.hl7_log.recent() == []
    assert node.app.worklist.item(_key("1.2.3.4", "SPS-1")) is None


def test_silent_tls_clients_do_not_shut_out_the_his(hl7_factory, tmp_path: Path) -> None:
    """Over TLS a connection that never says hello sits in its handshake: it makes room like an idle one."""
    import ssl

    import tls

    paths = tls.ensure_demo_certs(tmp_path / "pki")
    server_ctx = tls.server_context(paths.server_cert, paths.server_key, paths.ca_cert, False, key_policy="ignore")
    node = hl7_factory({"tls": True, "max_connections_per_peer": 5}, ssl_context=server_ctx)
    client_ctx = ssl.create_default_context(cafile=str(paths.ca_cert))
    client_ctx.check_hostname = False
    attack = [_connect(node.hl7_port) for _ in range(20)]  # TCP only; handshake_timeout is 10 s
    try:
        for n in range(2):  # the same address as the attacker, twice in a row
            start = time.monotonic()
            with client_ctx.wrap_socket(_connect(node.hl7_port), server_hostname="localhost") as sock:
                his = MLLPClient.__new__(MLLPClient)
                his.sock, his.buf = sock, b""
                assert segments(his.request(orm(msg_id=f"TLS{n}")))["MSA"] == f"MSA|AA|TLS{n}"
            assert time.monotonic() - start < 5
        assert node.hl7.server.open_connections <= 5
    finally:
        for attacker in attack:
            attacker.close()
