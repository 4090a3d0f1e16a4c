"""``appliance serve`` starting beside another one, or on a busy port: one line, a documented exit code, nothing
touched (issue 20, items 3 and 4). Real processes."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from publishing_support import Serve, write_config

from appliance.config import load_config

from conftest import HOST, dcmtk, free_port


def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_second_instance_on_the_same_data_folder_exits_at_once_and_touches_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path, robots=False)
    first = Serve(config)
    try:
        cfg = load_config(config)
        in_flight = cfg.store_dir / "tmp" / "being-written.part"
        in_flight.parent.mkdir(parents=True, exist_ok=True)
        in_flight.write_bytes(b"a file the running instance is writing")
        log_before = (cfg.log_dir / "appliance.log").read_text()
        # The same data folder, other ports: only the lock can stop it.
        other = tmp_path / "second.toml"
        other.write_text(config.read_text().replace(f"port = {cfg.dicom.port}", f"port = {free_port()}"))
        proc = _serve(other)
        assert proc.returncode == 10, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"PID {first.proc.pid}" in lines[0] and "in use" in lines[0], proc.stderr
        assert in_flight.exists()
        assert (cfg.log_dir / "appliance.log").read_text() == log_before
        assert dcmtk("echoscu", "-aec", cfg.dicom.ae_title, HOST, str(cfg.dicom.port)).returncode == 0
    finally:
        assert first.stop() == 0


def test_the_lock_goes_with_a_killed_instance(tmp_path: Path) -> None:
    config = write_config(tmp_path, robots=False)
    Serve(config).stop(sig=9)
    again = Serve(config)  # no stale lock after SIGKILL
    assert again.stop() == 0


def test_a_busy_dicom_port_is_one_line_naming_port_and_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, robots=False)
    port = load_config(config).dicom.port
    with socket.socket() as busy:
        busy.bind((HOST, port))
        busy.listen()
        proc = _serve(config)
    assert proc.returncode == 9, proc.stderr
    # The start-up log goes to the console too; the failure is one line of its own.
    errors = [line for line in proc.stderr.splitlines() if line.startswith("appliance: ")]
    assert len(errors) == 1, proc.stderr
    assert f"DICOM port {port}" in errors[0] and "[dicom] port" in errors[0] and "already in use" in errors[0]
    assert "Traceback" not in proc.stderr + proc.stdout
