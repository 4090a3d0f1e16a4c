"""Forwarding to a regional PACS with Storage Commitment: Orthanc and DCMTK storescp as the regional server.

Every stored instance must end committed exactly once on the regional side (sent, without commitment), with the
local queue saying so; faults (down, refusing, partial commitment) are retried without losing anything.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from appliance.forwarding.queue import not_forwarded

from conftest import HOST, free_port, wait_until
from forwarding_support import Appliance_, reference, study

COMMITMENT = "1.2.840.10008.1.20.1"


def test_every_instance_ends_committed_at_orthanc(appliance: Callable[..., Appliance_], orthanc_factory: Any) -> None:
    regional = orthanc_factory(aet="REGIONAL")
    node = appliance(
        {"enabled": True, "ae_title": "REGIONAL", "host": HOST, "port": regional.dicom_port},
        nodes=[{"ae_title": "REGIONAL", "host": HOST, "port": regional.dicom_port}],
    )
    regional.put_modality("appliance", node.cfg.dicom.ae_title, node.port)
    studies = study("PFWD1", 3) + study("PFWD2", 2)
    node.store(studies)
    status = wait_until(lambda: (s := node.queue.status()).counts["committed"] == len(studies) and s, timeout=60)
    assert status.counts == {"queued": 0, "sent": 0, "committed": 5, "failed": 0}
    assert status.series["committed"] == 2
    assert {i.sop_uid for i in studies} <= regional.sop_uids()
    assert node.queue.study_states({studies[0].study_uid}) == {studies[0].study_uid: "committed"}
    assert not_forwarded(node.app.db.conn, {i.series_uid for i in studies}, commitment=True) == set()


def test_without_commitment_storescp_gets_everything_once(appliance: Callable[..., Appliance_], tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "regional"
    out.mkdir()
    proc = subprocess.Popen(["/usr/bin/storescp", "-aet", "REGIONAL", "-od", str(out), str(port)])
    try:
        wait_until(lambda: _listening(port))
        node = appliance(
            {"enabled": True, "ae_title": "REGIONAL", "host": HOST, "port": port, "storage_commitment": False}
        )
        studies = study("PFWD3", 4)
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


def test_a_regional_server_that_is_down_gets_the_series_when_it_is_back(
    appliance: Callable[..., Appliance_], tmp_path: Path
) -> None:
    port = free_port()
    node = appliance(
        {
            "enabled": True,
            "ae_title": "REGIONAL",
            "host": HOST,
            "port": port,
            "storage_commitment": False,
            "tcp_timeout_ms": 2000,
        }
    )
    studies = study("PFWD4", 2)
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
        self.server = ae.start_server(
            (HOST, self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_N_ACTION, self._action)],
        )

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
            out.ReferencedSOPSequence = [reference(i) for i in done]
            if bad:
                out.FailedSOPSequence = [reference(i, 0x0110) for i in bad]
            assoc.send_n_event_report(out, 2 if bad else 1, COMMITMENT, "1.2.840.10008.1.20.1.1")

        threading.Timer(0.1, report).start()
        return 0, None

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()


def test_instances_not_committed_are_sent_again_until_they_are(appliance: Callable[..., Appliance_]) -> None:
    regional = PartialCommitter()
    try:
        node = appliance({"enabled": True, "ae_title": "REGIONAL", "host": HOST, "port": regional.port})
        studies = study("PFWD5", 4)
        node.store(studies)
        wait_until(lambda: node.queue.status().counts["committed"] == 4, timeout=60)
    finally:
        regional.stop()
    # The two it did not commit the first time went again; each instance was committed once.
    assert sorted(regional.stored) == sorted([i.sop_uid for i in studies] + [i.sop_uid for i in studies[1::2]])
    assert regional.requests == 2


def test_restart_sends_everything_again_and_disabled_forwarding_queues_nothing(
    appliance: Callable[..., Appliance_], tmp_path: Path
) -> None:
    off = appliance({"enabled": False})
    off.store(study("PFWD6", 2))
    assert off.queue.status().counts == {"queued": 0, "sent": 0, "committed": 0, "failed": 0}
    assert off.queue.restart() == 2
    assert off.queue.status().counts["queued"] == 2


def test_forwarding_status_command(tmp_path: Path) -> None:
    import sys

    cfg = tmp_path / "appliance.toml"
    cfg.write_text(
        f'[appliance]\ndata_dir = "{tmp_path / "var"}"\n[forwarding]\nenabled = true\n'
        'ae_title = "REGIONAL"\nhost = "127.0.0.1"\nport = 11112\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "forwarding", "status", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "forwarding to REGIONAL@127.0.0.1:11112, storage commitment" in proc.stdout
    assert "committed" in proc.stdout
