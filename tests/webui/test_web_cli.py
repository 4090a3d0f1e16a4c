"""``appliance token``, ``appliance user ...`` and the web server of ``appliance serve`` (HTTP and HTTPS)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.config import load_config
from appliance.core import Appliance

import dicomdata
from conftest import HOST, free_port, wait_until


def write_config(tmp_path: Path, web: str = "") -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(
        f'[appliance]\ndata_dir = "{tmp_path / "data"}"\ninstitution = "St. Example"\n'
        f'[dicom]\nbind = "{HOST}"\nport = 0\ntls_port = 0\nfree_space_limit_mb = 1\n'
        f"[hl7]\nport = 0\n[dicomweb]\nport = 0\n"
        f'[web]\nbind = "{HOST}"\nserver_name = "pacs.example.org"\n{web}'
    )
    return path


@pytest.fixture
def configured(tmp_path: Path, store) -> tuple[Path, str]:
    """A config file and one stored study (stored with the token listener, as ``serve`` does)."""
    from appliance.site.service import Site

    path = write_config(tmp_path, "port = 3443\n")
    app = Appliance(load_config(path))
    Site(app).attach()
    items = dicomdata.study("PID1", "CLI^CARL", ("CT",), 1, study_date="20240105")
    store(app, items)
    app.stop()
    return path, items[0].study_uid


def test_token_prints_the_link(configured, capsys, tmp_path: Path) -> None:
    path, uid = configured
    assert main(["token", uid, "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    link = out.strip()
    assert link.startswith("http://pacs.example.org:3443/token?") and len(link.split("?", 1)[1]) == 64
    assert "valid until 2024-03-05 (expired)" in err
    assert main(["token", uid, "--config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == link  # the same link every time
    assert (
        main(
            [
                "token",
                uid,
                "--regenerate",
                "--slip",
                str(tmp_path / "slip.pdf"),
                "--paper",
                "receipt80",
                "--config",
                str(path),
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert out.strip() != link and "token slip written" in err
    assert (tmp_path / "slip.pdf").read_bytes().startswith(b"%PDF")


def test_token_of_unknown_study(configured, capsys) -> None:
    path, _ = configured
    assert main(["token", "1.2.3.4", "--config", str(path)]) == 4
    assert "study 1.2.3.4 is not stored" in capsys.readouterr().err


def test_user_commands(configured, capsys, monkeypatch) -> None:
    path, _ = configured
    monkeypatch.setattr(sys, "stdin", io.StringIO("first-admin-pw\n"))
    assert main(["user", "add", "boss", "--role", "admin", "--password-stdin", "--config", str(path)]) == 0
    assert "user boss (admin) created" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["user", "add", "desk", "--role", "frontdesk", "--password-stdin", "--config", str(path)]) == 1
    assert "at least 8 characters" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("another-pw\n"))
    assert main(["user", "add", "boss", "--role", "admin", "--password-stdin", "--config", str(path)]) == 1
    assert "already exists" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["user", "add", "desk", "--role", "frontdesk", "--config", str(path)]) == 1
    assert "--password-stdin" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("new-boss-pw\n"))
    assert main(["user", "password", "boss", "--password-stdin", "--config", str(path)]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("whatever-pw\n"))
    assert main(["user", "password", "ghost", "--password-stdin", "--config", str(path)]) == 4
    capsys.readouterr()
    assert main(["user", "list", "--config", str(path)]) == 0
    assert capsys.readouterr().out.startswith("boss")
    # Disable / enable (issue 15): the last admin stays enabled.
    assert main(["user", "disable", "boss", "--config", str(path)]) == 1
    assert "last admin" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("desk-password\n"))
    assert main(["user", "add", "desk", "--role", "frontdesk", "--password-stdin", "--config", str(path)]) == 0
    assert main(["user", "disable", "desk", "--config", str(path)]) == 0
    assert "user desk disabled" in capsys.readouterr().out
    assert main(["user", "list", "--config", str(path)]) == 0
    assert "desk" in (listed := capsys.readouterr().out) and "(disabled)" in listed
    assert main(["user", "enable", "desk", "--config", str(path)]) == 0
    assert main(["user", "disable", "ghost", "--config", str(path)]) == 4
    with pytest.raises(SystemExit):
        main(["user", "add", "x", "--role", "root", "--config", str(path)])


@pytest.fixture
def serve():
    """Start ``appliance serve`` processes; any still running at the end is killed."""
    procs: list[subprocess.Popen[str]] = []

    def start(path: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out


def _get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=20, context=context) as response:
        return response.status, response.read(), dict(response.headers)


def test_serve_starts_and_stops_the_web_site(tmp_path: Path, serve) -> None:
    port = free_port()
    path = write_config(tmp_path, f"port = {port}\n")
    proc = serve(path)
    try:
        status, body, headers = wait_until(lambda: _try(f"http://{HOST}:{port}/api/health"), timeout=60)
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert headers["Server"] == "appliance"
    finally:
        out = _stop(proc)
    assert "web site on http://127.0.0.1" in out and "web site stopped" in out and "Traceback" not in out


def _try(url: str, context: ssl.SSLContext | None = None):
    try:
        return _get(url, context)
    except OSError:
        return None


def test_serve_https_with_the_demo_certificate(tmp_path: Path, serve) -> None:
    port = free_port()
    path = write_config(tmp_path, f"port = {port}\nhttps = true\n")
    proc = serve(path)
    try:
        ca = tmp_path / "data" / "tls-demo" / "ca.crt"
        wait_until(ca.exists, timeout=60)
        context = ssl.create_default_context(cafile=str(ca))
        context.check_hostname = False
        status, _, headers = wait_until(lambda: _try(f"https://{HOST}:{port}/api/health", context), timeout=60)
        assert status == 200 and headers["Strict-Transport-Security"].startswith("max-age")
        # A real client with full verification, host name included: curl --cacert.
        curl = subprocess.run(
            ["curl", "-sS", "--fail", "--cacert", str(ca), f"https://localhost:{port}/api/health"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert curl.returncode == 0, curl.stderr
        assert "ok" in curl.stdout.lower()
        # A client that connects and says nothing does not hold up the others.
        with socket.create_connection((HOST, port)):
            start = time.monotonic()
            assert _get(f"https://{HOST}:{port}/robots.txt", context)[0] == 200
            assert time.monotonic() - start < 10
        # Plain HTTP on the HTTPS port gets nowhere, and the server carries on.
        with pytest.raises(OSError):
            _get(f"http://{HOST}:{port}/api/health")
        assert _get(f"https://{HOST}:{port}/api/health", context)[0] == 200
    finally:
        out = _stop(proc)
    assert f"web site on https://{HOST}:{port}" in out


def test_web_port_zero_disables_the_site_but_tokens_are_made(tmp_path: Path, store) -> None:
    from appliance.cli.web import build_web

    cfg = load_config(write_config(tmp_path, "port = 0\n"))
    app = Appliance(cfg)
    try:
        web = build_web(app, cfg)
        assert web.server is None
        web.start()
        items = dicomdata.study("PID1", "A^B", ("CT",), 1)
        store(app, items)
        assert web.site.tokens.get(items[0].study_uid) is not None
        web.stop()
    finally:
        app.stop()


def test_docs_list_web_commands_and_keys() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    web = (docs / "web.md").read_text()
    for word in ("token_days", "appliance user add", "SameSite", "rate_limit", "DICOMDIR", "waitress", "token.key"):
        assert word in web
    assert os.path.exists(docs / "configuration.md")


def test_busy_web_port_is_a_clear_error(tmp_path: Path, serve) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_config(tmp_path, f"port = {port}\n")
        proc = serve(path)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 9, out  # docs/troubleshooting.md: a port that cannot be opened
    assert f"web port {port} on {HOST} cannot be opened" in out and "[web] port" in out and "Traceback" not in out
