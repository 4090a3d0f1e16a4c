"""MLLP framing and the listener's robustness: pieces, merged frames, garbage, big messages, disconnects, TLS."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from hl7support import HL7Node, MLLPClient, er7, segments

import tls
from hl7.mllp import FrameReader, Oversize, frame

from conftest import HOST, wait_until


def order(msg_id: str, sps_id: str = "", lf: bool = False) -> str:
    sps_id = sps_id or msg_id
    text = er7(
        f"MSH|^~\\&|RIS|HOSP|PACS|HOSP|20260905120000||ORM^O01|{msg_id}|P|2.3.1",
        f"PID|||P-{msg_id}||Doe^{msg_id}",
        "PV1||O",
        "ORC|NW|O1|F1||SC||^^^20260905110000^^R",
        f"OBR||O1|F1|^^^CODE^Exam^L||||||||||||||A-{msg_id}|RP-{msg_id}|{sps_id}||||CT",
        f"ZDS|1.2.826.0.1.{abs(hash(msg_id)) % 10**9}",
    )
    return text.replace("\r", "\n") if lf else text


# -- the frame reader --------------------------------------------------------------------------------


def test_reader_byte_by_byte() -> None:
    reader = FrameReader()
    data = frame(b"MSH|one") + frame(b"MSH|two")
    out: list[object] = []
    for i in range(len(data)):
        out += reader.feed(data[i : i + 1])
    assert out == [b"MSH|one", b"MSH|two"]
    assert reader.partial == 0 and reader.garbage == 0


def test_reader_garbage_nuls_and_missing_cr() -> None:
    reader = FrameReader()
    out = reader.feed(b"noise\x00\r\n" + frame(b"MSH|a") + b"\x00\x00\n" + b"\x0bMSH|b\x1c" + b"\x0bMSH|c\x1c\r")
    assert out == [b"MSH|a", b"MSH|b", b"MSH|c"]
    assert reader.garbage == len(b"noise")


def test_reader_restart_and_partial() -> None:
    reader = FrameReader()
    assert reader.feed(b"\x0bMSH|lost") == []
    assert reader.partial == len(b"MSH|lost")
    assert reader.feed(b"\x0bMSH|kept\x1c\r") == [b"MSH|kept"]
    assert reader.partial == 0


def test_reader_oversize_is_reported_once() -> None:
    reader = FrameReader(max_size=100)
    out = reader.feed(b"\x0bMSH|^~\\&|A|B|C|D||ORM^O01|BIG|P|2.5\r" + b"x" * 60)
    out += reader.feed(b"y" * 200)
    out += reader.feed(b"z" * 10 + b"\x1c\r" + frame(b"MSH|next"))
    assert len(out) == 2
    big, nxt = out
    assert isinstance(big, Oversize) and big.size > 100 and b"|BIG|" in big.head
    assert nxt == b"MSH|next"


# -- over TCP ------------------------------------------------------------------------------------------


def test_merged_split_and_lf_frames(hl7_node: HL7Node) -> None:
    client = MLLPClient(hl7_node.hl7_port)
    two = frame(order("M1").encode()) + frame(order("M2").encode())
    third = frame(order("M3", lf=True).encode())
    client.send_raw(two)
    for piece in (third[:7], third[7:50], third[50:]):
        client.send_raw(piece)
    acks = [segments(client.ack())["MSA"] for _ in range(3)]
    assert acks == ["MSA|AA|M1", "MSA|AA|M2", "MSA|AA|M3"]
    client.close()
    row = next(r for r in hl7_node.app.worklist.items() if r.sps_id == "M3")
    assert (row.patient_name, row.station_aet) == ("Doe^M3", "CT1")  # LF-separated segments were all read


def test_garbage_and_non_hl7_frames(hl7_node: HL7Node) -> None:
    client = MLLPClient(hl7_node.hl7_port)
    client.send_raw(b"GET / HTTP/1.0\r\n\r\n")  # outside any frame: skipped
    client.send(b"this is not HL7")
    seg = segments(client.ack())
    assert seg["MSA"] == "MSA|AR||not an HL7 v2 message: no MSH segment"
    assert seg["MSH"].startswith("MSH|^~\\&|APPLIANCE|CLINIC|")
    client.send(b"\x00\xff\xfe binary \x1b")
    assert segments(client.ack())["MSA"].startswith("MSA|AR||")
    assert segments(client.request(order("M1")))["MSA"] == "MSA|AA|M1"
    client.close()


def test_one_megabyte_message(hl7_node: HL7Node) -> None:
    # Z-segments are ignored by the mapping; they make the message big.
    filler = "\r".join(f"ZXX|{i}|" + "x" * 1000 for i in range(1050))
    big = order("BIG1") + filler + "\r"
    assert len(big) > 1024 * 1024
    client = MLLPClient(hl7_node.hl7_port)
    assert segments(client.request(big))["MSA"] == "MSA|AA|BIG1"
    assert segments(client.request(order("M2")))["MSA"] == "MSA|AA|M2"
    client.close()
    assert hl7_node.app.worklist.count() == 2


def test_too_large_message_gets_ar_and_connection_goes_on(hl7_factory) -> None:
    node = hl7_factory(hl7={"max_message_kb": 64})
    client = MLLPClient(node.hl7_port)
    big = order("BIG2") + "ZXX|" + "x" * 100_000 + "\r"
    seg = segments(client.request(big))
    assert seg["MSA"].startswith("MSA|AR|BIG2|Message too large")
    assert segments(client.request(order("M2")))["MSA"] == "MSA|AA|M2"
    client.close()
    assert [r.sps_id for r in node.app.worklist.items()] == ["M2"]


def test_disconnect_mid_frame_loses_nothing_else(hl7_node: HL7Node, caplog: pytest.LogCaptureFixture) -> None:
    first = MLLPClient(hl7_node.hl7_port)
    payload = frame(order("HALF").encode())
    first.send_raw(payload[: len(payload) // 2])
    first.close()
    wait_until(lambda: "in the middle of a message" in caplog.text)
    second = MLLPClient(hl7_node.hl7_port)
    assert segments(second.request(order("M2")))["MSA"] == "MSA|AA|M2"
    second.close()
    assert [r.sps_id for r in hl7_node.app.worklist.items()] == ["M2"]


def test_many_connections_at_once(hl7_node: HL7Node) -> None:
    results: dict[int, list[str]] = {}

    def sender(n: int) -> None:
        c = MLLPClient(hl7_node.hl7_port)
        results[n] = [segments(c.request(order(f"C{n}-{i}")))["MSA"] for i in range(15)]
        c.close()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(results[n] == [f"MSA|AA|C{n}-{i}" for i in range(15)] for n in range(6))
    assert hl7_node.app.worklist.count() == 90


def test_stop_closes_idle_connections(hl7_node: HL7Node) -> None:
    client = MLLPClient(hl7_node.hl7_port, timeout=10)
    assert segments(client.request(order("M1")))["MSA"] == "MSA|AA|M1"
    hl7_node.hl7.stop()
    assert client.sock.recv(10) == b""  # the server closed the connection
    client.close()
    with pytest.raises(OSError):
        socket.create_connection((HOST, hl7_node.hl7_port), timeout=2).recv(1)


def test_mllp_over_tls(hl7_factory, tmp_path: Path) -> None:
    paths = tls.ensure_demo_certs(tmp_path / "pki")
    server_ctx = tls.server_context(paths.server_cert, paths.server_key, paths.ca_cert, False, key_policy="ignore")
    node = hl7_factory(hl7={"tls": True}, ssl_context=server_ctx)
    client_ctx = ssl.create_default_context(cafile=str(paths.ca_cert))
    client_ctx.check_hostname = False
    with client_ctx.wrap_socket(socket.create_connection((HOST, node.hl7_port), timeout=10)) as sock:
        sock.sendall(frame(order("TLS1").encode()))
        data = b""
        while b"\x1c\r" not in data:
            data += sock.recv(4096)
    assert b"MSA|AA|TLS1" in data
    # A plain client on the TLS port gets no ACK, and the port keeps serving.
    plain = MLLPClient(node.hl7_port, timeout=15)
    plain.send(order("PLAIN"))
    with pytest.raises((ConnectionError, OSError)):
        plain.ack()
    plain.close()
    assert [r.sps_id for r in node.app.worklist.items()] == ["TLS1"]
