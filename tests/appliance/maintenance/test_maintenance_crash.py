"""SIGKILL of ``appliance serve`` in the middle of an archiving and of a deletion task, then a restart: the index
and the files agree, every index row names a readable file, and nothing acknowledged is lost that was not due
for deletion."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import JPEGLSLossless
from upkeep_support import cli, getscu_study, serve, store, write_toml

import dicomdata
from conftest import HOST, free_port, wait_until

pytestmark = pytest.mark.dcmtk

ALWAYS = ["Mon-Sun 00:00-24:00"]
NEVER_SOON = ["Mon 03:00-04:00"]


def _db(data_dir: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(data_dir / "appliance.db", timeout=30)
    return conn


def _count(data_dir: Path, sql: str, *args: object) -> int:
    conn = _db(data_dir)
    try:
        return int(conn.execute(sql, args).fetchone()[0])
    finally:
        conn.close()


def _rows(data_dir: Path) -> dict[str, tuple[str, str]]:
    conn = _db(data_dir)
    try:
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT sop_uid, path, transfer_syntax FROM instances")}
    finally:
        conn.close()


def _files_on_disk(store_dir: Path) -> set[str]:
    found = {str(p.relative_to(store_dir)) for p in store_dir.rglob("*.dcm")}
    return {p for p in found if not p.startswith("tmp/")}


def _start(cfg: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    server = serve(cfg, log)
    wait_until(lambda: cli("echo", HOST, str(port), "DISCPACS").returncode == 0, timeout=60)
    return server


def _kill(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGKILL)
    server.wait(30)


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(60)


def _every_row_readable(data_dir: Path, originals: dict[str, np.ndarray]) -> dict[str, tuple[str, str]]:
    rows = _rows(data_dir)
    for sop_uid, (path, syntax) in rows.items():
        ds = dcmread(data_dir / "store" / path)
        assert str(ds.file_meta.TransferSyntaxUID) == syntax, f"{sop_uid}: the index and the file disagree"
        if sop_uid in originals:
            assert np.array_equal(ds.pixel_array, originals[sop_uid]), f"{sop_uid}: pixels changed"
    return rows


def test_sigkill_during_compression_then_restart(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "var", free_port()
    plain = write_toml(tmp_path / "plain.toml", data_dir, port, maintenance={"archiving": NEVER_SOON})
    items = dicomdata.study("PKILLZ", "KILL^ZIP", ("CT", "MR"), 200, rows=256, columns=256)
    originals = {i.sop_uid: i.dataset().pixel_array for i in items}
    server = _start(plain, port, tmp_path / "serve1.log")
    try:
        assert set(store(port, items)) == {0}
    finally:
        _stop(server)
    packing = write_toml(
        tmp_path / "pack.toml",
        data_dir,
        port,
        archiving={"compression": "jpeg-ls-lossless"},
        maintenance={"archiving": ALWAYS, "deletion": NEVER_SOON},
    )
    server = _start(packing, port, tmp_path / "serve2.log")
    sql = "SELECT COUNT(*) FROM instances WHERE transfer_syntax = ?"
    watch = _db(data_dir)
    try:
        wait_until(lambda: watch.execute(sql, (JPEGLSLossless,)).fetchone()[0] >= 10, timeout=120, interval=0.005)
        server.send_signal(signal.SIGSTOP)
    finally:
        watch.close()
        _kill(server)
    done = _count(data_dir, sql, JPEGLSLossless)
    assert 0 < done < len(items), "the kill should land in the middle of the task"
    rows = _every_row_readable(data_dir, originals)
    assert set(rows) == set(originals), "an acknowledged instance was lost"

    server = _start(packing, port, tmp_path / "serve3.log")
    try:
        wait_until(lambda: _count(data_dir, sql, JPEGLSLossless) == len(items), timeout=240, interval=0.2)
        rows = _every_row_readable(data_dir, originals)
        assert {syntax for _path, syntax in rows.values()} == {JPEGLSLossless}
        wait_until(
            lambda: _count(data_dir, "SELECT COUNT(*) FROM maintenance_tasks WHERE state != 'done'") == 0, timeout=60
        )
        # The duplicates a kill leaves (new file not yet indexed, or old file not yet removed) are gone.
        assert _files_on_disk(data_dir / "store") == {p for p, _s in rows.values()}
        # One task, resumed rather than started twice.
        assert _count(data_dir, "SELECT COUNT(*) FROM maintenance_tasks WHERE kind = 'archiving'") == 1
        got = getscu_study(port, items[0].study_uid, tmp_path / "get")
        assert len(got) == len(items)
        for path in got[:: max(1, len(got) // 40)]:
            ds = dcmread(path)
            assert np.array_equal(ds.pixel_array, originals[str(ds.SOPInstanceUID)])
    finally:
        _stop(server)


def test_sigkill_during_deletion_then_restart(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "var", free_port()
    plain = write_toml(tmp_path / "plain.toml", data_dir, port, maintenance={"deletion": NEVER_SOON})
    old = [dicomdata.study(f"POLD{n}", "OLD^SERIES", ("CT",), 2, rows=32, columns=32) for n in range(600)]
    server = _start(plain, port, tmp_path / "serve1.log")
    try:
        assert set(store(port, [i for s in old for i in s])) == {0}
    finally:
        _stop(server)
    conn = _db(data_dir)
    with conn:
        conn.execute("UPDATE instances SET received = '2020-01-01T00:00:00.000000Z'")
    conn.close()
    young = dicomdata.study("PYOUNG", "YOUNG^SERIES", ("CT",), 3)
    server = _start(plain, port, tmp_path / "serve2.log")
    try:
        assert store(port, young) == [0, 0, 0]
    finally:
        _stop(server)

    deleting = write_toml(
        tmp_path / "del.toml",
        data_dir,
        port,
        deletion={"store_days": 30},
        maintenance={"deletion": ALWAYS, "archiving": NEVER_SOON},
    )
    series_sql = "SELECT COUNT(*) FROM series"
    server = _start(deleting, port, tmp_path / "serve3.log")
    watch = _db(data_dir)  # one open connection: each look costs a query, not a connect
    try:
        wait_until(lambda: watch.execute(series_sql).fetchone()[0] <= len(old) - 5, timeout=120, interval=0.002)
        server.send_signal(signal.SIGSTOP)  # freeze it where it is, then kill it there
    finally:
        watch.close()
        _kill(server)
    left = _count(data_dir, series_sql)
    assert 1 < left < len(old) + 1, "the kill should land in the middle of the task"
    # No index row names a missing file; each deleted series has its one audit line, written with it.
    rows = _every_row_readable(data_dir, {})
    audit = "SELECT COUNT(*) FROM audit_log WHERE action = 'series.delete' AND actor = 'maintenance'"
    assert _count(data_dir, audit) == len(old) + 1 - left

    server = _start(deleting, port, tmp_path / "serve4.log")
    try:
        wait_until(lambda: _count(data_dir, series_sql) == 1, timeout=120, interval=0.1)
        rows = _every_row_readable(data_dir, {i.sop_uid: i.dataset().pixel_array for i in young})
        assert set(rows) == {i.sop_uid for i in young}, "an instance not due for deletion was lost"
        assert _files_on_disk(data_dir / "store") == {p for p, _s in rows.values()}
        assert _count(data_dir, "SELECT COUNT(*) FROM deletion_journal") == 0
        assert _count(data_dir, audit) == len(old)
    finally:
        _stop(server)
