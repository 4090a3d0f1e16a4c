"""A read-only database (issue 9): while running, and when ``appliance serve`` starts.

The database's file system cannot simply be remounted read-only under a running node: the kernel refuses
(EBUSY) while a file of the mount is open for writing, and SQLite keeps the database open. Two real kernel
refusals are used instead, both on a small ext4 file system in a loop device holding the data folder:

* ``chattr +i`` on the database and its WAL: the kernel refuses every write with EPERM, also through the file
  descriptors SQLite already holds, and lifts it with ``chattr -i``, so recovery is tested in the same process;
* an ext4 error (``/sys/fs/ext4/<dev>/trigger_fs_error``) with ``errors=remount-ro``: the kernel's emergency
  read-only remount of a failing disk. It lasts until the disk is unmounted and checked, so recovery is a restart.

SQLite reports both the same way: the connections open before the fault fail with "disk I/O error"
(SQLITE_IOERR), connections opened during it are read-only and fail with "attempt to write a readonly database"
(SQLITE_READONLY). For ``appliance serve`` a read-only bind mount makes the data folder or the database file
read-only (as root, file modes do not stop writes).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hl7support import HL7_TABLE, MLLPClient, orm, segments
from publishing_support import PublishNode, robot_table
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]  # generated at import time

from appliance.config import Config, parse_config
from appliance.db import Database
from appliance.discs.jobs import DiscSpec, JobEngine, JobState, JobStore
from hl7.listener import HL7Listener
from robots import JobState as RobotJobState

import dicomdata
from conftest import HOST, dcmtk, free_port, wait_until

pytestmark = pytest.mark.dcmtk


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True)


def _need_root_and(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts, loop devices, file attributes)")
    missing = [tool for tool in ("mount", "umount", *tools) if not shutil.which(tool)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


class Ext4Disk:
    """A 64 MB ext4 file system in a file, on a loop device, mounted at ``mnt`` with ``errors=remount-ro``."""

    def __init__(self, image: Path, mnt: Path) -> None:
        _need_root_and("losetup", "mkfs.ext4", "e2fsck", "chattr")
        self.image, self.mnt = image, mnt
        with open(image, "wb") as fh:
            fh.truncate(64 * 1024 * 1024)
        made = _run("mkfs.ext4", "-q", "-F", str(image))
        if made.returncode != 0:
            pytest.skip(f"mkfs.ext4 failed: {made.stderr.strip()}")
        loop = _run("losetup", "--find", "--show", str(image))
        if loop.returncode != 0:
            pytest.skip(f"no loop device here: {loop.stderr.strip()}")
        self.device = loop.stdout.strip()
        mnt.mkdir(parents=True, exist_ok=True)
        mounted = _run("mount", "-t", "ext4", "-o", "errors=remount-ro", self.device, str(mnt))
        if mounted.returncode != 0:
            _run("losetup", "-d", self.device)
            pytest.skip(f"this machine does not allow mounting a loop device: {mounted.stderr.strip()}")

    def fail(self) -> None:
        """Make ext4 report an error: with errors=remount-ro the kernel turns the mounted file system read-only."""
        trigger = Path("/sys/fs/ext4") / Path(self.device).name / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip(f"{trigger} is missing (kernel without ext4 error injection)")
        trigger.write_text("read-only database test\n")

    def repair(self) -> None:
        """What an operator does after the kernel remounted the disk read-only: unmount, check, mount again."""
        done = _run("umount", str(self.mnt))
        assert done.returncode == 0, f"umount {self.mnt}: {done.stderr.strip()}"
        checked = _run("e2fsck", "-f", "-y", self.device)
        assert checked.returncode in (0, 1), f"e2fsck: {checked.stdout}{checked.stderr}"  # 1: errors corrected
        done = _run("mount", "-t", "ext4", "-o", "errors=remount-ro", self.device, str(self.mnt))
        assert done.returncode == 0, f"mount {self.mnt}: {done.stderr.strip()}"

    def destroy(self) -> None:
        _run("umount", "-l", str(self.mnt))
        _run("losetup", "-d", self.device)


@pytest.fixture
def data_disk(tmp_path: Path) -> Iterator[Ext4Disk]:
    """The data folder ``tmp_path / "var"`` on its own ext4 disk."""
    disk = Ext4Disk(tmp_path / "disk.img", tmp_path / "var")
    try:
        yield disk
    finally:
        disk.destroy()


def bind(source: Path, target: Path, read_only: bool = False) -> None:
    """Bind-mount ``source`` on ``target`` (a folder or a file), optionally read-only; skip where not allowed."""
    _need_root_and()
    done = _run("mount", "--bind", str(source), str(target))
    if done.returncode != 0:
        pytest.skip(f"this machine does not allow bind mounts: {done.stderr.strip()}")
    if read_only:
        done = _run("mount", "-o", "remount,bind,ro", str(target))
        if done.returncode != 0:
            _run("umount", str(target))
            pytest.skip(f"this machine does not allow read-only bind mounts: {done.stderr.strip()}")


def unmount(target: Path) -> None:
    if _run("umount", str(target)).returncode != 0:
        _run("umount", "-l", str(target))


class FullNode(PublishNode):
    """DICOM, HL7 and disc publishing on one appliance, wired as ``appliance serve`` wires them."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.hl7 = HL7Listener(self.app)
        self.hl7.start()
        self.hl7_port = self.hl7.port

    def stop(self) -> None:
        if not self.stopped:
            self.hl7.stop()
        super().stop()


def node_config(data_dir: Path, robots_dir: Path) -> Config:
    """DICOM and HL7 on loopback, a fast simulated Epson robot with its hot folder under ``robots_dir``."""
    return parse_config(
        {
            "appliance": {"data_dir": str(data_dir)},
            "dicom": {"bind": HOST, "port": free_port(), "tls_port": 0, "free_space_limit_mb": 0},
            "hl7": {**HL7_TABLE, "port": free_port(), "free_space_limit_mb": 0},
            "burn": {"poll_interval": 0.1, "staging_free_space_mb": 0},
            "robots": {"epson": robot_table(robots_dir, "epson")},
        }
    )


def order(n: int) -> str:
    return orm(
        msg_id=f"RO{n}",
        pid=f"PRO{n}",
        name=f"READ^ONLY{n}",
        zds=f"1.2.826.0.1.3680043.10.9.{n}",
        accession=f"ACCRO{n}",
        rp_id=f"RPRO{n}",
        sps_id=f"SPRO{n}",
    )


def ack_code(ack: str) -> str:
    return segments(ack)["MSA"].split("|")[1]


def worklist_patients(node: FullNode) -> set[str]:
    return {item.patient_id for item in node.app.worklist.items()}


def storescu(node: FullNode, *files: Path, suffix: str = "") -> subprocess.CompletedProcess[str]:
    return dcmtk("storescu", "-v", "-aec", node.aet + suffix, HOST, str(node.port), *map(str, files))


def refused_status(proc: subprocess.CompletedProcess[str]) -> None:
    """storescu got 0x0110 Processing Failure for its instances (and says so in its exit status)."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Received Store Response (Unknown Status: 0x110)" in out, out
    assert "Store Response (Success)" not in out, out


def write_study(folder: Path, patient: str, count: int) -> list[Any]:
    folder.mkdir(parents=True, exist_ok=True)
    items = dicomdata.study(patient, f"{patient}^RO", ("CT",), count)
    for inst in items:
        inst.write(folder)
    return items


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def store_matches_index(node: FullNode) -> None:
    """Nothing half-written or orphaned: the store's files are exactly the indexed ones, no temporary file."""
    assert set(node.app.store_area.iter_files()) == node.app.index.all_paths()
    assert list(node.app.store_area.tmp.iterdir()) == []


# -- the database becomes read-only while running, and writable again ----------------------------------------------


def test_database_made_read_only_while_running_fails_cleanly_and_recovers(
    data_disk: Ext4Disk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = FullNode(node_config(data_disk.mnt, data_disk.mnt))
    try:
        # Before: a disc job held at the robot (no blank discs), a worklist order over a connection kept open.
        robot = node.sim("epson")
        robot.inject("no_media")
        burned = write_study(tmp_path / "burn", "PROJOB", 2)
        node.send(tmp_path / "burn", "_E")
        node.wait_job(1, lambda job: job.needs_staff)
        ticket = node.jobs.discs(1)[0].ticket
        early = MLLPClient(node.hl7_port)
        assert ack_code(early.request(order(1))) == "AA"
        refused = write_study(tmp_path / "refused", "PROFAIL", 2)
        stored_before = set(node.app.store_area.iter_files())
        database = node.cfg.database
        locked = [database, database.with_name(database.name + "-wal")]
        assert all(p.exists() for p in locked)

        assert _run("chattr", "+i", *map(str, locked)).returncode == 0
        try:
            # C-STORE from DCMTK on a new association: refused with a failure status, the file removed again.
            refused_status(storescu(node, tmp_path / "refused" / f"{refused[0].sop_uid}.dcm"))
            # An association opened now and kept open across the recovery.
            ae = AE(ae_title="ROASSOC")
            ae.add_requested_context(CTImageStorage)
            assoc = ae.associate(HOST, node.port, ae_title=node.aet)
            assert assoc.is_established
            assert int(assoc.send_c_store(refused[1].dataset()).Status) == 0x0110
            # HL7 on the connection opened before, and on one opened now: AR with the reason, nothing applied.
            late = MLLPClient(node.hl7_port)
            for client, n in ((early, 2), (late, 3)):
                ack = client.request(order(n))
                assert ack_code(ack) == "AR", ack
                assert "database" in ack and ("read-only" in ack or "cannot be written" in ack), ack
            # The robot finishes the held disc while its job cannot be written: the job stays where it was.
            robot.clear_faults()
            wait_until(lambda: node.publishing.publisher.robots["epson"].poll(ticket).state is RobotJobState.DONE)
            wait_until(lambda: "following disc job 1 on its robot failed: the database" in caplog.text)
            assert node.jobs.get(1).state in (JobState.SUBMITTED, JobState.BURNING)
            # Clear log lines, nothing half-written or orphaned.
            uid = refused[0].sop_uid
            assert (
                f"C-STORE {uid} from STORESCU failed, nothing stored (0x0110): index could not record {uid}: "
                "the database is read-only" in caplog.text
            ), caplog.text
            assert "HL7 ORM^O01 RO3 could not be applied: the database is read-only" in caplog.text
            assert "HL7 ORM^O01 RO2 could not be applied: the database cannot be written to disk" in caplog.text
            assert set(node.app.store_area.iter_files()) == stored_before
            assert list(node.app.store_area.tmp.iterdir()) == []
            assert all(node.app.index.lookup(i.sop_uid) is None for i in refused)
        finally:
            assert _run("chattr", "-i", *map(str, locked)).returncode == 0

        # Writable again: the same running node takes everything, on the same association and connections.
        assert node.wait_state(1, JobState.DONE, JobState.FAILED).state is JobState.DONE
        assert [e.to_state for e in node.jobs.events(1)][-1] == "done"
        orders = {p.name.split(".")[0] for p in (data_disk.mnt / "robots" / "epson").rglob("J1D1*")}
        assert orders == {ticket}  # burned once
        assert sorted(node.jobs.instances(1)) == sorted(i.sop_uid for i in burned)
        assert int(assoc.send_c_store(refused[1].dataset()).Status) == 0
        assoc.release()
        storescu(node, tmp_path / "refused" / f"{refused[0].sop_uid}.dcm").check_returncode()
        for client, n in ((early, 2), (late, 3)):
            assert ack_code(client.request(order(n))) == "AA"
            client.close()
        assert worklist_patients(node) >= {"PRO1", "PRO2", "PRO3"}
        assert all(node.app.index.lookup(i.sop_uid) is not None for i in refused)
        store_matches_index(node)
    finally:
        node.stop()


def test_burn_association_ending_while_the_database_is_read_only_still_gets_its_disc(
    data_disk: Ext4Disk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The modality was told its association ended well: its disc job is queued once the database takes writes."""
    caplog.set_level(logging.INFO, "appliance.discs.routing")
    node = FullNode(node_config(data_disk.mnt, data_disk.mnt))
    node.publishing.router.RETRY_INTERVAL = 0.2
    try:
        items = write_study(tmp_path / "burn", "PROEND", 2)
        ae = AE(ae_title="ROBURN")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate(HOST, node.port, ae_title=node.aet + "_E")
        assert assoc.is_established
        assert [int(assoc.send_c_store(i.dataset()).Status) for i in items] == [0, 0]
        database = node.cfg.database
        locked = [database, database.with_name(database.name + "-wal")]
        assert _run("chattr", "+i", *map(str, locked)).returncode == 0
        try:
            assoc.release()
            wait_until(lambda: "queueing the disc job of association" in caplog.text)
            assert (
                "(2 instance(s)) failed: the database is read-only" in caplog.text
                or "(2 instance(s)) failed: the database cannot be written to disk" in caplog.text
            ), caplog.text
            assert node.publishing.router.pending()
            assert node.jobs.recent() == []
        finally:
            assert _run("chattr", "-i", *map(str, locked)).returncode == 0
        job = node.wait_state(1, JobState.DONE)
        assert sorted(node.jobs.instances(job.id)) == sorted(i.sop_uid for i in items)
        assert node.publishing.router.pending() == []
        assert "done on a later attempt" in caplog.text
        assert len(node.jobs.recent()) == 1  # one disc, not one per attempt
    finally:
        node.stop()


# -- the disc job engine when a job's next state cannot be written ----------------------------------------------------


def test_engine_keeps_a_job_whose_next_state_the_database_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The author thread used to die here, leaving the job "authoring" until a restart."""
    db = Database(tmp_path / "appliance.db")
    jobs = JobStore(db)
    job_id = jobs.create("epson", 1, ["1.2.3"], "manual")
    refusals = [sqlite3.OperationalError("attempt to write a readonly database")]
    real = jobs.set_discs

    def set_discs(job: int, discs: Any) -> None:  # the first write after authoring is refused, later ones work
        if refusals:
            raise refusals.pop()
        real(job, discs)

    monkeypatch.setattr(jobs, "set_discs", set_discs)

    class Author:
        def author(self, job: Any) -> list[DiscSpec]:
            return [DiscSpec(1, "CD", 1000, "VOL")]

    class Robot:
        def update(self, job: int) -> None:
            jobs.transition(job, JobState.DONE, "burned", expect=JobState.SUBMITTED)

    engine = JobEngine(jobs, Author(), Robot(), poll_interval=0.05)
    engine.start()
    try:
        wait_until(lambda: jobs.get(job_id).state is JobState.DONE)
        assert f"disc job {job_id}: its new state cannot be recorded" in caplog.text
        assert [(e.from_state, e.to_state) for e in jobs.events(job_id)] == [
            ("", "queued"),
            ("queued", "authoring"),
            ("authoring", "queued"),
            ("queued", "authoring"),
            ("authoring", "submitted"),
            ("submitted", "done"),
        ]
        assert jobs.events(job_id)[2].reason == "authoring was interrupted by a database failure"
    finally:
        engine.stop()
        db.close()


# -- the kernel remounts the database's disk read-only (ext4 error) -------------------------------------------------


def test_database_disk_remounted_read_only_by_the_kernel(
    data_disk: Ext4Disk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The received files live on another disk (bind-mounted into the data folder), so the database alone fails.
    store = tmp_path / "store-disk"
    store.mkdir()
    (data_disk.mnt / "store").mkdir()
    bind(store, data_disk.mnt / "store")
    robots = tmp_path / "robots"
    node = FullNode(node_config(data_disk.mnt, robots))
    try:
        kept = write_study(tmp_path / "kept", "PKEPT", 2)
        storescu(node, *files_of(tmp_path / "kept")).check_returncode()
        client = MLLPClient(node.hl7_port)
        assert ack_code(client.request(order(11))) == "AA"
        refused = write_study(tmp_path / "refused", "PREFUSED", 2)

        data_disk.fail()
        with pytest.raises(OSError) as info:
            (data_disk.mnt / "probe").write_text("x")
        assert info.value.errno == 30  # EROFS: the kernel really made the disk read-only

        uid = refused[0].sop_uid
        refused_status(storescu(node, tmp_path / "refused" / f"{uid}.dcm"))
        assert (
            f"C-STORE {uid} from STORESCU failed, nothing stored (0x0110): index could not record {uid}: "
            "the database is read-only" in caplog.text
        ), caplog.text
        ack = client.request(order(12))
        assert ack_code(ack) == "AR" and "the database cannot be written to disk" in ack, ack
        client.close()
        assert node.app.index.lookup(uid) is None
        assert len(node.app.store_area.iter_files()) == len(kept)  # the refused files were removed again
        assert list(node.app.store_area.tmp.iterdir()) == []
        node.stop()  # a stop on a read-only disk still closes everything (it cannot record a clean stop)
        assert "cannot mark the stop as clean" in caplog.text
    finally:
        node.stop()
        unmount(data_disk.mnt / "store")

    data_disk.repair()
    bind(store, data_disk.mnt / "store")
    try:
        node = FullNode(node_config(data_disk.mnt, robots))
        try:
            assert "the previous run did not stop cleanly" in caplog.text
            assert all(node.app.index.lookup(i.sop_uid) is not None for i in kept)
            assert all(node.app.index.lookup(i.sop_uid) is None for i in refused)
            store_matches_index(node)
            assert worklist_patients(node) == {"PRO11"}
            storescu(node, *files_of(tmp_path / "refused")).check_returncode()
            client = MLLPClient(node.hl7_port)
            assert ack_code(client.request(order(12))) == "AA"
            client.close()
            assert worklist_patients(node) == {"PRO11", "PRO12"}
            assert all(node.app.index.lookup(i.sop_uid) is not None for i in refused)
            store_matches_index(node)
        finally:
            node.stop()
    finally:
        unmount(data_disk.mnt / "store")


# -- appliance serve on a read-only data folder or database ---------------------------------------------------------


def serve_config(folder: Path, data_dir: Path) -> Path:
    config = folder / "appliance.toml"
    config.write_text(
        f'[appliance]\ndata_dir = "{data_dir}"\n'
        f'[dicom]\nbind = "{HOST}"\nport = {free_port()}\ntls_port = 0\n[hl7]\nport = 0\n'
        "[web]\nport = 0\n"
    )
    return config


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The single ``appliance: ...`` line a refused start prints (no traceback, nothing else)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 8, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("appliance: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("state", ["existing", "empty", "missing"])
def test_serve_refuses_a_read_only_data_folder(tmp_path: Path, state: str) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    data_dir = disk / "var"
    if state == "existing":
        Database(data_dir / "appliance.db").close()  # an installed appliance's data
    elif state == "empty":
        data_dir.mkdir()
    before = sorted(p.name for p in disk.rglob("*"))
    bind(disk, disk, read_only=True)
    try:
        proc = serve(serve_config(tmp_path, data_dir))
    finally:
        unmount(disk)
    line = one_line_error(proc)
    if state == "missing":
        assert line == f"appliance: database folder {data_dir} cannot be created: Read-only file system"
    else:
        assert line.startswith(f"appliance: database {data_dir / 'appliance.db'} ")
        assert line.endswith(f"; its folder {data_dir} is not writable")
    assert sorted(p.name for p in disk.rglob("*")) == before


def test_serve_refuses_a_read_only_database_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    database = data_dir / "appliance.db"
    Database(database).close()
    bind(database, database, read_only=True)
    try:
        proc = serve(serve_config(tmp_path, data_dir))
    finally:
        unmount(database)
    assert one_line_error(proc) == f"appliance: database {database} is read-only (attempt to write a readonly database)"
    assert not (data_dir / "logs").exists() and not (data_dir / "running").exists()  # stopped before any write
