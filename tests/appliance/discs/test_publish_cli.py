"""The disc commands and `appliance serve` as a process: burn, jobs, label, robots, a crash with a pending group."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from publishing_support import Serve, job_state, jobs_of, write_config

from appliance.cli import main
from appliance.discs.groups import GroupStore
from appliance.discs.jobs import JobState
from robots.simulator import send_control

import dicomdata
from conftest import wait_until

pytestmark = pytest.mark.dcmtk


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args, "--config", str(config)], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[Serve] = []

    def start(config: Path) -> Serve:
        s = Serve(config)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop(signal.SIGKILL)


def study_folder(folder: Path, patient: str = "PIDCLI") -> tuple[Path, list[dicomdata.Instance]]:
    folder.mkdir(parents=True, exist_ok=True)
    items = dicomdata.study(patient, "COMMAND^LINE", ("CT", "OT"), 2, study_description="CT THORAX")
    for inst in items:
        inst.write(folder)
    return folder, items


def test_burn_jobs_label_and_robots_commands(serve, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    server = serve(config)
    folder, items = study_folder(tmp_path / "in")
    server.send(folder)  # plain AE title: stored only
    study = items[0].study_uid
    jobs = jobs_of(config)
    assert jobs.recent() == []

    queued = cli(config, "burn", study, "--robot", "primera", "--copies", "2")
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.startswith(f"job 1 queued: study {study}, 4 instance(s), robot primera, 2 copies")
    wait_until(lambda: job_state(jobs, 1) is JobState.DONE, timeout=60)
    listing = cli(config, "jobs")
    assert listing.returncode == 0
    row = next(line for line in listing.stdout.splitlines() if line.strip().startswith("1 "))
    assert row.split()[:6] == ["1", "done", "primera", "2", "CD", "1"] and "COMMAND, LINE (PIDCLI)" in row
    shown = cli(config, "jobs", "show", "1")
    assert "queued -> authoring" in shown.stdout and "-> done" in shown.stdout
    assert "ticket J1D1A1" in shown.stdout
    assert "Copies = 2" in (tmp_path / "var" / "discs" / "1" / "disc1" / "J1D1A1.JRQ").read_text()

    again = cli(config, "jobs", "reburn", "1", "--copies", "1")
    assert again.stdout.strip() == "job 2 queued: reburn of job 1"
    wait_until(lambda: job_state(jobs, 2) is JobState.DONE, timeout=60)
    refused = cli(config, "jobs", "cancel", "2")
    assert refused.returncode == 7 and "job 2 is done" in refused.stderr
    not_failed = cli(config, "jobs", "retry", "2")
    assert not_failed.returncode == 7 and "is done; to burn its discs again use reburn" in not_failed.stderr

    label = cli(config, "label", "--study", study, "--out", str(tmp_path / "out" / "label.pdf"))
    assert label.returncode == 0, label.stderr
    assert (tmp_path / "out" / "label.pdf").read_bytes().startswith(b"%PDF")

    robots = cli(config, "robots")
    assert robots.returncode == 0
    assert "  epson: Epson (TD Bridge)" in robots.stdout and "  primera: Primera (PTBurn)" in robots.stdout
    assert robots.stdout.count("bridge: online") == 2 and "USB devices:" in robots.stdout

    unknown = cli(config, "burn", "1.2.3.4")
    assert unknown.returncode == 4 and "study 1.2.3.4 is not in the store" in unknown.stderr
    no_robot = cli(config, "burn", study, "--robot", "rimage")
    assert no_robot.returncode == 2 and "there is no robot 'rimage'" in no_robot.stderr
    assert server.stop() == 0
    assert "appliance stopped" in (tmp_path / "serve.log").read_text()


def test_cancel_and_retry_from_the_command_line(serve, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    server = serve(config)
    # send_control writes the file atomically: a simulator reading it half-written would drop the command.
    hotfolder = tmp_path / "var" / "robots" / "epson"
    assert send_control(hotfolder, "fault no_media", timeout=30)
    folder, _ = study_folder(tmp_path / "in")
    server.send(folder, "_E")
    jobs = jobs_of(config)
    wait_until(lambda: job_state(jobs, 1) is not None and jobs.get(1).needs_staff, timeout=60)
    assert "RTN000" in cli(config, "jobs").stdout
    cancelled = cli(config, "jobs", "cancel", "1")
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == "job 1 cancelled"
    assert jobs.get(1).state is JobState.CANCELLED
    assert send_control(hotfolder, "clear", timeout=30)
    retried = cli(config, "jobs", "retry", "1")
    assert retried.stdout.strip() == "job 1 queued again (attempt 2)"
    wait_until(lambda: job_state(jobs, 1) is JobState.DONE, timeout=60)


def test_a_crash_with_a_pending_group_still_burns_exactly_one_disc(serve, tmp_path: Path) -> None:
    config = write_config(tmp_path, delay=30.0)
    server = serve(config)
    folder, items = study_folder(tmp_path / "in", "PIDCRASH")
    server.send(folder, "_TP")
    jobs = jobs_of(config)
    groups = GroupStore(jobs.db, jobs)
    wait_until(lambda: groups.pending() and groups.pending()[0].instances == len(items))
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL  # a crash: no clean shutdown at all
    assert jobs.recent() == []
    # Down for 27 of the 30 seconds: the restarted appliance waits the 3 that remain.
    jobs.db.conn.execute("UPDATE burn_groups SET due = due - 27, last_at = last_at - 27")
    again = serve(config)
    wait_until(lambda: job_state(jobs, 1) is JobState.DONE, timeout=60)
    assert len(jobs.recent()) == 1 and groups.pending() == []
    assert sorted(jobs.instances(1)) == sorted(i.sop_uid for i in items)
    assert again.stop() == 0
    assert "did not stop cleanly" in (tmp_path / "serve.log").read_text()


def test_demo_robots_without_a_robots_table(serve, tmp_path: Path) -> None:
    config = write_config(tmp_path, robots=False)
    listing = cli(config, "robots")
    assert "No [robots] table" in listing.stdout and "Simulated by 'appliance serve': epson, primera" in listing.stdout
    assert listing.stdout.count("bridge: offline") == 2
    # The demo Epson robot has no .tdd template: said by `appliance robots` and at start, for Epson only.
    assert listing.stdout.count("warning: ") == 1
    assert "    warning: epson: no label template is configured" in listing.stdout
    server = serve(config)
    for status in ("robots/epson/TDBStatus.txt", "robots/primera/Status/SystemStatus.txt"):
        wait_until((tmp_path / "var" / status).is_file)
    log = (tmp_path / "serve.log").read_text()
    assert "robot epson: no label template is configured" in log and "robot primera: no label" not in log
    assert cli(config, "robots").stdout.count("bridge: online") == 2
    folder, _ = study_folder(tmp_path / "in")
    server.send(folder, "_P")
    jobs = jobs_of(config)
    wait_until(lambda: job_state(jobs, 1) is JobState.DONE, timeout=60)  # 2 s per disc in the demo simulator


def test_jobs_command_in_process(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path)
    assert main(["jobs", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "no disc jobs"
    assert main(["jobs", "show", "9", "--config", str(config)]) == 4
    assert "there is no disc job 9" in capsys.readouterr().err
