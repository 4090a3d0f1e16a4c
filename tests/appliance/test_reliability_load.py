"""Load: 20 associations storing at once while worklist queries, HL7 orders and web requests run (issue 9).

One ``appliance serve`` subprocess with DICOM, MLLP and web on loopback. Checks that every association is answered,
every instance acknowledged is in the index and on disk, every HL7 order gets its AA and lands in the worklist, every
web request gets an answer below 500; prints the server's peak RSS (VmHWM) and asserts a generous bound.
"""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hl7support import MLLPClient, orm, segments
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, ModalityWorklistInformationFind  # type: ignore[attr-defined]

import dicomdata
from conftest import HOST, free_port, wait_until

ASSOCIATIONS = 20
PER_ASSOCIATION = 4
SIZES = (32, 128, 256)
ORDERS = 60
PEAK_RSS_LIMIT_MB = 1024


def _config(tmp_path: Path, dicom: int, hl7: int, web: int) -> Path:
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(
        f'[appliance]\ndata_dir = "{tmp_path / "var"}"\nlog_level = "INFO"\n'
        f'[dicom]\nbind = "{HOST}"\nport = {dicom}\ntls_port = 0\nfree_space_limit_mb = 1\nmax_associations = 32\n'
        f'[hl7]\nbind = "{HOST}"\nport = {hl7}\nstation_aets = {{ MR = "MR1" }}\n'
        f'[web]\nbind = "{HOST}"\nport = {web}\nrate_limit = 100000\n'
    )
    return cfg


def _echo_ok(port: int) -> bool:
    ae = AE(ae_title="PROBE")
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.network_timeout = 2
    assoc = ae.associate(HOST, port, ae_title="DISCPACS")
    if assoc.is_established:
        assoc.release()
        return True
    return False


def _listens(port: int) -> bool:
    try:
        MLLPClient(port, timeout=2).close()
    except OSError:
        return False
    return True


def _mwl_query() -> Dataset:
    ds = Dataset()
    # Patient ID takes no wildcards on the worklist (as DCMTK's wlmscpfs); the names of the orders do.
    ds.PatientName = "LOAD^ORDER*"
    ds.PatientID = ""
    sps = Dataset()
    sps.ScheduledStationAETitle = ""
    sps.Modality = ""
    sps.ScheduledProcedureStepStartDate = ""
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def _mwl_count(port: int) -> int:
    ae = AE(ae_title="MR1")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate(HOST, port, ae_title="DISCPACS")
    assert assoc.is_established
    n = 0
    for status, ident in assoc.send_c_find(_mwl_query(), ModalityWorklistInformationFind):
        assert status is not None, "a worklist query went unanswered"
        if status.Status in (0xFF00, 0xFF01) and ident is not None:
            n += 1
    assoc.release()
    return n


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc for the peak RSS")
def test_twenty_stores_with_worklist_hl7_and_web(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dicom_port, hl7_port, web_port = free_port(), free_port(), free_port()
    cfg = _config(tmp_path, dicom_port, hl7_port, web_port)
    server = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    studies = [
        dicomdata.study(
            f"PSTORE{i}",
            f"LOAD^STORE{i}",
            ("CT",),
            PER_ASSOCIATION,
            rows=SIZES[i % len(SIZES)],
            columns=SIZES[i % len(SIZES)],
        )
        for i in range(ASSOCIATIONS)
    ]
    acked: list[str] = []
    failures: list[str] = []
    hl7_acks: list[str] = []
    web_statuses: list[int] = []
    mwl_rounds: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(ASSOCIATIONS + 3)
    stores_done = threading.Event()

    def store(i: int) -> None:
        ae = AE(ae_title=f"LOAD{i}")
        ae.add_requested_context(CTImageStorage)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        start.wait(timeout=60)
        assoc = ae.associate(HOST, dicom_port, ae_title="DISCPACS")
        if not assoc.is_established:
            with lock:
                failures.append(f"association {i} not established")
            return
        for inst in studies[i]:
            status = assoc.send_c_store(inst.dataset())
            with lock:
                if status is not None and status.get("Status") == 0:
                    acked.append(inst.sop_uid)
                else:
                    failures.append(f"association {i}: {inst.sop_uid} answered {status}")
        assoc.release()

    def worklist() -> None:
        start.wait(timeout=60)
        while not stores_done.is_set() or not mwl_rounds:
            n = _mwl_count(dicom_port)
            with lock:
                mwl_rounds.append(n)

    def hl7() -> None:
        client = MLLPClient(hl7_port)
        start.wait(timeout=60)
        for n in range(ORDERS):
            ack = client.request(
                orm(
                    msg_id=f"MSGL{n}",
                    pid=f"PLOAD{n}",
                    name=f"LOAD^ORDER{n}",
                    zds=f"1.2.826.0.1.3680043.10.9.{n}",
                    accession=f"ACCL{n}",
                    rp_id=f"RPL{n}",
                    sps_id=f"SPSL{n}",
                    modality="MR",
                )
            )
            with lock:
                hl7_acks.append(segments(ack)["MSA"])
        client.close()

    def web() -> None:
        start.wait(timeout=60)
        paths = ["/staff/login", "/token?not-a-token", "/study", "/no/such/page", "/staff/studies"]
        k = 0
        while not stores_done.is_set() or k < len(paths):
            conn = http.client.HTTPConnection(HOST, web_port, timeout=30)
            conn.request("GET", paths[k % len(paths)])
            resp = conn.getresponse()
            resp.read()
            conn.close()
            with lock:
                web_statuses.append(resp.status)
            k += 1

    try:
        wait_until(lambda: _echo_ok(dicom_port) and _listens(hl7_port), timeout=60)
        threads = [threading.Thread(target=store, args=(i,)) for i in range(ASSOCIATIONS)]
        others = [threading.Thread(target=f) for f in (worklist, hl7, web)]
        for t in threads + others:
            t.start()
        for t in threads:
            t.join(timeout=300)
        stores_done.set()
        for t in others:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads + others), "a client hung"
        assert server.poll() is None, "the server died under load"
        peak = _peak_rss_mb(server.pid)
        final_mwl = _mwl_count(dicom_port)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
    with capsys.disabled():
        print(
            f"\nload: {len(acked)} instances over {ASSOCIATIONS} associations, {len(hl7_acks)} HL7 orders, "
            f"{len(mwl_rounds)} worklist queries, {len(web_statuses)} web requests; server peak RSS {peak:.0f} MB"
        )
    assert failures == []
    assert len(acked) == ASSOCIATIONS * PER_ASSOCIATION
    assert hl7_acks == [f"MSA|AA|MSGL{n}" for n in range(ORDERS)]
    assert final_mwl == ORDERS
    assert web_statuses and all(s < 500 for s in web_statuses), sorted(set(web_statuses))
    assert server.returncode == 0
    assert peak < PEAK_RSS_LIMIT_MB
    # Nothing acknowledged was lost: every instance is indexed and its file is whole on disk.
    from appliance.config import load_config
    from appliance.db import Database
    from appliance.index import Index

    index = Index(Database(load_config(cfg).database))
    store_dir = tmp_path / "var" / "store"
    for uid in acked:
        row = index.lookup(uid)
        assert row is not None, f"acknowledged instance {uid} is not indexed"
        assert (store_dir / row.path).stat().st_size > 0
    assert list((store_dir / "tmp").iterdir()) == []
