"""Forwarding faults: a regional server that rejects, aborts mid-batch, is slower than the transfer timeout,
talks TLS; and the appliance SIGKILLed mid-batch then restarted (Orthanc as the regional server).

Each fault is seen in the local queue with its reason, then retried until every instance is at the regional
server, once in the queue's count and once in the server's.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from publishing_support import Serve

import tls
from appliance.config import load_config
from appliance.forwarding.queue import not_forwarded
from appliance.forwarding.worker import BatchResult, Forwarder, Report

import dicomdata
from conftest import HOST, dcmtk, free_port, wait_until
from forwarding_support import Appliance_, FaultyRegional, study


@pytest.fixture
def regional() -> Any:
    server = FaultyRegional()
    yield server
    server.stop()


def _failed(node: Appliance_, count: int) -> Any:
    return wait_until(lambda: (s := node.queue.status()).counts["failed"] >= count and s, timeout=30)


def test_a_rejecting_server_fails_the_batch_with_the_reason_then_gets_it(
    appliance: Callable[..., Appliance_], regional: FaultyRegional
) -> None:
    regional.reject(True)
    node = appliance({"enabled": True, "ae_title": "REGIONAL", "host": HOST, "port": regional.port})
    studies = study("PFLT1", 3)
    node.store(studies)
    status = _failed(node, 3)
    assert "rejected the association permanently: calling AE title not recognised" in status.last_error
    assert regional.stored == []
    regional.reject(False)
    wait_until(lambda: node.queue.status().counts["committed"] == 3, timeout=30)
    assert sorted(regional.stored) == sorted(i.sop_uid for i in studies)


def test_an_abort_mid_batch_fails_the_rest_and_sends_it_again(
    appliance: Callable[..., Appliance_], regional: FaultyRegional
) -> None:
    regional.abort_at = 3
    node = appliance(
        {
            "enabled": True,
            "ae_title": "REGIONAL",
            "host": HOST,
            "port": regional.port,
            "retry_min": 2.0,
            "retry_max": 2.0,
        },
        hold=True,
    )
    studies = study("PFLT2", 6)
    node.store(studies)
    assert node.forwarder is not None
    node.forwarder.start()
    status = _failed(node, 4)
    # The first two went through; the one being sent and everything after it wait with the reason.
    assert status.counts["failed"] == 4, status
    assert "aborted" in status.last_error or "association lost" in status.last_error, status.last_error
    wait_until(lambda: node.queue.status().counts["committed"] == 6, timeout=30)
    assert sorted(regional.stored) == sorted(i.sop_uid for i in studies)
    assert node.queue.status().counts == {"queued": 0, "sent": 0, "committed": 6, "failed": 0}


def test_a_server_slower_than_the_transfer_timeout_frees_the_worker(
    appliance: Callable[..., Appliance_], regional: FaultyRegional
) -> None:
    regional.slow = 8.0
    node = appliance(
        {
            "enabled": True,
            "ae_title": "REGIONAL",
            "host": HOST,
            "port": regional.port,
            "transfer_timeout_ms": 1000,
            "retry_min": 1.0,
        }
    )
    studies = study("PFLT3", 3)
    node.store(studies)
    # The worker gave up on the silent server after the transfer timeout, long before it answered.
    status = _failed(node, 3)
    assert "no C-STORE response within 1 s" in status.last_error
    wait_until(lambda: node.queue.status().counts["committed"] == 3, timeout=40)
    assert {i.sop_uid for i in studies} <= set(regional.stored)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tls.Paths:
    return tls.init_pki(tmp_path_factory.mktemp("pki"), ["localhost"], ["127.0.0.1"])


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> tls.Paths:
    return tls.init_pki(tmp_path_factory.mktemp("other"), ["localhost"], ["127.0.0.1"])


def test_tls_forwarding_with_client_certificate(
    appliance: Callable[..., Appliance_], pki: tls.Paths, other_pki: tls.Paths
) -> None:
    # The regional server asks for our client certificate and verifies it against its CA.
    server = FaultyRegional(tls.server_context(pki.server_cert, pki.server_key, pki.ca_cert, verify_peer=True))
    try:
        table = {"ca": str(pki.ca_cert), "client_cert": str(pki.client_cert), "client_key": str(pki.client_key)}
        node = appliance(
            {"enabled": True, "ae_title": "REGIONAL", "host": HOST, "port": server.port, "tls": True}, tls=table
        )
        studies = study("PFLT4", 3)
        node.store(studies)
        wait_until(lambda: node.queue.status().counts["committed"] == 3, timeout=30)
        assert sorted(server.stored) == sorted(i.sop_uid for i in studies)
        # A node that does not trust the server's CA sends nothing, and says why.
        stranger = appliance(
            {"enabled": True, "ae_title": "REGIONAL", "host": HOST, "port": server.port, "tls": True},
            tls={**table, "ca": str(other_pki.ca_cert)},
        )
        stranger.store(study("PFLT5", 1))
        status = _failed(stranger, 1)
        assert "CERTIFICATE_VERIFY_FAILED" in status.last_error, status.last_error
        assert len(server.stored) == 3
    finally:
        server.stop()


def _serve_config(folder: Path, regional_port: int) -> Path:
    port = free_port()
    text = f"""
[appliance]
data_dir = "{folder / "var"}"
[dicom]
bind = "{HOST}"
port = {port}
tls_port = 0
free_space_limit_mb = 1
[[dicom.nodes]]
ae_title = "REGIONAL"
host = "{HOST}"
port = {regional_port}
[hl7]
port = 0
[web]
port = 0
[forwarding]
enabled = true
ae_title = "REGIONAL"
host = "{HOST}"
port = {regional_port}
batch_size = 20
retry_min = 0.5
retry_max = 2.0
"""
    path = folder / "appliance.toml"
    path.write_text(text)
    return path


def _queue_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {r[0]: r[1] for r in conn.execute("SELECT state, COUNT(*) FROM forward_instances GROUP BY state")}
    finally:
        conn.close()


def test_sigkill_mid_batch_then_restart_commits_everything_once(tmp_path: Path, orthanc_factory: Any) -> None:
    orthanc = orthanc_factory(aet="REGIONAL")
    config = _serve_config(tmp_path, orthanc.dicom_port)
    cfg = load_config(config)
    orthanc.put_modality("appliance", cfg.dicom.ae_title, cfg.dicom.port)
    files = tmp_path / "in"
    files.mkdir()
    studies = dicomdata.study("PKILL", "KILL^MIDBATCH", ("CT", "MR", "OT"), 100)
    for inst in studies:
        inst.write(files)
    serve = Serve(config)
    try:
        dcmtk("storescu", "-aec", cfg.dicom.ae_title, "+sd", HOST, str(cfg.dicom.port), str(files), check=True)
        # Killed while batches are going out: some instances at Orthanc, some still waiting.
        wait_until(lambda: 0 < len(orthanc.instances()) < len(studies) - 40, timeout=60, interval=0.02)
    finally:
        serve.stop(signal.SIGKILL)
    before = _queue_counts(cfg.database)
    assert before.get("queued", 0) + before.get("failed", 0) > 0, before
    serve = Serve(config)
    try:
        wait_until(lambda: _queue_counts(cfg.database) == {"committed": len(studies)}, timeout=180, interval=0.5)
    finally:
        serve.stop()
    held = orthanc.sop_uids(studies[0].study_uid)
    assert held == {i.sop_uid for i in studies}
    assert len(orthanc.find("Instance", {"StudyInstanceUID": studies[0].study_uid})) == len(studies)
    conn = sqlite3.connect(cfg.database)
    try:
        assert not_forwarded(conn, {i.series_uid for i in studies}, commitment=True) == set()
        rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT sop_uid) FROM forward_instances").fetchone()
    finally:
        conn.close()
    assert rows == (len(studies), len(studies))


def test_a_report_on_a_new_association_ends_the_wait_for_one_on_the_request_association(
    appliance: Callable[..., Appliance_],
) -> None:
    # The regional server (Orthanc does this) reports on a new association while the N-ACTION's association is still
    # open: the transport is told at once, instead of waiting its few seconds for a report that will not come there.
    seen: list[bool] = []

    class NewAssociationReporter:
        def __init__(self, worker: Forwarder) -> None:
            self.worker = worker

        def send(self, instances: list[Any]) -> BatchResult:
            return BatchResult(sent=[i.sop_uid for i in instances])

        def commit(self, instances: list[Any], transaction_uid: str, reported: Any = None) -> Report | None:
            assert reported is not None and not reported.is_set()
            self.worker.on_report(Report(transaction_uid, [i.sop_uid for i in instances], {}))  # the listener's call
            seen.append(reported.is_set())
            return None

    node = appliance({"enabled": True, "ae_title": "REGIONAL", "host": HOST, "port": free_port()}, hold=True)
    node.store(study("PFLT6", 2))
    worker = node.forwarder
    assert worker is not None
    worker.transport = NewAssociationReporter(worker)
    assert worker.run_once()
    assert seen == [True]
    assert node.queue.status().counts["committed"] == 2


def test_instances_awaiting_commitment_at_a_restart_are_sent_again_at_once(
    appliance: Callable[..., Appliance_],
) -> None:
    # Sent before a stop, report never received (it went to an appliance that was down): the next start sends them
    # again instead of waiting commitment_wait (600 s by default) for a report that will not come.
    node = appliance({"enabled": True, "ae_title": "REGIONAL", "host": HOST, "port": free_port()}, hold=True)
    studies = study("PFLT7", 2)
    node.store(studies)
    node.queue.mark_sent([i.sop_uid for i in studies], "1.2.826.0.1.3680043.10.1234.99")
    assert node.queue.status().counts["sent"] == 2
    assert node.forwarder is not None
    node.forwarder.start()
    counts = node.queue.status().counts
    assert counts["sent"] == 0 and counts["failed"] == 2
    assert (due := node.queue.next_due()) is not None and due <= time.time()
