"""``appliance apikey ...`` and DICOMweb in ``appliance serve``: its own port, HTTPS with the [tls] certificate."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.config import load_config
from appliance.core import Appliance

import dicomdata
from conftest import HOST, free_port, wait_until


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(
        f'[appliance]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[dicom]\nbind = "{HOST}"\nport = 0\ntls_port = 0\nfree_space_limit_mb = 1\n'
        f'[hl7]\nport = 0\n[web]\nbind = "{HOST}"\nport = {free_port()}\n{extra}'
    )
    return path


def test_apikey_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path)
    assert main(["apikey", "add", "ris", "--role", "frontdesk", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("apk_") and len(key) > 40 and "shown only now" in err
    # only a hash is kept
    assert key.encode() not in (tmp_path / "data" / "appliance.db").read_bytes()
    assert main(["apikey", "add", "ris", "--role", "admin", "--config", str(path)]) == 1
    assert "exists: revoke it first" in capsys.readouterr().err
    assert main(["apikey", "add", "viewer", "--role", "admin", "--days", "30", "--config", str(path)]) == 0
    capsys.readouterr()
    assert main(["apikey", "list", "--config", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "ris" in listing and "frontdesk" in listing and "viewer" in listing and "expires" in listing
    assert key not in listing
    assert main(["apikey", "revoke", "ris", "--config", str(path)]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["apikey", "revoke", "ris", "--config", str(path)]) == 4
    assert "no active API key named 'ris'" in capsys.readouterr().err
    assert main(["apikey", "list", "--all", "--config", str(path)]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["apikey", "master", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip()) > 30 and "accepted from ANY host" in err
    listed = _config(tmp_path, '[api]\nmaster_cookie_hosts = ["10.0.0.5"]\n')
    assert main(["apikey", "master", "--config", str(listed)]) == 0
    assert "accepted only from: 10.0.0.5" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse refuses a role that does not exist
        main(["apikey", "add", "x", "--role", "superuser", "--config", str(path)])
    assert refused.value.code == 2


def test_serve_dicomweb_over_https_with_the_tls_certificate(tmp_path: Path, store: object) -> None:
    certs = tmp_path / "certs"
    assert main(["tls", "init", str(certs)]) == 0
    port = free_port()
    path = _config(
        tmp_path,
        f'[dicomweb]\nport = {port}\n[tls]\ncert = "{certs / "server.crt"}"\n'
        f'key = "{certs / "server.key"}"\nca = "{certs / "ca.crt"}"\n',
    )
    app = Appliance(load_config(path))
    from appliance.site.service import Site

    Site(app).attach()
    items = dicomdata.study("PID1", "SERVE^DW", ("CT",), 2)
    store(app, items)  # type: ignore[operator]
    app.stop()
    key = subprocess.run(
        [sys.executable, "-m", "appliance", "apikey", "add", "pacs", "--role", "frontdesk", "--config", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def query() -> subprocess.CompletedProcess[str] | None:
            done = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "--cacert",
                    str(certs / "ca.crt"),
                    "-H",
                    f"Authorization: Bearer {key}",
                    f"https://localhost:{port}/dicom-web/studies",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            return done if done.returncode == 0 else None

        done = wait_until(query, timeout=60)
        answers = json.loads(done.stdout)
        assert [a["0020000D"]["Value"][0] for a in answers] == [items[0].study_uid]
        assert answers[0]["00081190"]["Value"][0].startswith(f"https://localhost:{port}/dicom-web/studies/")
        # plain HTTP is not served on the HTTPS port
        plain = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://{HOST}:{port}/dicom-web/studies"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert plain.stdout != "200"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert f"DICOMweb on https://{HOST}:{port}" in out


def test_busy_dicomweb_port_stops_the_start_with_one_line_like_every_listener(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = _config(tmp_path, f"[dicomweb]\nport = {port}\n")
        proc = subprocess.run(
            [sys.executable, "-m", "appliance", "serve", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 9, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "cannot be opened" in line]
    assert len(lines) == 1 and f"DICOMweb port {port} on {HOST} cannot be opened" in lines[0]
    assert "[dicomweb] port" in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
