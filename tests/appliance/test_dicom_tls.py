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
    dcmtk("storescu", *_tls_args(pki), "-aec", node.aet + "_E", HOST, str(node.tls_port), *map(str,
          tmp_path.glob("*.dcm")), check=True)
    assert node.app.index.counts()["instances"] == 2
    proc = dcmtk("findscu", *_tls_args(pki), "-S", "-aec", node.aet, "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "PatientID=PTLS", "-k", "PatientName", HOST, str(node.tls_port), check=True)
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
