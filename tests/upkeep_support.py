"""Helpers of the upkeep tests: small file systems, nodes with [[storage]] tables, storing and fetching."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, MRImageStorage
from pynetdicom import AE

from appliance.config import Config, parse_config

import dicomdata
from conftest import HOST, Node, dcmtk, free_port


def mount_tmpfs(folder: Path, size: str) -> None:
    """Mount a tmpfs of ``size`` (e.g. "8m") on ``folder``; skip the test where that is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"this container does not allow mounting a tmpfs: {done.stderr.strip()}")


def umount(folder: Path) -> None:
    """Unmount (lazily, so an open file does not keep the test from ending)."""
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def config(data_dir: Path, port: int | None = None, **tables: Any) -> Config:
    """A loopback test config with extra tables (``storage=[...]``, ``archiving={...}``...)."""
    doc: dict[str, Any] = {
        "appliance": {"data_dir": str(data_dir)},
        "dicom": {"bind": HOST, "port": port or free_port(), "tls_port": 0, "free_space_limit_mb": 1},
        "hl7": {"port": 0},
        "web": {"port": 0},
    }
    for key, value in tables.items():
        if key == "appliance":
            doc["appliance"].update(value)
        else:
            doc[key] = value
    return parse_config(doc)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_toml(
    path: Path, data_dir: Path, port: int, storages: Iterable[dict[str, Any]] = (), **tables: dict[str, Any]
) -> Path:
    """A config file for ``appliance serve`` (web and HL7 off)."""
    lines = [f'[appliance]\ndata_dir = "{data_dir}"']
    for key, value in tables.pop("appliance", {}).items():
        lines.append(f"{key} = {toml_value(value)}")
    lines.append(
        f'[dicom]\nbind = "{HOST}"\nport = {port}\ntls_port = 0\nfree_space_limit_mb = 1\n'
        "[hl7]\nport = 0\n[web]\nport = 0"
    )
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
    for storage in storages:
        lines.append("[[storage]]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in storage.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def serve(cfg: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    """``appliance serve`` in a child process (stderr to ``log`` when given)."""
    err = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=err
    )


def cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run an ``appliance`` command in a child process (``env``: extra environment variables)."""
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def store(port: int, items: Iterable[dicomdata.Instance], calling: str = "UPKEEP") -> list[int]:
    """C-STORE each instance on one association (pynetdicom); the statuses."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate(HOST, port, ae_title="DISCPACS")
    assert assoc.is_established
    statuses = []
    try:
        for inst in items:
            rsp = assoc.send_c_store(inst.dataset())
            statuses.append(int(rsp.Status) if rsp is not None and "Status" in rsp else -1)
    finally:
        assoc.release()
    return statuses


def getscu_study(port: int, study_uid: str, out: Path) -> list[Path]:
    """C-GET a study with DCMTK's getscu into ``out``; the received files."""
    out.mkdir(parents=True, exist_ok=True)
    dcmtk(
        "getscu",
        "-S",
        "-aec",
        "DISCPACS",
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_uid}",
        HOST,
        str(port),
        check=True,
    )
    return sorted(out.iterdir())


def pixels_by_uid(files: Iterable[Path]) -> dict[str, bytes]:
    """SOP Instance UID -> decoded pixel bytes of some Part 10 files."""
    found = {}
    for path in files:
        ds = dcmread(path)
        found[str(ds.SOPInstanceUID)] = ds.pixel_array.tobytes()
    return found


def started(cfg: Config) -> Node:
    """An in-process node (DICOM only) for a config made by :func:`config`."""
    return Node(cfg)
