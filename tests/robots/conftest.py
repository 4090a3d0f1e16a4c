"""Robot test fixtures: a disc's worth of files, drivers bound to running simulators, a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from robots.base import BurnRequest, DiscRobot, JobProgress, LabelFiles
from robots.registry import create_robot, create_simulator
from robots.simulator import BridgeSimulator

FAST_SIM = {"disc_seconds": 0.1, "step_seconds": 0.05, "status_interval": 0.05, "scan_interval": 0.02}


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Return the first truthy value of ``condition()``; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s (last value {value!r})")
        time.sleep(interval)


@pytest.fixture
def wait() -> Callable[..., Any]:
    return wait_until


@pytest.fixture
def disc(tmp_path: Path) -> dict[str, Path]:
    """Files a disc job refers to, under one local root."""
    root = tmp_path / "discs"
    study = root / "J1" / "fileset"
    (study / "PT000000").mkdir(parents=True)
    (study / "DICOMDIR").write_bytes(b"DICM")
    (study / "PT000000" / "IM000001").write_bytes(b"\0" * 128)
    viewer = root / "viewer"
    viewer.mkdir()
    (viewer / "viewer.exe").write_bytes(b"MZ")
    iso = root / "J1" / "disc.iso"
    iso.write_bytes(b"\0" * 2048)
    templates = root / "templates"
    templates.mkdir()
    for name in ("label.tdd", "label.std"):
        (templates / name).write_bytes(b"template")
    jpg = root / "J1" / "label.jpg"
    jpg.write_bytes(b"\xff\xd8\xff")
    hot = tmp_path / "hot"
    hot.mkdir()
    return {
        "root": root,
        "fileset": study,
        "viewer": viewer,
        "iso": iso,
        "tdd": templates / "label.tdd",
        "std": templates / "label.std",
        "jpg": jpg,
        "hot": hot,
    }


@pytest.fixture
def rig(disc: dict[str, Path]) -> Iterator[Callable[..., tuple[DiscRobot, BridgeSimulator]]]:
    """Build (driver, simulator) pairs from one options table; every simulator is stopped afterwards."""
    sims: list[BridgeSimulator] = []

    def build(
        kind: str, start: bool = True, sim: dict[str, Any] | None = None, **options: Any
    ) -> tuple[DiscRobot, BridgeSimulator]:
        table: dict[str, Any] = {
            "hotfolder": str(disc["hot"]),
            "offline_timeout": 2.0,
            "status_timeout": 4.0,  # the simulator rewrites every 0.05 s; 4 s absorbs a loaded CI machine
            "cancel_timeout": 5.0,
            "simulator": {**FAST_SIM, **(sim or {})},
        }
        table.update(options)
        robot = create_robot(kind, table)
        simulator = create_simulator(kind, table)
        sims.append(simulator)
        if start:
            simulator.start()
        return robot, simulator

    yield build
    for simulator in sims:
        simulator.stop()


@pytest.fixture
def make_request(disc: dict[str, Path]) -> Callable[..., BurnRequest]:
    """A typical request: the ISO (or the file-set plus a viewer) and label data for the template."""

    def make(job_id: str = "J1", image: bool = True, **kw: Any) -> BurnRequest:
        fields = {"patientName": "DOE^JANE", "patientId": "P123", "studyDate": "20260101"}
        label = kw.pop("label", LabelFiles(jpg=disc["jpg"], fields=fields))
        copies, media = kw.pop("copies", 1), kw.pop("media", "CD")
        if image:
            return BurnRequest(job_id, copies, media, "DOE_JANE", image_path=disc["iso"], label=label, **kw)
        return BurnRequest(
            job_id, copies, media, "DOE JANE", data_paths=(disc["viewer"], disc["fileset"]), label=label, **kw
        )

    return make


@pytest.fixture
def run_to_end() -> Callable[..., JobProgress]:
    """Poll a ticket until its state is final and return that progress."""

    def run(robot: DiscRobot, ticket: str, timeout: float = 10.0) -> JobProgress:
        return wait_until(lambda: (p := robot.poll(ticket)).state.final and p, timeout)

    return run
