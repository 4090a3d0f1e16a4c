"""Patient data is private to the service user (issue 15, finding 9): umask, data folder mode, modes fixed at start.

"Another local user" is played by ``nobody`` reading files with ``head``; the data folder lives under a fresh
world-traversable folder in /tmp (pytest's own temporary folders are closed to others, which would hide the
problem).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hl7support import MLLPClient, orm, segments

from appliance.cli import main
from appliance.db import Database

from conftest import HOST, free_port, wait_until


def _readable_by_others(path: Path) -> bool:
    return (
        subprocess.run(
            ["/usr/bin/head", "-c1", str(path)],
            user="nobody",
            group="nogroup",
            extra_groups=[],
            capture_output=True,
            timeout=30,
        ).returncode
        == 0
    )


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder every local user may traverse, as /var/lib or /opt are."""
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="appliance-private-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _loose(data: Path, skip: Path) -> list[str]:
    """Files and folders under ``data`` (the store's content aside) with group-write or other permissions."""
    out = []
    for root, dirs, files in os.walk(data):
        if Path(root) == skip:
            dirs.clear()
        for name in dirs + files:
            path = Path(root) / name
            if stat.S_IMODE(path.lstat().st_mode) & 0o027:
                out.append(f"{path.relative_to(data)} {stat.S_IMODE(path.lstat().st_mode):o}")
    return out


def test_serve_makes_an_earlier_runs_files_private(shared_tmp: Path) -> None:
    data = shared_tmp / "data"
    # What an earlier version left, under the usual umask 022: everything readable by every local user.
    previous = os.umask(0o022)
    try:
        Database(data / "appliance.db").close()
        for name in (
            "logs/appliance.log",
            "logs/appliance.log.1",
            "cache/thumbs/ab/1.2.3.jpg",
            "discs/7/disc.iso",
            "discs/7/label.pdf",
            "store/20260101/x.dcm",
        ):
            (data / name).parent.mkdir(parents=True, exist_ok=True)
            (data / name).write_bytes(b"patient data")
    finally:
        os.umask(previous)
    assert _readable_by_others(data / "appliance.db") and _readable_by_others(data / "discs/7/disc.iso")

    port = free_port()
    cfg = shared_tmp / "appliance.toml"
    cfg.write_text(
        f'[appliance]\ndata_dir = "{data}"\n[dicom]\nbind = "{HOST}"\nport = 0\ntls_port = 0\n'
        f'[hl7]\nbind = "{HOST}"\nport = {port}\nstation_aets = {{ MR = "MR1" }}\n[web]\nport = 0\n'
    )
    out = (shared_tmp / "serve.out").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(cfg)],
        stdout=out,
        stderr=subprocess.STDOUT,
        umask=0o022,
    )
    try:
        log = data / "logs" / "appliance.log"
        wait_until(lambda: b"running, data in" in log.read_bytes(), timeout=60)
        client = MLLPClient(port)
        assert segments(client.request(orm()))["MSA"] == "MSA|AA|MSG0001"  # the database and its WAL are written
        client.close()
        assert (data / "appliance.db-wal").exists()
        assert _loose(data, data / "store") == []
        assert stat.S_IMODE(data.stat().st_mode) == 0o750
        for name in (
            "appliance.db",
            "appliance.db-wal",
            "logs/appliance.log",
            "logs/appliance.log.1",
            "cache/thumbs/ab/1.2.3.jpg",
            "discs/7/disc.iso",
            "discs/7/label.pdf",
            "store/20260101/x.dcm",
        ):
            assert not _readable_by_others(data / name), name
        assert "made private" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        out.close()


def test_commands_create_private_files(shared_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = shared_tmp / "fresh"
    cfg = shared_tmp / "appliance.toml"
    cfg.write_text(f'[appliance]\ndata_dir = "{data}"\n')
    previous = os.umask(0o022)
    try:
        assert main(["worklist", "list", "--config", str(cfg)]) == 0
        assert os.umask(0o022) == 0o022  # the caller's umask is given back
    finally:
        os.umask(previous)
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    assert stat.S_IMODE((data / "appliance.db").stat().st_mode) == 0o640
    assert not _readable_by_others(data / "appliance.db")
