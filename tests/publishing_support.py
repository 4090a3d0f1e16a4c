"""Helpers for the disc-publishing tests: a node with its publishing wired, fast simulated robots, checks."""

from __future__ import annotations

import copy
import io
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pycdlib
import pytest

from appliance.config import Config, load_config, parse_config
from appliance.core import Appliance
from appliance.db import Database
from appliance.dicom.server import DicomNode
from appliance.discs.jobs import Job, JobState, JobStore
from appliance.discs.publishing import Publishing, build_publishing
from appliance.errors import NotFound

from conftest import HOST, dcmtk, free_port, wait_until

FAST_SIM = {"disc_seconds": 0.1, "step_seconds": 0.05, "status_interval": 0.05, "scan_interval": 0.02}


def robot_table(data_dir: Path, name: str, **extra: Any) -> dict[str, Any]:
    """A simulated robot with fast timings under ``data_dir``."""
    table: dict[str, Any] = {
        "hotfolder": str(data_dir / "robots" / name),
        "simulate": True,
        "simulator": dict(FAST_SIM),
        "offline_timeout": 10.0,
        "status_timeout": 10.0,
        "cancel_timeout": 5.0,
    }
    table.update(extra)
    return table


def publish_config(
    data_dir: Path,
    burn: dict[str, Any] | None = None,
    robots: dict[str, Any] | None = None,
    port: int | None = None,
    **top: Any,
) -> Config:
    """A loopback config with both robots simulated, a short delay and fast polling."""
    burn_table: dict[str, Any] = {"delay": 2.0, "poll_interval": 0.1, "staging_free_space_mb": 0}
    burn_table.update(burn or {})
    robot_tables = (
        robots
        if robots is not None
        else {"epson": robot_table(data_dir, "epson"), "primera": robot_table(data_dir, "primera")}
    )
    return parse_config(
        {
            "appliance": {"data_dir": str(data_dir), "institution": "St. Example Hospital", **top},
            "dicom": {"bind": HOST, "port": port or free_port(), "tls_port": 0, "free_space_limit_mb": 1},
            "burn": burn_table,
            "robots": copy.deepcopy(robot_tables),
        }
    )


class PublishNode:
    """An appliance with its DICOM node and disc publishing running, as ``appliance serve`` wires them."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.app = Appliance(cfg)
        self.app.start()
        self.publishing: Publishing = build_publishing(self.app, cfg, housekeeping_interval=0.2)
        self.dicom = DicomNode(self.app, None)
        self.dicom.start()
        self.publishing.start()
        self.port = cfg.dicom.port
        self.aet = cfg.dicom.ae_title
        self.stopped = False

    @property
    def jobs(self) -> Any:
        return self.publishing.jobs

    def sim(self, name: str) -> Any:
        return self.publishing.simulators[name]

    def send(self, folder: Path, suffix: str = "", *extra: str) -> None:
        """Send every file of ``folder`` on one association to our AE title + ``suffix`` (DCMTK storescu)."""
        dcmtk("storescu", "-aec", self.aet + suffix, *extra, "+sd", HOST, str(self.port), str(folder), check=True)

    def wait_state(self, job_id: int, *states: JobState, timeout: float = 60.0) -> Job:
        """Wait until a job is in one of ``states`` and return it."""
        return self.wait_job(job_id, lambda job: job.state in states, timeout)

    def wait_job(self, job_id: int, condition: Callable[[Job], Any], timeout: float = 60.0) -> Job:
        """Wait until a job exists and ``condition(job)`` holds; return the job."""

        def reached() -> Job | None:
            try:
                job = self.jobs.get(job_id)
            except NotFound:  # the association's release listener may run after storescu has exited
                return None
            return job if condition(job) else None

        return wait_until(reached, timeout=timeout)

    def job_dir(self, job_id: int) -> Path:
        return self.cfg.data_dir / "discs" / str(job_id)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.dicom.stop(grace=2.0)
        self.publishing.stop()
        self.app.stop()


@pytest.fixture
def publish_node(tmp_path: Path) -> Iterator[Callable[..., PublishNode]]:
    """Start publishing nodes (``start(cfg)`` or ``start(burn=..., robots=...)``); all are stopped at the end."""
    nodes: list[PublishNode] = []

    def start(cfg: Config | None = None, **kwargs: Any) -> PublishNode:
        node = PublishNode(cfg or publish_config(tmp_path / f"pub{len(nodes)}", **kwargs))
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


def iso_files(iso_path: Path, joliet: bool = False) -> dict[str, bytes]:
    """Every file of an ISO image (ISO 9660 names without ';1', or Joliet names) -> content."""
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    out: dict[str, bytes] = {}
    try:
        facade = iso.get_joliet_facade() if joliet else iso.get_iso9660_facade()
        for dirname, _, filenames in facade.walk("/"):
            for name in filenames:
                path = f"{dirname.rstrip('/')}/{name}"
                buf = io.BytesIO()
                facade.get_file_from_iso_fp(buf, path)
                out[path.split(";")[0].rstrip(".")] = buf.getvalue()
    finally:
        iso.close()
    return out


def volume_label(iso_path: Path) -> str:
    """The ISO 9660 volume identifier."""
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        return iso.pvd.volume_identifier.decode("ascii").strip()
    finally:
        iso.close()


def dcmdump_ok(path: Path) -> str:
    """Run DCMTK dcmdump on a file, fail on any error, return its output."""
    proc = dcmtk("dcmdump", str(path), check=True)
    assert "E:" not in proc.stderr, proc.stderr
    return proc.stdout


__all__ = [
    "FAST_SIM",
    "PublishNode",
    "dcmdump_ok",
    "free_port",
    "iso_files",
    "publish_config",
    "publish_node",
    "robot_table",
    "volume_label",
    "wait_until",
]


class Serve:
    """``appliance serve`` as a child process."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.cfg = load_config(config)
        self.log = open(config.parent / "serve.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--config", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._listening, timeout=60)

    def _listening(self) -> bool:
        assert self.proc.poll() is None, (self.config.parent / "serve.log").read_text()
        return dcmtk("echoscu", "-aec", self.cfg.dicom.ae_title, HOST, str(self.cfg.dicom.port)).returncode == 0

    def send(self, folder: Path, suffix: str = "") -> None:
        dcmtk(
            "storescu",
            "-aec",
            self.cfg.dicom.ae_title + suffix,
            "+sd",
            HOST,
            str(self.cfg.dicom.port),
            str(folder),
            check=True,
        )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
        self.log.close()
        return self.proc.returncode


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def write_config(folder: Path, robots: bool = True, **burn: Any) -> Path:
    """A config file for a serve process on loopback; ``robots=False`` leaves the demo defaults."""
    lines = [
        "[appliance]",
        f'data_dir = "{folder / "var"}"',
        'log_level = "INFO"',
        'institution = "CLI Clinic"',
        "[dicom]",
        f'bind = "{HOST}"',
        f"port = {free_port()}",
        "tls_port = 0",
        "free_space_limit_mb = 1",
        "[hl7]",
        "port = 0",
        "[web]",
        "port = 0",
        "[burn]",
        "poll_interval = 0.2",
        "staging_free_space_mb = 0",
    ]
    lines += [f"{key} = {toml_value(value)}" for key, value in burn.items()]
    if robots:
        for name in ("epson", "primera"):
            lines += [
                f"[robots.{name}]",
                f'hotfolder = "{folder / "var" / "robots" / name}"',
                "simulate = true",
                "status_timeout = 10.0",
                "offline_timeout = 10.0",
                f"simulator = {toml_value(FAST_SIM)}",
            ]
    path = folder / "appliance.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def jobs_of(config: Path) -> JobStore:
    return JobStore(Database(load_config(config).database))


def job_state(jobs: JobStore, job_id: int) -> JobState | None:
    try:
        return jobs.get(job_id).state
    except Exception:
        return None
