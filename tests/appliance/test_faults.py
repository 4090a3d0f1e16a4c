"""Bad input and faults on the receive path: each answered properly, nothing half-written."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]  # generated at import time

import dicomdata
from conftest import HOST, Node, free_port, wait_until


def _raw_store(node: Node, payload: bytes, tmp_path: Path, sop_uid: str = "1.2.3.4.5") -> tuple[int, str]:
    """Send a C-STORE whose data set is ``payload`` byte for byte (pynetdicom's chunked send)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import UID
    from pynetdicom import _config

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
    path = tmp_path / "raw.dcm"
    with open(path, "wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(DicomFileLike(fh), meta)
        fh.write(payload)
    ae = AE(ae_title="RAWPEER")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.is_established
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        rsp = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    # The association goes on: a valid instance is still accepted afterwards.
    good = dicomdata.study("PAFTER", "AFTER^BAD", ("CT",), 1)[0].dataset()
    after = assoc.send_c_store(good)
    assoc.release()
    assert after.Status == 0
    return int(rsp.Status), str(rsp.get("ErrorComment", ""))


def _encoded(ds) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def _no_leftovers(node: Node, expected: int) -> None:
    assert node.app.index.counts()["instances"] == expected
    assert len(node.app.store_area.iter_files()) == expected
    assert list(node.app.store_area.tmp.iterdir()) == []


def test_truncated_dataset_is_refused(node: Node, caplog, tmp_path: Path) -> None:
    ds = dicomdata.study("PTRUNC", "TRUNC^TEST", ("CT",), 1)[0].dataset()
    status, comment = _raw_store(node, _encoded(ds)[:-100], tmp_path, ds.SOPInstanceUID)
    assert 0xC000 <= status <= 0xCFFF
    assert "corrupt" in comment or "truncated" in comment
    assert "nothing stored" in caplog.text
    _no_leftovers(node, 1)  # only the good instance sent afterwards


def test_garbage_is_refused(node: Node, tmp_path: Path) -> None:
    status, _ = _raw_store(node, b"\xff" * 300, tmp_path)
    assert 0xC000 <= status <= 0xCFFF
    _no_leftovers(node, 1)


def test_missing_uids_are_refused(node: Node, tmp_path: Path) -> None:
    ds = dicomdata.study("PNOUID", "NOUID^TEST", ("CT",), 1)[0].dataset()
    del ds.StudyInstanceUID
    status, comment = _raw_store(node, _encoded(ds), tmp_path, ds.SOPInstanceUID)
    assert 0xC000 <= status <= 0xCFFF
    assert "StudyInstanceUID" in comment
    _no_leftovers(node, 1)


def test_free_space_limit_gives_a700(node: Node, tmp_path: Path, caplog) -> None:
    first, second = dicomdata.study("PFULL", "FULL^DISK", ("CT",), 2)
    ae = AE(ae_title="FILLER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    assert assoc.send_c_store(first.dataset()).Status == 0
    # Pretend the disk is nearly full: ask for more free space than it has.
    node.app.store_area.free_space_limit = node.app.store_area.free_bytes() + 10**9
    status = assoc.send_c_store(second.dataset())
    assoc.release()
    assert status.Status == 0xA700
    assert "free" in status.ErrorComment
    assert any(r.levelname == "ERROR" and "(0xA700)" in r.message and "free" in r.message for r in caplog.records)
    _no_leftovers(node, 1)
    assert node.app.index.lookup(first.sop_uid) is not None


def test_disk_full_during_write_leaves_nothing(node: Node, monkeypatch) -> None:
    import errno

    real_write = os.write

    def failing_write(fd: int, data) -> int:
        if len(data) > 1000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("appliance.store.os.write", failing_write)
    ds = dicomdata.study("PENOSPC", "ENOSPC^TEST", ("CT",), 1, rows=64, columns=64)[0].dataset()
    ae = AE(ae_title="FILLER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0xA700
    _no_leftovers(node, 0)


def test_disk_full_or_failing_while_flushing_leaves_nothing(node: Node, monkeypatch) -> None:
    import errno

    # A disk that fails the flush (delayed allocation finds the disk full, or an I/O error) must leave
    # neither a file nor a row.
    for code, expected in ((errno.ENOSPC, 0xA700), (errno.EIO, 0x0110)):

        def failing_fsync(fd: int, code: int = code) -> None:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr("appliance.store.os.fsync", failing_fsync)
        ds = dicomdata.study("PFLUSH", "FLUSH^FAIL", ("CT",), 1)[0].dataset()
        ae = AE(ae_title="FLUSHER")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate(HOST, node.port, ae_title=node.aet)
        status = assoc.send_c_store(ds)
        assoc.release()
        assert status.Status == expected
        _no_leftovers(node, 0)


def test_index_failure_removes_the_file(node: Node, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(node.app.index, "record", broken)
    ds = dicomdata.study("PIDX", "IDX^FAIL", ("CT",), 1)[0].dataset()
    ae = AE(ae_title="IDXFAIL")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0x0110
    assert node.app.store_area.iter_files() == []


def test_reconcile_after_crash(node_factory, tmp_path: Path) -> None:
    data = tmp_path / "crashed"
    node = node_factory(data_dir=data)
    inst = dicomdata.study("PREC", "REC^TEST", ("CT",), 2)
    ae = AE(ae_title="PRE")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    for i in inst:
        assert assoc.send_c_store(i.dataset()).Status == 0
    assoc.release()
    node.dicom.stop()
    node.app.db.close()
    # What a crash can leave: a half-written temp file, a file renamed but not
    # indexed (never acknowledged), and an index row whose file vanished.
    (data / "store" / "tmp" / "abc.part").write_bytes(b"half")
    orphan = dicomdata.study("PORPH", "ORPHAN^FILE", ("CT",), 1)[0]
    (data / "store" / "2020").mkdir()
    orphan.write(data / "store" / "2020")
    gone = node.app.index.lookup(inst[1].sop_uid)
    assert gone is not None
    (data / "store" / gone.path).unlink()
    node.stopped = True
    restarted = node_factory(data_dir=data)
    assert list((data / "store" / "tmp").iterdir()) == []
    assert restarted.app.index.lookup(orphan.sop_uid) is not None
    assert restarted.app.index.lookup(inst[1].sop_uid) is None
    assert restarted.app.index.lookup(inst[0].sop_uid) is not None
    assert set(restarted.app.store_area.iter_files()) == restarted.app.index.all_paths()


def _write_config(path: Path, data_dir: Path, port: int) -> Path:
    path.write_text(
        f'[appliance]\ndata_dir = "{data_dir}"\nlog_level = "DEBUG"\n'
        f'[dicom]\nbind = "{HOST}"\nport = {port}\ntls_port = 0\nfree_space_limit_mb = 1\n'
        "[hl7]\nport = 0\n[web]\nport = 0\n"
    )
    return path


def _serve(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _echo_ok(port: int, aet: str = "DISCPACS") -> bool:
    ae = AE(ae_title="PROBE")
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.network_timeout = 2
    assoc = ae.associate(HOST, port, ae_title=aet)
    if assoc.is_established:
        assoc.release()
        return True
    return False


def test_sigkill_mid_transfer_loses_nothing_acknowledged(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "var"
    config = _write_config(tmp_path / "appliance.toml", data, port)
    server = _serve(config)
    acked: list[str] = []
    stop = threading.Event()
    try:
        wait_until(lambda: _echo_ok(port))
        # Big instances, so that the kill most likely lands in the middle of one.
        items = dicomdata.study("PKILL", "KILL^NINE", ("CT",), 400, rows=512, columns=512)

        def sender() -> None:
            ae = AE(ae_title="KILLTEST")
            ae.add_requested_context(CTImageStorage)
            assoc = ae.associate(HOST, port, ae_title="DISCPACS")
            for inst in items:
                if stop.is_set() or not assoc.is_established:
                    break
                try:
                    status = assoc.send_c_store(inst.dataset())
                except (RuntimeError, OSError):
                    break  # the server was killed under us: expected
                if status is not None and status.get("Status") == 0:
                    acked.append(inst.sop_uid)
            if assoc.is_established:
                assoc.abort()

        thread = threading.Thread(target=sender)
        thread.start()
        wait_until(lambda: len(acked) >= 8, timeout=60)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        stop.set()
        thread.join(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert len(acked) >= 8
    server = _serve(config)
    try:
        wait_until(lambda: _echo_ok(port))
        from appliance.config import load_config
        from appliance.db import Database
        from appliance.index import Index

        index = Index(Database(load_config(config).database))
        for uid in acked:
            assert index.lookup(uid) is not None, f"acknowledged instance {uid} was lost"
        store = data / "store"
        assert list((store / "tmp").iterdir()) == []
        files = {str(p.relative_to(store)) for p in store.rglob("*.dcm") if p.relative_to(store).parts[0] != "tmp"}
        assert files == index.all_paths()
        for rel in files:
            ds = dcmread(store / rel)
            assert len(ds.PixelData) == 512 * 512 * 2  # whole files only
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "var"
    server = _serve(_write_config(tmp_path / "appliance.toml", data, port))
    wait_until(lambda: _echo_ok(port))
    assert (data / "running").exists()
    server.send_signal(signal.SIGTERM)
    out, _ = server.communicate(timeout=30)
    assert server.returncode == 0
    text = out.decode()
    assert "received SIGTERM" in text and "appliance stopped" in text
    assert not (data / "running").exists()
    log = (data / "logs" / "appliance.log").read_text()
    assert "appliance stopped" in log


def _tgkill(pid: int, tid: int, signum: int) -> None:
    """Send a signal to one thread of another process (Linux tgkill), as the kernel may pick any thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    sys_tgkill = {"x86_64": 234, "aarch64": 131}.get(platform.machine())
    if sys_tgkill is None:
        pytest.skip(f"no tgkill number known for {platform.machine()}")
    if libc.syscall(sys_tgkill, pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc/<pid>/task")
def test_sigterm_delivered_to_a_worker_thread_still_stops(tmp_path: Path) -> None:
    """systemd's SIGTERM goes to the process; the kernel may hand it to any thread, not only the main one."""
    port = free_port()
    data = tmp_path / "var"
    server = _serve(_write_config(tmp_path / "appliance.toml", data, port))
    try:
        wait_until(lambda: _echo_ok(port))
        # The oldest worker threads are the long-lived services (association threads come and go).
        workers = sorted(int(t.name) for t in Path(f"/proc/{server.pid}/task").iterdir() if int(t.name) != server.pid)
        assert workers, "the server runs no threads besides the main one"
        _tgkill(server.pid, workers[0], signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0
    assert "received SIGTERM" in out.decode() and "appliance stopped" in out.decode()


def test_disk_io_error_is_refused_and_logged(node: Node, monkeypatch, caplog) -> None:
    import errno

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("appliance.store.os.fsync", broken_fsync)
    ds = dicomdata.study("PEIO", "EIO^TEST", ("CT",), 1)[0].dataset()
    ae = AE(ae_title="EIO")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(HOST, node.port, ae_title=node.aet)
    status = assoc.send_c_store(ds)
    monkeypatch.undo()
    again = assoc.send_c_store(ds)  # the association and the listener carry on
    assoc.release()
    assert status.Status == 0x0110 and "disk" in status.ErrorComment
    assert "store disk error" in caplog.text
    assert again.Status == 0
    _no_leftovers(node, 1)
