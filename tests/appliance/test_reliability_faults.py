"""Faults of issue 9: SIGKILL during disc authoring and during HL7 traffic, a real full disk, a locked index."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hl7support import MLLPClient, orm, segments
from publishing_support import (
    PublishNode,
    Serve,
    job_state,
    jobs_of,
    publish_config,
    write_config,
)
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, ModalityWorklistInformationFind  # type: ignore[attr-defined]

from appliance.discs.jobs import JobState

import dicomdata
from conftest import HOST, Node, free_port, wait_until

# -- SIGKILL during disc authoring ---------------------------------------------------------------------------------


@pytest.mark.dcmtk
def test_sigkill_during_authoring_resumes_and_burns_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    server = Serve(config)
    folder = tmp_path / "in"
    folder.mkdir()
    items = dicomdata.study("PIDAUTH", "AUTHOR^KILL", ("CT",), 100, rows=512, columns=512)
    for inst in items:
        inst.write(folder)
    jobs = jobs_of(config)
    try:
        server.send(folder, "_E")  # burn at once on the Epson robot
        # Kill as soon as the job has left the queue: authoring 100 CT images takes a while, so the kill most often
        # lands while it is authoring (the state it hit is printed); every later state must recover as well.
        hit = wait_until(
            lambda: job_state(jobs, 1) not in (None, JobState.QUEUED) and job_state(jobs, 1), timeout=60, interval=0.002
        )
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        with capsys.disabled():
            print(f"\nSIGKILL landed with job 1 {hit}")
        server = Serve(config)
        wait_until(lambda: job_state(jobs, 1) in (JobState.DONE, JobState.FAILED), timeout=120)
        job = jobs.get(1)
        assert job.state is JobState.DONE, f"job 1 ended {job.state}"
        assert [j.id for j in jobs.recent()] == [1]  # resumed, not duplicated
        assert sorted(jobs.instances(1)) == sorted(i.sop_uid for i in items)
    finally:
        server.stop()
    # Burned once: the robot got exactly one order for disc 1 of job 1 (the attempt may be a later one).
    orders = sorted(p.name for p in (tmp_path / "var" / "robots" / "epson").rglob("J1D1*"))
    tickets = {name.split(".")[0] for name in orders}
    assert len(tickets) == 1, orders


# -- SIGKILL during HL7 traffic ------------------------------------------------------------------------------------


def _hl7_config(tmp_path: Path, dicom: int, hl7: int) -> Path:
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(
        f'[appliance]\ndata_dir = "{tmp_path / "var"}"\n'
        f'[dicom]\nbind = "{HOST}"\nport = {dicom}\ntls_port = 0\nfree_space_limit_mb = 1\n'
        f'[hl7]\nbind = "{HOST}"\nport = {hl7}\nstation_aets = {{ MR = "MR1" }}\n[web]\nport = 0\n'
    )
    return cfg


def _serve(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _listens(port: int) -> bool:
    try:
        MLLPClient(port, timeout=2).close()
    except OSError:
        return False
    return True


def _worklist(port: int) -> list[Dataset]:
    ds = Dataset()
    for key in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID", "RequestedProcedureID"):
        setattr(ds, key, "")
    # Patient ID takes no wildcards on the worklist (as DCMTK's wlmscpfs); the names of the orders do.
    ds.PatientName = "KILL^HL7*"
    sps = Dataset()
    for key in ("ScheduledStationAETitle", "Modality", "ScheduledProcedureStepID", "ScheduledProcedureStepStartDate"):
        setattr(sps, key, "")
    ds.ScheduledProcedureStepSequence = [sps]
    ae = AE(ae_title="MR1")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate(HOST, port, ae_title="DISCPACS")
    assert assoc.is_established
    found = [
        ident
        for status, ident in assoc.send_c_find(ds, ModalityWorklistInformationFind)
        if status is not None and status.Status in (0xFF00, 0xFF01) and ident is not None
    ]
    assoc.release()
    return found


def test_sigkill_during_hl7_keeps_every_acked_order(tmp_path: Path) -> None:
    dicom_port, hl7_port = free_port(), free_port()
    cfg = _hl7_config(tmp_path, dicom_port, hl7_port)
    server = _serve(cfg)
    acked: list[int] = []
    sent: list[int] = []

    def sender() -> None:
        client = MLLPClient(hl7_port, timeout=20)
        try:
            for n in range(100_000):
                sent.append(n)
                ack = client.request(
                    orm(
                        msg_id=f"MK{n}",
                        pid=f"PKILL{n}",
                        name=f"KILL^HL7{n}",
                        zds=f"1.2.826.0.1.3680043.10.7.{n}",
                        accession=f"ACCK{n}",
                        rp_id=f"RPK{n}",
                        sps_id=f"SPK{n}",
                        modality="MR",
                    )
                )
                if segments(ack)["MSA"] == f"MSA|AA|MK{n}":
                    acked.append(n)
        except (OSError, ConnectionError):
            return  # the server was killed under us: expected
        finally:
            client.close()

    try:
        wait_until(lambda: _listens(hl7_port), timeout=60)
        thread = threading.Thread(target=sender)
        thread.start()
        wait_until(lambda: len(acked) >= 30, timeout=60)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        thread.join(timeout=60)
        assert not thread.is_alive()
        server = _serve(cfg)
        wait_until(lambda: _listens(hl7_port), timeout=60)
        items = _worklist(dicom_port)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    by_patient = {str(ds.PatientID): ds for ds in items}
    assert len(by_patient) == len(items), "an order was stored twice"
    for n in acked:
        assert f"PKILL{n}" in by_patient, f"acknowledged order {n} is not in the worklist"
    # Every item, acknowledged or caught mid-flight, is whole: all of its order's fields, or no item at all.
    for pid, ds in by_patient.items():
        n = int(pid.removeprefix("PKILL"))
        assert n in sent
        assert ds.AccessionNumber == f"ACCK{n}" and ds.StudyInstanceUID == f"1.2.826.0.1.3680043.10.7.{n}"
        assert ds.RequestedProcedureID == f"RPK{n}"
        sps = ds.ScheduledProcedureStepSequence[0]
        assert sps.ScheduledProcedureStepID == f"SPK{n}" and sps.ScheduledStationAETitle == "MR1"
    assert len(by_patient) - len(acked) <= 1  # at most the one message in flight when the kill landed


# -- a real full disk (tmpfs) ------------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs mounted for the test; skipped where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this container does not allow mounting a tmpfs: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_store_on_a_full_disk_refuses_and_recovers(small_fs: Path, node_factory) -> None:
    node = node_factory(data_dir=small_fs / "var", free_space_limit_mb=0)
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * 1024 * 1024)  # removed later to free space
    items = dicomdata.study("PDISK", "DISK^FULL", ("CT",), 40, rows=256, columns=256)  # about 130 kB each
    ae = AE(ae_title="FILLER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    statuses = []
    for inst in items:
        rsp = assoc.send_c_store(inst.dataset())
        assert rsp is not None and "Status" in rsp, "a C-STORE went unanswered on a full disk"
        statuses.append(int(rsp.Status))
        if statuses[-1] != 0:
            break
    assoc.release()
    assert statuses[-1] != 0, "the 3 MB file system never filled up"
    assert 0xA700 <= statuses[-1] <= 0xA7FF, hex(statuses[-1])
    stored = statuses.count(0)
    # Nothing half-written: the index and the files agree, no temporary file is left.
    assert node.app.index.counts()["instances"] == stored
    assert len(node.app.store_area.iter_files()) == stored
    assert list(node.app.store_area.tmp.iterdir()) == []
    # Free space again: the next store succeeds on the same running node.
    filler.unlink()
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.send_c_store(items[stored].dataset()).Status == 0
    assoc.release()
    assert node.app.index.lookup(items[stored].sop_uid) is not None


# -- a locked index ------------------------------------------------------------------------------------------------


def test_locked_index_fails_the_store_and_recovers(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    db = node.app.db
    connect = db._connect

    def quick() -> sqlite3.Connection:  # each association thread's connection gives up on the lock after 0.3 s
        conn = connect()
        conn.execute("PRAGMA busy_timeout = 300")
        return conn

    monkeypatch.setattr(db, "_connect", quick)
    first, second = dicomdata.study("PLOCK", "LOCKED^INDEX", ("CT",), 2)
    blocker = sqlite3.connect(node.cfg.database, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the database
    ae = AE(ae_title="LOCKTEST")
    ae.add_requested_context(CTImageStorage)
    try:
        assoc = ae.associate(HOST, node.port, ae_title=node.aet)
        assert assoc.is_established
        rsp = assoc.send_c_store(first.dataset())
        assoc.release()
        assert rsp is not None and int(rsp.Status) != 0, "a store was acknowledged without its index row"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert node.app.store_area.iter_files() == []
    assert list(node.app.store_area.tmp.iterdir()) == []
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.send_c_store(first.dataset()).Status == 0
    assert assoc.send_c_store(second.dataset()).Status == 0
    assoc.release()
    assert node.app.index.counts()["instances"] == 2


# -- a read-only data disk (tmpfs remounted read-only) ---------------------------------------------------------------


def mount_tmpfs(mnt: Path, size: str) -> None:
    """Mount a tmpfs of ``size`` on ``mnt`` (created if needed); skip the test where mounting is not allowed."""
    mnt.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"this container does not allow mounting a tmpfs: {done.stderr.strip()}")


def remount(mnt: Path, mode: str) -> None:
    done = subprocess.run(["mount", "-o", f"remount,{mode}", str(mnt)], capture_output=True, text=True)
    assert done.returncode == 0, f"remount,{mode} of {mnt} failed: {done.stderr.strip()}"


@pytest.fixture
def store_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs at ``<data_dir>/store`` (the received files); ``data_dir`` is ``tmp_path / "var"``.

    The database folder itself cannot be remounted read-only under a running node: the kernel refuses a read-only
    remount (EBUSY) while any file of the mount is open for writing, and the node keeps its SQLite index open.
    """
    mnt = tmp_path / "var" / "store"
    mount_tmpfs(mnt, "16m")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_read_only_data_disk_fails_the_store_and_recovers(
    store_fs: Path, node_factory, caplog: pytest.LogCaptureFixture
) -> None:
    node = node_factory(data_dir=store_fs.parent, free_space_limit_mb=0)
    first, second, third = dicomdata.study("PRO", "READ^ONLY", ("CT",), 3)
    ae = AE(ae_title="ROTEST")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    assert assoc.send_c_store(first.dataset()).Status == 0
    assoc.release()
    remount(store_fs, "ro")
    try:
        assoc = ae.associate(HOST, node.port, ae_title=node.aet)
        assert assoc.is_established
        rsp = assoc.send_c_store(second.dataset())
        assoc.release()
    finally:
        remount(store_fs, "rw")
    assert rsp is not None and "Status" in rsp, "a C-STORE went unanswered on a read-only disk"
    assert int(rsp.Status) != 0, "a store was acknowledged on a read-only disk"
    assert "read-only" in caplog.text.lower() and second.sop_uid in caplog.text, caplog.text
    # Nothing half-written: only the first instance is indexed and on disk, no temporary file is left.
    assert node.app.index.lookup(second.sop_uid) is None
    assert node.app.index.counts()["instances"] == 1
    assert len(node.app.store_area.iter_files()) == 1
    assert list(node.app.store_area.tmp.iterdir()) == []
    # Writable again: the same running node stores both the refused instance and a new one.
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.send_c_store(second.dataset()).Status == 0
    assert assoc.send_c_store(third.dataset()).Status == 0
    assoc.release()
    assert node.app.index.counts()["instances"] == 3
    assert len(node.app.store_area.iter_files()) == 3


# -- the disc staging disk fills up (tmpfs at <data_dir>/discs) ----------------------------------------------------


def _tree_bytes(folder: Path, skip: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file() and p != skip}


def test_staging_disk_full_fails_the_job_and_retry_burns(tmp_path: Path) -> None:
    data_dir = tmp_path / "pub"
    discs = data_dir / "discs"
    mount_tmpfs(discs, "8m")
    node: PublishNode | None = None
    try:
        filler = discs / "filler"
        filler.write_bytes(b"\0" * 4 * 1024 * 1024)  # 4 MB stay free: the instances fit, not the image too
        node = PublishNode(publish_config(data_dir))
        folder = tmp_path / "in"
        folder.mkdir()
        items = dicomdata.study("PSTAGE", "STAGING^FULL", ("CT",), 20, rows=256, columns=256)  # about 2.6 MB
        for inst in items:
            inst.write(folder)
        node.send(folder, "_E")
        store_before = {p: node.app.store_area.path(p).read_bytes() for p in node.app.store_area.iter_files()}
        assert len(store_before) == len(items)
        job = node.wait_state(1, JobState.FAILED, JobState.DONE, timeout=60)
        assert job.state is JobState.FAILED, f"a disc that does not fit ended {job.state}"
        reason = (job.error + " " + job.message).lower()
        assert "space" in reason or "full" in reason, job
        # The store is untouched; the staging area holds no half-staged instances or disc image.
        assert {p: node.app.store_area.path(p).read_bytes() for p in node.app.store_area.iter_files()} == store_before
        assert node.app.index.counts()["instances"] == len(items)
        left = _tree_bytes(discs, filler)
        assert not [name for name in left if name.endswith(".iso") or "/pool/" in name or name.endswith(".dcm")], left
        assert sum(left.values()) < 200_000, left
        # Free the space: retry authors and burns the disc.
        filler.unlink()
        node.jobs.retry(1)
        job = node.wait_state(1, JobState.DONE, JobState.FAILED, timeout=120)
        assert job.state is JobState.DONE, job
        assert sorted(node.jobs.instances(1)) == sorted(i.sop_uid for i in items)
        assert [j.id for j in node.jobs.recent()] == [1]
    finally:
        if node is not None:
            node.stop()
        subprocess.run(["umount", "-l", str(discs)], capture_output=True)
