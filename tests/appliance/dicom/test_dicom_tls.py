"""The DICOM TLS port with DCMTK (+tls) as the real peer; plain and TLS ports at once."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

import tls

import dicomdata
from conftest import HOST, Node, dcmtk, free_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tls.Paths:
    return tls.init_pki(tmp_path_factory.mktemp("pki"), ["localhost"], ["127.0.0.1"])


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> tls.Paths:
    return tls.init_pki(tmp_path_factory.mktemp("other"), ["localhost"], ["127.0.0.1"])


def _node(node_factory, pki: tls.Paths, verify: bool) -> Node:
    ctx = tls.server_context(pki.server_cert, pki.server_key, pki.ca_cert, verify_peer=verify)
    return node_factory(server_tls=ctx, tls_port=free_port())


def _tls_args(pki: tls.Paths, with_cert: bool = True) -> list[str]:
    args = ["+tls", str(pki.client_key), str(pki.client_cert)] if with_cert else ["+tla"]
    return [*args, "+cf", str(pki.ca_cert)]


def test_echo_store_find_over_tls_with_client_certificate(node_factory, pki: tls.Paths, tmp_path: Path) -> None:
    node = _node(node_factory, pki, verify=True)
    dcmtk("echoscu", *_tls_args(pki), "-aec", node.aet, HOST, str(node.tls_port), check=True)
    inst = dicomdata.study("PTLS", "TLS^PATIENT", ("CT",), 2)
    for i in inst:
        i.write(tmp_path)
    dcmtk(
        "storescu",
        *_tls_args(pki),
        "-aec",
        node.aet + "_E",
        HOST,
        str(node.tls_port),
        *map(str, tmp_path.glob("*.dcm")),
        check=True,
    )
    assert node.app.index.counts()["instances"] == 2
    proc = dcmtk(
        "findscu",
        *_tls_args(pki),
        "-S",
        "-aec",
        node.aet,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "PatientID=PTLS",
        "-k",
        "PatientName",
        HOST,
        str(node.tls_port),
        check=True,
    )
    assert "TLS^PATIENT" in proc.stderr
    # The plain port works at the same time.
    dcmtk("echoscu", "-aec", node.aet, HOST, str(node.port), check=True)


def test_client_certificate_rules(node_factory, pki: tls.Paths, other_pki: tls.Paths) -> None:
    strict = _node(node_factory, pki, verify=True)
    no_cert = dcmtk("echoscu", *_tls_args(pki, with_cert=False), "-aec", strict.aet, HOST, str(strict.tls_port))
    assert no_cert.returncode != 0
    untrusted = ["+tls", str(other_pki.client_key), str(other_pki.client_cert), "+cf", str(pki.ca_cert)]
    assert dcmtk("echoscu", *untrusted, "-aec", strict.aet, HOST, str(strict.tls_port)).returncode != 0
    lenient = _node(node_factory, pki, verify=False)
    dcmtk("echoscu", *_tls_args(pki, with_cert=False), "-aec", lenient.aet, HOST, str(lenient.tls_port), check=True)


def test_wrong_protocol_on_each_port_fails_cleanly(node_factory, pki: tls.Paths) -> None:
    node = _node(node_factory, pki, verify=False)
    plain_to_tls = dcmtk("echoscu", "-to", "5", "-ta", "5", "-aec", node.aet, HOST, str(node.tls_port), timeout=60)
    assert plain_to_tls.returncode != 0
    tls_to_plain = dcmtk("echoscu", *_tls_args(pki), "-to", "5", "-aec", node.aet, HOST, str(node.port), timeout=60)
    assert tls_to_plain.returncode != 0
    # Both listeners still serve.
    dcmtk("echoscu", "-aec", node.aet, HOST, str(node.port), check=True)
    dcmtk("echoscu", *_tls_args(pki), "-aec", node.aet, HOST, str(node.tls_port), check=True)


def test_silent_client_does_not_block_the_tls_port(node_factory, pki: tls.Paths) -> None:
    node = _node(node_factory, pki, verify=False)
    with socket.create_connection((HOST, node.tls_port)):
        time.sleep(0.2)  # let the server accept it; it now waits for a ClientHello that never comes
        proc = dcmtk("echoscu", *_tls_args(pki), "-to", "5", "-aec", node.aet, HOST, str(node.tls_port), timeout=30)
        assert proc.returncode == 0, proc.stderr


def test_expired_client_certificate_is_refused(node_factory, pki: tls.Paths, tmp_path: Path) -> None:
    import datetime as dt

    # Same CA name, but a client certificate that expired years ago.
    old = tls.init_pki(
        tmp_path / "old", ["localhost"], ["127.0.0.1"], days=30, now=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    )
    node = node_factory(
        server_tls=tls.server_context(pki.server_cert, pki.server_key, old.ca_cert, verify_peer=True),
        tls_port=free_port(),
    )
    expired = ["+tls", str(old.client_key), str(old.client_cert), "+cf", str(pki.ca_cert)]
    assert dcmtk("echoscu", *expired, "-aec", node.aet, HOST, str(node.tls_port)).returncode != 0
    assert (
        dcmtk(
            "echoscu",
            "+tls",
            str(pki.client_key),
            str(pki.client_cert),
            "+cf",
            str(pki.ca_cert),
            "-aec",
            node.aet,
            HOST,
            str(node.tls_port),
        ).returncode
        != 0
    )  # signed by another CA


def test_cmove_to_a_tls_destination(node_factory, pki: tls.Paths, tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pynetdicom import AE, StoragePresentationContexts, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as Move  # type: ignore[attr-defined]

    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.dataset.SOPInstanceUID)
        return 0

    dest_port = free_port()
    dest = AE(ae_title="TLSDEST")
    dest.supported_contexts = StoragePresentationContexts
    server = dest.start_server(
        (HOST, dest_port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
        ssl_context=tls.server_context(pki.server_cert, pki.server_key, pki.ca_cert, verify_peer=True),
    )
    assert server is not None
    try:
        node = node_factory(nodes=[{"ae_title": "TLSDEST", "host": HOST, "port": dest_port, "tls": True}])
        node.app.client_tls = lambda: tls.client_context(pki.client_cert, pki.client_key, pki.ca_cert)
        items = dicomdata.study("PMTLS", "MOVE^TLS", ("CT",), 3)
        for i in items:
            i.write(tmp_path)
        dcmtk("storescu", "-aec", node.aet, "+sd", HOST, str(node.port), str(tmp_path), check=True)
        ae = AE(ae_title="ASKER")
        ae.add_requested_context(Move)
        assoc = ae.associate(HOST, node.port, ae_title=node.aet)
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = items[0].study_uid
        final = list(assoc.send_c_move(q, "TLSDEST", Move))[-1][0]
        assoc.release()
    finally:
        server.shutdown()
    assert (final.Status, final.NumberOfCompletedSuboperations) == (0, 3)
    assert sorted(received) == sorted(i.sop_uid for i in items)


def test_cli_echo_over_tls(node_factory, pki: tls.Paths, tmp_path: Path) -> None:
    import subprocess
    import sys

    node = _node(node_factory, pki, verify=True)
    cfg = tmp_path / "client.toml"
    cfg.write_text(f'[tls]\nclient_cert = "{pki.client_cert}"\nclient_key = "{pki.client_key}"\nca = "{pki.ca_cert}"\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "echo",
            "--config",
            str(cfg),
            "--tls",
            "localhost",
            str(node.tls_port),
            node.aet,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Online" in proc.stdout
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "echo",
            "--config",
            str(cfg),
            "localhost",
            str(node.tls_port),
            node.aet,
            "--timeout",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "Offline" in proc.stdout


def test_serve_makes_demo_certificates(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from conftest import wait_until

    port, tls_port = free_port(), free_port()
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(
        f'[appliance]\ndata_dir = "var"\n[dicom]\nbind = "{HOST}"\nport = {port}\ntls_port = {tls_port}\n'
        "free_space_limit_mb = 1\n[hl7]\nport = 0\n[web]\nport = 0\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        demo = tmp_path / "var" / "tls-demo"
        wait_until(
            lambda: (
                (demo / "ca.crt").exists() and dcmtk("echoscu", "-aec", "DISCPACS", HOST, str(port)).returncode == 0
            ),
            timeout=60,
        )
        proc = dcmtk("echoscu", "+tla", "+cf", str(demo / "ca.crt"), "-aec", "DISCPACS", HOST, str(tls_port))
        assert proc.returncode == 0, proc.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
    assert "demo" in out.decode().lower()


def test_cli_import_over_tls(node_factory, pki: tls.Paths, tmp_path: Path) -> None:
    import subprocess
    import sys

    node = _node(node_factory, pki, verify=True)
    folder = tmp_path / "in"
    folder.mkdir()
    for inst in dicomdata.study("PIMPTLS", "IMPORT^TLS", ("CT",), 3):
        inst.write(folder)
    cfg = tmp_path / "client.toml"
    cfg.write_text(f'[tls]\nclient_cert = "{pki.client_cert}"\nclient_key = "{pki.client_key}"\nca = "{pki.ca_cert}"\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "import",
            str(folder),
            "--config",
            str(cfg),
            "--tls",
            "--host",
            "localhost",
            "--port",
            str(node.tls_port),
            "--aet",
            node.aet,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 instance(s) sent" in proc.stdout
    assert node.app.index.counts()["instances"] == 3
