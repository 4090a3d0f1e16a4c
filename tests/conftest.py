"""Shared fixtures: free ports, a running DICOM node on loopback, DCMTK helpers, sample data."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from appliance import conversion
from appliance.config import Config, NodeConfig, parse_config
from appliance.core import Appliance
from appliance.dicom.server import DicomNode
from appliance.index import StoredInstance

import dicomdata
from orthanc_support import orthanc, orthanc_factory  # noqa: F401 - fixtures for every test file

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def listening(port: int) -> bool:
    """Whether something accepts connections on ``port`` of :data:`HOST`."""
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., tuple[int, Path]]]:
    """Start DCMTK storescp (AE as given, options such as ``+xa``) writing into a fresh folder; (port, folder)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(aet: str = "DEST", *options: str) -> tuple[int, Path]:
        port = free_port()
        out = tmp_path / f"{aet.lower()}-{len(procs)}"
        out.mkdir()
        log = open(tmp_path / f"{out.name}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                ["/usr/bin/storescp", "-aet", aet, "-od", str(out), "-v", *options, str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, TCP_NODELAY="1"),
            )
        )
        log.close()
        wait_until(lambda: listening(port))
        return port, out

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def dcmtk(
    tool: str, *args: str, timeout: float = 120, check: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK command-line tool and return its completed process (output as text)."""
    # pynetdicom installs console scripts with the same names (storescu, findscu...): use DCMTK's.
    exe = shutil.which(tool, path="/usr/bin:/bin")
    assert exe, f"DCMTK tool {tool} is not installed (scripts/test.sh installs dcmtk)"
    full_env = dict(os.environ, TCP_NODELAY="1", **(env or {}))
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, env=full_env, errors="replace")
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


class Node:
    """A running appliance node for a test."""

    def __init__(self, cfg: Config, server_tls: Any = None) -> None:
        self.cfg = cfg
        self.app = Appliance(cfg)
        self.app.start()
        self.app.conversions = conversion.from_config(cfg.limits)  # as serve wires it
        self.dicom = DicomNode(self.app, server_tls)
        self.dicom.start()
        self.port = cfg.dicom.port
        self.tls_port = cfg.dicom.tls_port
        self.aet = cfg.dicom.ae_title

    def stop(self) -> None:
        self.dicom.stop(grace=2.0)
        if self.app.conversions is not None:
            self.app.conversions.close()
        self.app.stop()


def indexed(app: Appliance, sop_uid: str) -> StoredInstance:
    """The index entry of an instance the test has stored; fails the test when there is none."""
    found = app.index.lookup(sop_uid)
    assert found is not None, f"{sop_uid} is not in the index"
    return found


def make_config(data_dir: Path, **dicom: Any) -> Config:
    """A test configuration on loopback with a free port; ``dicom`` overrides [dicom] keys."""
    table: dict[str, Any] = {"bind": HOST, "port": free_port(), "tls_port": 0, "free_space_limit_mb": 1}
    table.update(dicom)
    return parse_config({"appliance": {"data_dir": str(data_dir)}, "dicom": table})


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Start nodes with [dicom] overrides; all are stopped at the end of the test."""
    nodes: list[Node] = []

    def start(data_dir: Path | None = None, server_tls: Any = None, **dicom: Any) -> Node:
        node = Node(make_config(data_dir or tmp_path / f"node{len(nodes)}", **dicom), server_tls)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def node(node_factory: Callable[..., Node]) -> Node:
    """A node with the default policy (accept any AE)."""
    return node_factory()


@pytest.fixture(scope="session")
def archive_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Part 10 files of :func:`dicomdata.sample_archive`, one file per instance."""
    folder = tmp_path_factory.mktemp("archive")
    for inst in dicomdata.sample_archive():
        inst.write(folder)
    return folder


@pytest.fixture
def loaded_node(node: Node, archive_dir: Path) -> Node:
    """A node holding the sample archive, sent with DCMTK storescu."""
    dcmtk("storescu", "-aec", node.aet, "+sd", HOST, str(node.port), str(archive_dir), check=True)
    return node


def known(*nodes: NodeConfig) -> tuple[NodeConfig, ...]:
    """Helper for readability in tests that set [[dicom.nodes]]."""
    return nodes


__all__ = ["HOST", "Node", "dcmtk", "free_port", "known", "make_config", "replace", "wait_until"]
