"""Forwarding to a regional PACS with Storage Commitment: Orthanc and DCMTK storescp as the regional server.

Every stored instance must end committed exactly once on the regional side (sent, without commitment), with the
local queue saying so; faults (down, refusing, partial commitment) are retried without losing anything.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from appliance.cli.forwarding import build_forwarding
from appliance.config import parse_config
from appliance.core import Appliance
from appliance.dicom.server import DicomNode
from appliance.forwarding.queue import ForwardQueue, not_forwarded
from appliance.forwarding.worker import Forwarder

import dicomdata
from conftest import HOST, free_port, wait_until

COMMITMENT = "1.2.840.10008.1.20.1"


class Appliance_:
    """An appliance node with forwarding wired as ``appliance serve`` wires it."""

    def __init__(self, data_dir: Path, forwarding: dict[str, Any], nodes: list[dict[str, Any]] | None = None) -> None:
        self.cfg = parse_config({
            "appliance": {"data_dir": str(data_dir)},
            "dicom": {"bind": HOST, "port": free_port(), "tls_port": 0, "free_space_limit_mb": 1,
                      "nodes": nodes or []},
            "forwarding": {"retry_min": 0.2, "retry_max": 1.0, "batch_size": 50, **forwarding},
        })
        self.app = Appliance(self.cfg)
        self.app.start()
        self.dicom = DicomNode(self.app)
        self.forwarder = build_forwarding(self.app, self.cfg)
        assert self.forwarder is None or isinstance(self.forwarder, Forwarder)
        if self.forwarder is not None:
            self.forwarder.poll = 0.1
        self.dicom.start()
        if self.forwarder is not None:
            self.forwarder.start()
        self.queue = ForwardQueue(self.app.db)
        self.port = self.cfg.dicom.port

    def store(self, instances: list[dicomdata.Instance]) -> None:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate(HOST, self.port, ae_title=self.cfg.dicom.ae_title)
        for inst in instances:
            assert assoc.send_c_store(inst.dataset()).Status == 0
        assoc.release()

    def stop(self) -> None:
        if self.forwarder is not None:
            self.forwarder.stop()
        self.dicom.stop(grace=2.0)
        self.app.stop()


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[Callable[..., Appliance_]]:
    started: list[Appliance_] = []

    def start(forwarding: dict[str, Any], nodes: list[dict[str, Any]] | None = None) -> Appliance_:
        node = Appliance_(tmp_path / f"app{len(started)}", forwarding, nodes)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def _study(pid: str, count: int, series: int = 1) -> list[dicomdata.Instance]:
    out: list[dicomdata.Instance] = []
    for _ in range(series):
        out += dicomdata.study(pid, f"FWD^{pid}", ("CT",), count)
    return out


def test_every_instance_ends_committed_at_orthanc(appliance: Callable[..., Appliance_], orthanc_factory: Any) -> None:
    regional = orthanc_factory(aet="REGIONAL")
    node = appliance({"enabled": True, "ae_title": "REGIONAL", "host": HOST, "port": regional.dicom_port},
                     nodes=[{"ae_title": "REGIONAL", "host": HOST, "port": regional.dicom_port}])
    regional.put_modality("appliance", node.cfg.dicom.ae_title, node.port)
    studies = _study("PFWD1", 3) + _study("PFWD2", 2)
    node.store(studies)
    status = wait_until(lambda: (s := node.queue.status()).counts["committed"] == len(studies) and s, timeout=60)
    assert status.counts == {"queued": 0, "sent": 0, "committed": 5, "failed": 0}
    assert status.series["committed"] == 2
    assert {i.sop_uid for i in studies} <= regional.sop_uids()
    assert node.queue.study_states({studies[0].study_uid}) == {studies[0].study_uid: "committed"}
    assert not_forwarded(node.app.db.conn, {i.series_uid for i in studies}, commitment=True) == set()


def test_without_commitment_storescp_gets_everything_once(appliance: Callable[..., Appliance_],
                                                          tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "regional"
    out.mkdir()
    proc = subprocess.Popen(["/usr/bin/storescp", "-aet", "REGIONAL", "-od", str(out), str(port)])
    try:
        wait_until(lambda: _listening(port))
        node = appliance({"enabled": True, "ae_title": "REGIONAL", "host": HOST, "port": port,
                          "storage_commitment": False})
        studies = _study("PFWD3", 4)
        node.store(studies)
        wait_until(lambda: node.queue.status().counts["sent"] == 4, timeout=60)
        assert len(list(out.iterdir())) == 4
        assert not_forwarded(node.app.db.conn, {studies[0].series_uid}, commitment=False) == set()
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def test_a_regional_server_that_is_down_gets_the_series_when_it_is_back(appliance: Callable[..., Appliance_],
                                                                        tmp_path: Path) -> None:
    port = free_port()
    node = appliance({"enabled": True, "ae_title": "REGIONAL", "host": HOST, "port": port,
                      "storage_commitment": False, "tcp_timeout_ms": 2000})
    studies = _study("PFWD4", 2)
    node.store(studies)
    failed = wait_until(lambda: (s := node.queue.status()).counts["failed"] == 2 and s, timeout=30)
    assert "connection refused" in failed.last_error
    assert not_forwarded(node.app.db.conn, {studies[0].series_uid}, commitment=False) == {studies[0].series_uid}
    out = tmp_path / "late"
    out.mkdir()
    proc = subprocess.Popen(["/usr/bin/storescp", "-aet", "REGIONAL", "-od", str(out), str(port)])
    try:
        wait_until(lambda: node.queue.status().counts["sent"] == 2, timeout=30)
        assert len(list(out.iterdir())) == 2
    finally:
        proc.terminate()
        proc.wait(10)


class PartialCommitter:
    """A regional server (pynetdicom) that stores everything but commits only every other instance, reporting on the
    association that asked."""

    def __init__(self) -> None:
        self.port = free_port()
        self.stored: list[str] = []
        self.requests = 0
        ae = AE(ae_title="REGIONAL")
        ae.add_supported_context(CTImageStorage)
        ae.add_supported_context(COMMITMENT, scu_role=True, scp_role=True)
        self.server = ae.start_server((HOST, self.port), block=False, evt_handlers=[
            (evt.EVT_C_STORE, self._store), (evt.EVT_N_ACTION, self._action)])

    def _store(self, event: Any) -> int:
        self.stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    def _action(self, event: Any) -> tuple[int, None]:
        info = event.action_information
        self.requests += 1
        first = self.requests == 1
        assoc = event.assoc

        def report() -> None:
            out = Dataset()
            out.TransactionUID = info.TransactionUID
            items = list(info.ReferencedSOPSequence)
            done, bad = (items[::2], items[1::2]) if first else (items, [])
            out.ReferencedSOPSequence = [_ref(i) for i in done]
            if bad:
                out.FailedSOPSequence = [_ref(i, 0x0110) for i in bad]
            assoc.send_n_event_report(out, 2 if bad else 1, COMMITMENT, "1.2.840.10008.1.20.1.1")

        threading.Timer(0.1, report).start()
        return 0, None

    def stop(self) -> None:
        self.server.shutdown()


def _ref(item: Dataset, reason: int | None = None) -> Dataset:
    out = Dataset()
    out.ReferencedSOPClassUID = item.ReferencedSOPClassUID
    out.ReferencedSOPInstanceUID = item.ReferencedSOPInstanceUID
    if reason is not None:
        out.FailureReason = reason
    return out


def test_instances_not_committed_are_sent_again_until_they_are(appliance: Callable[..., Appliance_]) -> None:
    regional = PartialCommitter()
    try:
        node = appliance({"enabled": True, "ae_title": "REGIONAL", "host": HOST, "port": regional.port})
        studies = _study("PFWD5", 4)
        node.store(studies)
        wait_until(lambda: node.queue.status().counts["committed"] == 4, timeout=60)
    finally:
        regional.stop()
    # The two it did not commit the first time went again; each instance was committed once.
    assert sorted(regional.stored) == sorted([i.sop_uid for i in studies] + [i.sop_uid for i in studies[1::2]])
    assert regional.requests == 2


def test_restart_sends_everything_again_and_disabled_forwarding_queues_nothing(
        appliance: Callable[..., Appliance_], tmp_path: Path) -> None:
    off = appliance({"enabled": False})
    off.store(_study("PFWD6", 2))
    assert off.queue.status().counts == {"queued": 0, "sent": 0, "committed": 0, "failed": 0}
    assert off.queue.restart() == 2
    assert off.queue.status().counts["queued"] == 2


def test_forwarding_status_command(tmp_path: Path) -> None:
    import sys

    cfg = tmp_path / "appliance.toml"
    cfg.write_text(f'[appliance]\ndata_dir = "{tmp_path / "var"}"\n[forwarding]\nenabled = true\n'
                   'ae_title = "REGIONAL"\nhost = "127.0.0.1"\nport = 11112\n')
    proc = subprocess.run([sys.executable, "-m", "appliance", "forwarding", "status", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "forwarding to REGIONAL@127.0.0.1:11112, storage commitment" in proc.stdout
    assert "committed" in proc.stdout
