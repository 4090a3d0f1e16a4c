"""The Primera driver against the PTBurn simulator: lifecycle, faults, abort, strictness, bridge offline."""

from __future__ import annotations

import pytest

from robots.base import CancelError, JobState, LabelFiles, RobotState
from robots.hotfolder import atomic_write
from robots.simulator import send_control


@pytest.fixture
def primera(rig, disc):
    return rig("primera", label_template=str(disc["std"]))


def test_a_data_job_goes_through_every_state(primera, make_request, wait) -> None:
    robot, sim = primera
    before = wait(lambda: (s := robot.status()).online and s)
    ticket = robot.submit(make_request(image=False, copies=2))
    seen: list[JobState] = []

    def record():
        progress = robot.poll(ticket)
        if not seen or seen[-1] != progress.state:
            seen.append(progress.state)
        return progress.state.final and progress

    done = wait(record)
    assert sim.renames(ticket) == ["QRJ", "INP", "DON"]
    assert (done.state, done.copies_done, done.reason) == (JobState.DONE, 2, "2 disc(s) published")
    assert seen == sorted(seen, key=[JobState.PENDING, JobState.ACCEPTED, JobState.BURNING, JobState.DONE].index)
    after = wait(lambda: (s := robot.status()).media["left bin"] < before.media["left bin"] and s)
    assert after.media == {"left bin": before.media["left bin"] - 2} and after.media_unit == "discs"
    assert after.ink["colour"] == before.ink["colour"] - 2
    assert after.state == RobotState.IDLE and after.bridge.startswith("PTBurn")


def test_an_image_job_with_our_jpg_label_is_done(rig, disc, make_request, run_to_end) -> None:
    robot, sim = rig("primera")
    ticket = robot.submit(make_request(label=LabelFiles(jpg=disc["jpg"])))
    assert run_to_end(robot, ticket).state == JobState.DONE
    assert sim.jobs[ticket].keys["PrintLabel"] == str(disc["jpg"])


@pytest.mark.parametrize(
    ("fault", "code"), [("no_media", "system-3"), ("ink_out", "system-35"), ("cover_open", "system-15")]
)
def test_a_system_error_holds_the_job_until_staff_fixes_it(
    primera, make_request, run_to_end, wait, fault, code
) -> None:
    robot, sim = primera
    sim.inject(fault)
    ticket = robot.submit(make_request())
    held = wait(lambda: (p := robot.poll(ticket)).error_code == code and p)
    assert held.state == JobState.BURNING and held.needs_staff and held.retry_possible
    assert wait(lambda: robot.status().state == RobotState.ERROR)
    sim.clear_faults()
    assert run_to_end(robot, ticket).state == JobState.DONE


@pytest.mark.parametrize(
    ("fault", "code", "retry", "staff"),
    [
        ("drive_error", "job-18", True, False),
        ("bad_media", "job-20", True, True),
        ("bad_job_key", "job-25", False, False),
    ],
)
def test_a_job_error_fails_the_job(primera, make_request, run_to_end, fault, code, retry, staff) -> None:
    robot, sim = primera
    sim.inject(fault)
    done = run_to_end(robot, robot.submit(make_request()))
    assert (done.state, done.error_code, done.retry_possible, done.needs_staff) == (
        JobState.FAILED,
        code,
        retry,
        staff,
    )
    assert done.reason.endswith(f"({code})")


@pytest.mark.parametrize(
    ("body", "number"),
    [
        ("JobID = BAD1\r\nCopies = 0\r\nImageFile = {iso}\r\n", 25),
        ("JobID = BAD1\r\nCopies = 1\r\nVerifyDisc = maybe\r\nImageFile = {iso}\r\n", 25),
        ("JobID = BAD1\r\nImageFile = {missing}\r\n", 4),
        ("JobID = BAD1\r\nCopies = 1\r\n", 6),
        ("JobID = BAD1\r\nImageFile = {iso}\r\nPrintLabel = {tdd}\r\n", 7),
        ("JobID = BAD1\r\nImageFile = {iso}\r\nPrintLabel = {std}\r\nMergeField = {long}\r\n", 39),
        ("JobID = BAD1\r\nImageFile = {iso}\r\nData = {dicomdir}\r\n", 8),
        ("JobID = BAD1\r\nImageFile = {iso}, Session2\r\nData = {dicomdir}, Session2\r\n", 8),
    ],
)
def test_the_simulator_rejects_a_malformed_job_file_like_ptburn(primera, disc, run_to_end, body, number) -> None:
    robot, sim = primera
    text = body.format(
        iso=disc["iso"],
        missing=disc["root"] / "gone.iso",
        tdd=disc["tdd"],
        std=disc["std"],
        long="V" * 261,
        dicomdir=disc["fileset"] / "DICOMDIR",
    )
    atomic_write(disc["hot"], "BAD1.JRQ", text.encode())
    done = run_to_end(robot, "BAD1")
    assert (done.state, done.error_code) == (JobState.FAILED, f"job-{number}")
    assert sim.renames("BAD1") == ["QRJ", "ERR"]


def test_abort_of_a_queued_job_through_ptm(rig, make_request, run_to_end, wait) -> None:
    robot, sim = rig("primera", sim={"disc_seconds": 0.5})
    first = robot.submit(make_request("J1", copies=3))
    second = robot.submit(make_request("J2"))
    wait(lambda: robot.poll(second).state == JobState.ACCEPTED and sim.renames(second) == ["QRJ"])
    robot.cancel(second)
    aborted = robot.poll(second)
    assert (aborted.state, aborted.reason) == (JobState.CANCELLED, "aborted")
    assert run_to_end(robot, first).state == JobState.DONE


def test_abort_of_a_finished_job_is_refused(primera, make_request, run_to_end) -> None:
    robot, _ = primera
    ticket = robot.submit(make_request())
    run_to_end(robot, ticket)
    with pytest.raises(CancelError):
        robot.cancel(ticket)


def test_ptburn_not_running_reports_offline_and_the_job_resumes(rig, make_request, run_to_end, wait) -> None:
    robot, sim = rig("primera", start=False, offline_timeout=0.3)
    ticket = robot.submit(make_request())
    offline = wait(lambda: (p := robot.poll(ticket)).state == JobState.BRIDGE_OFFLINE and p)
    assert offline.reason.startswith("bridge offline: no answer from PTBurn for ")
    sim.start()
    assert run_to_end(robot, ticket).state == JobState.DONE


def test_a_frozen_server_tick_count_means_offline(rig, make_request, wait) -> None:
    robot, sim = rig("primera", status_timeout=0.3, sim={"disc_seconds": 1.0})
    ticket = robot.submit(make_request(copies=3))
    wait(lambda: robot.poll(ticket).state == JobState.BURNING)
    assert send_control(sim.hotfolder, "offline", timeout=10)
    assert wait(lambda: robot.poll(ticket).state == JobState.BRIDGE_OFFLINE)
    assert not robot.status().online
    assert send_control(sim.hotfolder, "online", timeout=10)
    assert wait(lambda: robot.poll(ticket).state == JobState.BURNING)
