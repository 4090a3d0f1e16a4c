"""``appliance serve`` runs the HL7 listener with the DICOM node and stops both on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from hl7support import MLLPClient, orm, segments

from conftest import HOST, free_port, wait_until


def _serve(tmp_path: Path, hl7_port: int) -> subprocess.Popen[str]:
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(f"""[appliance]
data_dir = "{tmp_path / "data"}"
[dicom]
bind = "{HOST}"
port = {free_port()}
tls_port = 0
[hl7]
bind = "{HOST}"
port = {hl7_port}
station_aets = {{ MR = "MR1" }}
[web]
port = 0
""")
    return subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(cfg)],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _connects(port: int) -> bool:
    try:
        MLLPClient(port, timeout=2).close()
    except OSError:
        return False
    return True


def test_serve_takes_orders_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = _serve(tmp_path, port)
    try:
        wait_until(lambda: _connects(port), timeout=60)
        client = MLLPClient(port)
        assert segments(client.request(orm()))["MSA"] == "MSA|AA|MSG0001"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "HL7 listening" in output and "appliance stopped" in output
    client.close()
    from appliance.cli import main

    assert main(["worklist", "list", "--config", str(tmp_path / "appliance.toml")]) == 0


def test_port_zero_disables_the_listener(tmp_path: Path) -> None:
    proc = _serve(tmp_path, 0)
    try:
        wait_until(lambda: "running, data in" in (proc.stdout.readline() if proc.stdout else ""), timeout=60)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "HL7 listening" not in output
