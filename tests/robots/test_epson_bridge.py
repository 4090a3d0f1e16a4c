"""The Epson driver against the TD Bridge simulator: lifecycle, faults, cancel, strictness, bridge offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from robots.base import CancelError, JobState, RobotState
from robots.hotfolder import atomic_write
from robots.simulator import send_control


@pytest.fixture
def epson(rig, disc):
    return rig("epson", label_template=str(disc["tdd"]))


def test_a_data_job_goes_through_every_state_and_uses_discs_and_ink(epson, make_request, wait) -> None:
    robot, sim = epson
    before = wait(lambda: (s := robot.status()).online and s)
    ticket = robot.submit(make_request(image=False, copies=2))
    seen: list[JobState] = []

    def record():
        progress = robot.poll(ticket)
        if not seen or seen[-1] != progress.state:
            seen.append(progress.state)
        return progress.state.final and progress

    progress = wait(record)
    assert sim.renames(ticket) == ["RJD", "INP", "DON"]
    assert seen[-1] == JobState.DONE and progress.copies_done == 2
    assert seen == sorted(seen, key=[JobState.PENDING, JobState.ACCEPTED, JobState.BURNING, JobState.DONE].index)
    after = robot.status()
    assert after.online and after.state == RobotState.IDLE
    assert after.media["stacker 1 (CD)"] == before.media["stacker 1 (CD)"] - 4  # 2 of 50 discs = 4 %
    assert after.ink["cyan"] == before.ink["cyan"] - 2


def test_an_image_job_is_done(epson, make_request, run_to_end) -> None:
    robot, _ = epson
    assert run_to_end(robot, robot.submit(make_request(media="DVD"))).reason == "1 disc(s) published"


@pytest.mark.parametrize(
    ("fault", "code", "state"),
    [
        ("no_media", "RTN000", JobState.BURNING),
        ("ink_out", "RTN004", JobState.BURNING),
        ("cover_open", "RTN002", JobState.BURNING),
        ("bad_media", "STP002", JobState.PAUSED),
    ],
)
def test_a_recoverable_fault_holds_the_job_until_staff_fixes_it(
    epson, make_request, run_to_end, wait, fault, code, state
) -> None:
    robot, sim = epson
    sim.inject(fault)
    ticket = robot.submit(make_request())
    held = wait(lambda: (p := robot.poll(ticket)).error_code == code and p)
    assert held.state == state and held.needs_staff and held.retry_possible
    assert robot.status().state == RobotState.ERROR
    sim.clear_faults()
    assert run_to_end(robot, ticket).state == JobState.DONE


def test_running_out_of_blank_discs_waits_for_a_refill(rig, disc, make_request, run_to_end, wait) -> None:
    robot, sim = rig("epson", sim={"discs": 1})
    ticket = robot.submit(make_request(copies=2))
    held = wait(lambda: (p := robot.poll(ticket)).error_code == "RTN000" and p)
    assert held.reason == "input stacker empty: load blank discs (RTN000)" and held.copies_done == 1
    sim.reset_supplies()
    assert run_to_end(robot, ticket).copies_done == 2


@pytest.mark.parametrize(
    ("fault", "code", "retry", "staff"),
    [
        ("drive_error", "CAN008", True, True),  # the robot must be power-cycled
        ("bad_job_key", "JDF0502", False, False),
    ],
)
def test_a_failing_fault_fails_the_job_with_a_readable_reason(
    epson, make_request, run_to_end, fault, code, retry, staff
) -> None:
    robot, sim = epson
    sim.inject(fault)
    done = run_to_end(robot, robot.submit(make_request()))
    assert (done.state, done.error_code, done.retry_possible, done.needs_staff) == (
        JobState.FAILED,
        code,
        retry,
        staff,
    )
    assert code in done.reason and len(done.reason) > 15


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            "JOB_ID=BAD1\r\nCOPIES=1\r\ndisc_type=CD\r\nIMAGE={iso}\r\n",
            "JDF0501",
        ),  # lower-case key is ignored
        ("JOB_ID=BAD1\r\nCOPIES=one\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\n", "JDF0300"),
        ("JOB_ID=BAD1\r\nCOPIES=1\r\nDISC_TYPE=CD-ROM\r\nIMAGE={iso}\r\n", "JDF0502"),
        ("JOB_ID=BAD1\r\nCOPIES=1\r\nDISC_TYPE=CD\r\nCOMPARE=TRUE\r\nIMAGE={iso}\r\n", "JDF0700"),
        ("JOB_ID=BAD1\r\nCOPIES=1\r\nDISC_TYPE=CD\r\nIMAGE={missing}\r\n", "JDF1302"),
        ("JOB_ID=BAD1\r\nCOPIES=1\r\nDISC_TYPE=CD\r\n", "JDF0000"),
        ("JOB_ID=BAD1\r\nCOPIES=1\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nPRIORITY=LOW\r\n", "JDF2300"),
        ("JOB_ID=BAD1\r\nCOPIES=1\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nLABEL={jpg}\r\n", "JDF1500"),
    ],
)
def test_the_simulator_rejects_a_malformed_job_file_like_td_bridge(epson, disc, run_to_end, body, code) -> None:
    robot, sim = epson
    text = body.format(iso=disc["iso"], jpg=disc["jpg"], missing=disc["root"] / "gone.iso")
    atomic_write(disc["hot"], "BAD1.JDF", text.encode())
    done = run_to_end(robot, "BAD1")
    assert (done.state, done.error_code) == (JobState.FAILED, code)
    assert done.raw["STATUS"] == "6" and done.raw["DETAIL_STATUS"] == "14"
    assert sim.renames("BAD1") == ["RJD", "ERR"]


def test_cancel_of_a_queued_job_is_answered_with_cdn(rig, make_request, run_to_end, wait) -> None:
    robot, sim = rig("epson", sim={"disc_seconds": 0.5})
    first = robot.submit(make_request("J1", copies=3))
    second = robot.submit(make_request("J2"))
    wait(lambda: robot.poll(second).state == JobState.ACCEPTED and "INP" in sim.renames(second))
    robot.cancel(second)
    assert robot.poll(second).state == JobState.CANCELLED
    assert Path(sim.hotfolder, f"{second}.CDN").exists()
    assert run_to_end(robot, first).state == JobState.DONE


def test_cancel_of_a_finished_job_is_refused(epson, make_request, run_to_end) -> None:
    robot, _ = epson
    ticket = robot.submit(make_request())
    run_to_end(robot, ticket)
    with pytest.raises(CancelError, match="already finished"):
        robot.cancel(ticket)


def test_bridge_not_running_reports_offline_and_the_job_resumes_when_it_starts(
    rig, make_request, run_to_end, wait
) -> None:
    robot, sim = rig("epson", start=False, offline_timeout=0.3)
    ticket = robot.submit(make_request())
    offline = wait(lambda: (p := robot.poll(ticket)).state == JobState.BRIDGE_OFFLINE and p)
    assert offline.reason.startswith("bridge offline: no answer from TD Bridge for ")
    assert offline.reason.endswith(" s") and offline.needs_staff
    assert not robot.status().online
    sim.start()
    assert run_to_end(robot, ticket).state == JobState.DONE


def test_a_bridge_stopping_mid_job_is_offline_and_the_job_finishes_after_restart(
    rig, make_request, run_to_end, wait
) -> None:
    robot, sim = rig("epson", status_timeout=0.3, sim={"disc_seconds": 0.4})
    ticket = robot.submit(make_request(copies=2))
    wait(lambda: robot.poll(ticket).state == JobState.BURNING)
    sim.stop()
    wait(lambda: robot.poll(ticket).state == JobState.BRIDGE_OFFLINE)
    sim.start()
    assert run_to_end(robot, ticket).state == JobState.DONE


def test_a_job_withdrawn_while_the_bridge_is_down_never_runs(rig, make_request, run_to_end) -> None:
    robot, sim = rig("epson", start=False)
    ticket = robot.submit(make_request())
    robot.cancel(ticket)
    sim.start()
    assert run_to_end(robot, ticket).state == JobState.CANCELLED
    assert sim.renames(ticket) == []


def test_faults_through_the_control_file_from_another_process(epson, disc, make_request, wait, run_to_end) -> None:
    robot, _ = epson
    code = (
        "import sys; from pathlib import Path; from robots.simulator import send_control; "
        "sys.exit(0 if send_control(Path(sys.argv[1]), *sys.argv[2:], timeout=10) else 1)"
    )
    subprocess.run([sys.executable, "-c", code, str(disc["hot"]), "fault ink_out"], check=True, timeout=60)
    ticket = robot.submit(make_request())
    assert wait(lambda: robot.poll(ticket).error_code == "RTN004")
    assert send_control(disc["hot"], "clear", timeout=10)
    assert run_to_end(robot, ticket).state == JobState.DONE
    assert send_control(disc["hot"], "offline", timeout=10)
    assert wait(lambda: not robot.status().online, timeout=10)
    assert send_control(disc["hot"], "online", timeout=10)
    assert wait(lambda: robot.status().online)


def test_status_reports_ink_media_drives_and_bridge_version(epson, wait) -> None:
    robot, sim = epson
    sim.reset_supplies(discs=25, ink=40)
    status = wait(lambda: (s := robot.status()).ink.get("black") == 40 and s)
    assert status.bridge == "TD Bridge 9.9.0.0 (simulator)"
    assert status.media == {"stacker 1 (CD)": 50, "stacker 2 (DVD)": 50}
    assert set(status.ink) == {"cyan", "magenta", "yellow", "light cyan", "light magenta", "black"}
    assert [d.name for d in status.drives] == ["drive 1", "drive 2"]
