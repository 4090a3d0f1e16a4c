"""The ``appliance`` command line: echo, import, config errors, logging."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.config import ConfigError, load_config, parse_config
from appliance.log import TRACE, setup_logging

import dicomdata
from conftest import HOST, Node, free_port


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_echo_online(node: Node, capsys) -> None:
    assert main(["echo", HOST, str(node.port), node.aet]) == 0
    assert capsys.readouterr().out.strip() == f"{node.aet}@{HOST}:{node.port}: Online"


def test_echo_offline_reasons(node: Node, capsys) -> None:
    assert main(["echo", HOST, str(node.port), "NOTHERE"]) == 1
    assert "association rejected permanently: called AE title not recognised" in capsys.readouterr().out
    closed = free_port()
    assert main(["echo", HOST, str(closed), "ANY"]) == 1
    assert "connection refused" in capsys.readouterr().out


def test_echo_timeout_on_a_silent_peer(capsys) -> None:
    """A peer that accepts TCP but never answers: Offline, no association, within the timeout."""
    server = socket.socket()
    server.bind((HOST, 0))
    server.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    try:
        assert main(["echo", HOST, str(server.getsockname()[1]), "SILENT", "--timeout", "1"]) == 1
        out = capsys.readouterr().out
        assert "Offline" in out and "did not answer" in out
    finally:
        for s in accepted:
            s.close()
        server.close()


def test_import_reports_unreadable_and_failed_files(node: Node, tmp_path: Path) -> None:
    root = tmp_path / "cd"
    (root / "a" / "b").mkdir(parents=True)
    items = dicomdata.study("PIMP", "IMPORT^TEST", ("CT", "MR"), 2)
    for i, inst in enumerate(items):
        inst.write(root / ("a/b" if i % 2 else "a"))
    (root / "a" / "notes.txt").write_text("not dicom")
    (root / "DICOMDIR").write_bytes(b"ignored")
    broken = dicomdata.study("PIMP", "IMPORT^TEST", ("CT",), 1)[0].dataset()
    del broken.SeriesInstanceUID
    broken.save_as(root / "a" / "b" / "noseries.dcm", enforce_file_format=True)
    proc = run("import", str(root), "--host", HOST, "--port", str(node.port), "--aet", node.aet)
    assert proc.returncode == 1
    assert "4 instance(s) sent" in proc.stdout
    assert "1 file(s) could not be read" in proc.stdout and "notes.txt" in proc.stdout
    assert "1 file(s) could not be sent" in proc.stdout and "noseries.dcm" in proc.stdout
    assert "0xC000" in proc.stdout
    assert node.app.index.counts()["instances"] == 4


def test_import_to_nowhere_says_why(tmp_path: Path) -> None:
    dicomdata.study("PX", "X^Y", ("CT",), 1)[0].write(tmp_path)
    proc = run("import", str(tmp_path), "--port", str(free_port()))
    assert proc.returncode == 1
    assert "connection refused" in proc.stderr


def test_config_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[dicom]\nae_title = 'FAR_TOO_LONG_TITLE'\n")
    proc = run("echo", HOST, "1", "X", "--config", str(bad))
    assert proc.returncode == 2
    assert "ae_title" in proc.stderr
    bad.write_text("[dicom]\nport = 'eleven'\n")
    assert "must be a number" in run("echo", HOST, "1", "X", "--config", str(bad)).stderr
    bad.write_text("[dicom\n")
    assert "not valid TOML" in run("echo", HOST, "1", "X", "--config", str(bad)).stderr
    assert "does not exist" in run("echo", HOST, "1", "X", "--config", str(tmp_path / "none.toml")).stderr
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"dicom": {"aetitle": "X"}})
    with pytest.raises(ConfigError, match="unknown table"):
        parse_config({"dicomm": {}})


def test_config_defaults_and_lookup_order(tmp_path: Path, monkeypatch) -> None:
    cfg = parse_config({})
    assert (cfg.dicom.ae_title, cfg.dicom.port, cfg.dicom.accept_any_ae) == ("DISCPACS", 11112, True)
    assert cfg.data_dir == Path("var") and cfg.database == Path("var/appliance.db")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "appliance.toml").write_text("[dicom]\nae_title = 'LOCAL'\n")
    assert load_config(None).dicom.ae_title == "LOCAL"
    env = tmp_path / "env.toml"
    env.write_text("[appliance]\ndata_dir = 'data'\n[dicom]\nae_title = 'FROMENV'\n")
    monkeypatch.setenv("APPLIANCE_CONFIG", str(env))
    cfg = load_config(None)
    assert cfg.dicom.ae_title == "FROMENV"
    assert cfg.data_dir == tmp_path / "data"  # relative to the config file


def test_log_levels_and_rotation(tmp_path: Path) -> None:
    setup_logging("TRACE", tmp_path, max_mb=0.01, backups=3)
    log = logging.getLogger("appliance.test")
    try:
        log.log(TRACE, "trace line")
        for i in range(400):
            log.info("line %d %s", i, "x" * 80)
        log.critical("fatal line")
    finally:
        setup_logging("INFO", None)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["appliance.log", "appliance.log.1", "appliance.log.2", "appliance.log.3"]
    text = (tmp_path / "appliance.log").read_text()
    assert "FATAL" in text and "fatal line" in text
    setup_logging("WARNING", tmp_path / "w")
    try:
        logging.getLogger("appliance.test").info("hidden")
        logging.getLogger("appliance.test").error("shown")
    finally:
        setup_logging("INFO", None)
    text = (tmp_path / "w" / "appliance.log").read_text()
    assert "shown" in text and "hidden" not in text


def test_help_lists_every_command() -> None:
    proc = run("--help")
    for command in ("serve", "echo", "import", "tls"):
        assert command in proc.stdout
