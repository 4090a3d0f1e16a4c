"""The Primera driver and simulator against facts from the PTBurn 3 SDK (rev 3.24) and PTBurn 3.3.0+."""

from __future__ import annotations

from pathlib import Path

import pytest

from robots.base import BurnRequest, JobState, LabelFiles, RobotConfigError, RobotState
from robots.hotfolder import atomic_write
from robots.registry import create_robot

# Non-Latin patient names (synthetic): Japanese, Russian, Greek, Arabic.
NAMES = {"name": "山田^太郎", "ru": "Иванов^Иван", "el": "Παπαδόπουλος^Νίκος", "ar": "محمد^علي"}


# ------------------------------------------------------------------------- 7. Unicode build: UTF-16LE + BOM


def test_the_unicode_build_gets_utf16le_with_a_bom_and_every_name_intact() -> None:
    robot = create_robot("primera", {"hotfolder": "/hot", "encoding": "utf-16", "label_template": "C:\\Labels\\p.std"})
    req = BurnRequest("J1", 1, "CD", "x", image_path=Path("/d.iso"), label=LabelFiles(fields=NAMES))
    data = robot.render(req)["J1.JRQ"]
    expected = (
        "JobID = J1\r\nClientID = appliance\r\nImportance = 4\r\nImageFile = /d.iso\r\nImageType = MODE_1_2048\r\n"
        "CloseDisc = YES\r\nCopies = 1\r\nPrintLabel = C:\\Labels\\p.std\r\n"
        "MergeField = 山田^太郎\r\nMergeField = Иванов^Иван\r\nMergeField = Παπαδόπουλος^Νίκος\r\n"
        "MergeField = محمد^علي\r\nVerifyDisc = YES\r\nRejectIfNotBlank = YES\r\n"
    )
    assert data == b"\xff\xfe" + expected.encode("utf-16-le")


def test_the_mbcs_build_gets_cp1252_with_names_transliterated() -> None:
    robot = create_robot("primera", {"hotfolder": "/hot", "label_template": "C:\\Labels\\p.std"})
    fields = {"a": "Müller^Łukasz", **NAMES}
    req = BurnRequest("J1", 1, "CD", "x", image_path=Path("/d.iso"), label=LabelFiles(fields=fields))
    lines = robot.render(req)["J1.JRQ"].decode("cp1252").split("\r\n")
    assert [line for line in lines if line.startswith("MergeField")] == [
        "MergeField = Müller^Lukasz",  # cp1252 has ü, not Ł
        "MergeField = ??^??",
        "MergeField = ??????^????",
        "MergeField = ????????????^?????",
        "MergeField = ????^???",
    ]


def test_a_utf16_job_runs_in_the_simulator_with_names_intact_and_aborts(rig, disc, make_request, run_to_end, wait):
    robot, sim = rig("primera", encoding="utf-16", label_template=str(disc["std"]), sim={"disc_seconds": 0.5})
    first = robot.submit(make_request("J1", label=LabelFiles(fields=NAMES)))
    done = run_to_end(robot, first)
    assert done.state == JobState.DONE
    assert sim.jobs[first].merge == list(NAMES.values())
    status_bytes = (disc["hot"] / "Status" / "SystemStatus.txt").read_bytes()
    assert status_bytes[:2] == b"\xff\xfe"  # the simulated Unicode build writes its status files in UTF-16 too
    # The abort message (.PTM) goes out in the same encoding and PTBurn honours it.
    second = robot.submit(make_request("J2", copies=5, label=LabelFiles(fields=NAMES)))
    wait(lambda: robot.poll(second).state == JobState.BURNING)
    robot.cancel(second)
    assert robot.poll(second).state == JobState.CANCELLED


def test_encodings_ptburn_cannot_read_are_refused() -> None:
    for bad in ("utf-8", "utf-16-le", "utf-32"):
        with pytest.raises(RobotConfigError, match="encoding"):
            create_robot("primera", {"hotfolder": "/hot", "encoding": bad})
    for good in ("cp1252", "utf-16", "cp932"):
        assert create_robot("primera", {"hotfolder": "/hot", "encoding": good}) is not None


# --------------------------------------------------------------------------- 8. PTBurn 3.3.0+ status files


def _status(folder: Path, system: str, robots: dict[str, str]) -> None:
    (folder / "Status").mkdir(parents=True, exist_ok=True)
    (folder / "Status" / "SystemStatus.txt").write_bytes(system.replace("\n", "\r\n").encode("cp1252"))
    for name, text in robots.items():
        (folder / "Status" / f"{name}.txt").write_bytes(text.replace("\n", "\r\n").encode("cp1252"))


SYSTEM = """[RobotList]
Robot0=Bravo A
Robot1=Bravo B
[Bravo A]
SysErrorNumber=0
NumJobs=1
DiscsInLeftBin=10
StatusFile=Bravo A.txt
CartridgeType0=2
CartridgeFill0=91
CartridgeType1=1
CartridgeFill1=37
CartridgeType2=3
CartridgeFill2=59
CartridgeType3=4
CartridgeFill3=37
CartridgeType4=5
CartridgeFill4=100
CartridgeType5=6
CartridgeFill5=80
CartridgeType6=0
CartridgeFill6=0
[Bravo B]
SysErrorNumber=0
StatusFile=Bravo B.txt
[System]
SysErrorNumber=0
ServerTickCount=100
"""
MOVED = "[System]\nSystemStatus=Idle\n[J1]\nJobID=J1\nJobState=4\nCurrentStatusState=18\n"
ON_B = (
    "[System]\nSystemStatus=Busy\n[J1]\nJobID=J1\nJobState=1\nCurrentStatusState=0\nGoodDiscs=1\n"
    "BadDiscs=0\nDiscsRemaining=1\n"
)


def test_a_moved_job_is_followed_not_failed(tmp_path: Path) -> None:
    robot = create_robot("primera", {"hotfolder": str(tmp_path), "robot_name": "Bravo A"})
    (tmp_path / "J1.INP").write_bytes(b"")
    _status(tmp_path, SYSTEM, {"Bravo A": MOVED, "Bravo B": "[System]\nSystemStatus=Idle\n"})
    waiting = robot.poll("J1")
    assert waiting.state == JobState.ACCEPTED and not waiting.needs_staff
    assert waiting.reason == "moved to another robot; waiting for it to take the job"
    _status(tmp_path, SYSTEM.replace("100", "101"), {"Bravo A": MOVED, "Bravo B": ON_B})
    burning = robot.poll("J1")
    assert burning.state == JobState.BURNING
    assert burning.reason == "recording, copy 2 of 2 (moved to robot Bravo B)"
    (tmp_path / "J1.INP").rename(tmp_path / "J1.DON")
    done_b = ON_B.replace("JobState=1", "JobState=2").replace("GoodDiscs=1", "GoodDiscs=2")
    _status(tmp_path, SYSTEM.replace("100", "102"), {"Bravo A": MOVED, "Bravo B": done_b})
    done = robot.poll("J1")
    assert (done.state, done.copies_done) == (JobState.DONE, 2)


def test_a_job_moved_by_the_simulator_finishes_on_the_other_robot(rig, make_request, run_to_end, wait) -> None:
    robot, sim = rig("primera", sim={"disc_seconds": 0.4})
    ticket = robot.submit(make_request(copies=3))
    wait(lambda: robot.poll(ticket).state == JobState.BURNING)
    assert sim.move_running() == ticket
    moved = wait(lambda: "moved to robot" in (p := robot.poll(ticket)).reason and p)
    assert moved.state == JobState.BURNING and not moved.needs_staff
    done = run_to_end(robot, ticket)
    assert done.state == JobState.DONE and done.copies_done == 3
    assert done.reason == f"3 disc(s) published (moved to robot {sim.second_robot})"


def test_every_documented_cartridge_type_is_named(tmp_path: Path) -> None:
    robot = create_robot("primera", {"hotfolder": str(tmp_path), "robot_name": "Bravo A"})
    _status(tmp_path, SYSTEM, {"Bravo A": "[System]\nSystemStatus=Idle\n"})
    status = robot.status()
    # Four-tank robots record five cartridges (SDK §3.1.3.8); a type newer than the SDK keeps its number.
    assert status.ink == {
        "black": 91,
        "colour": 37,
        "yellow": 59,
        "cyan": 37,
        "magenta": 100,
        "cartridge type 6": 80,
    }


def test_status_files_without_joblist_and_completedjobs(rig, make_request, run_to_end, wait) -> None:
    robot, sim = rig("primera", sim={"job_lists": False, "disc_seconds": 0.3})
    sim.inject("drive_error")
    failed = robot.submit(make_request("J1"))
    assert run_to_end(robot, failed).state == JobState.FAILED
    text = (sim.hotfolder / "Status" / f"{sim.robot}.txt").read_bytes().decode("cp1252")
    assert "[JobList]" not in text and "[CompletedJobs]" not in text
    status = wait(lambda: (s := robot.status()).online and s)
    assert status.state == RobotState.IDLE
    assert status.errors == (f"{failed}: record error while writing the disc (job-18)",)
    ticket = robot.submit(make_request("J1"))
    assert ticket == "J1_2"  # the finished job's status section still reserves its id
    assert run_to_end(robot, ticket).state == JobState.DONE


def test_renamed_extensions_from_ptsetup_ini(rig, make_request, run_to_end) -> None:
    names = {
        "job_extension": "REQ",
        "queued_extension": "QUE",
        "running_extension": "RUN",
        "done_extension": "FIN",
        "error_extension": "BAD",
    }
    robot, sim = rig("primera", **names)
    ticket = robot.submit(make_request())
    assert run_to_end(robot, ticket).state == JobState.DONE
    assert sim.renames(ticket) == ["QUE", "RUN", "FIN"]
    sim.inject("drive_error")
    failed = robot.submit(make_request("J2"))
    assert run_to_end(robot, failed).error_code == "job-18"
    assert sim.renames(failed)[-1] == "BAD"


def test_extensions_must_differ() -> None:
    with pytest.raises(RobotConfigError, match="must differ"):
        create_robot("primera", {"hotfolder": "/hot", "done_extension": "ERR"})
    with pytest.raises(RobotConfigError, match="must differ"):
        create_robot("primera", {"hotfolder": "/hot", "queued_extension": "ptm"})
    with pytest.raises(RobotConfigError, match="letters and digits"):
        create_robot("primera", {"hotfolder": "/hot", "running_extension": "IN.P"})


# ---------------------------------------------------------------- 9. the simulator accepts what PTBurn does


@pytest.mark.parametrize(
    "body",
    [
        "JobID = OK1\r\nthis line has no equals sign\r\nImageFile = {iso}\r\n",
        "JobID = OK1\r\nVolumeName = {v33}\r\nImageFile = {iso}\r\n",
        "JobID = OK1\r\nClientID = {v33}\r\nImageFile = {iso}\r\n",
        "JobID = OK1\r\nImageFile = {iso}\r\nPrintLabel = {std}\r\nMergeField = {v260}\r\n",
        "JobID = OK1\r\nImageFile = {iso}, Session1\r\nData = {dicomdir}, Session2\r\n",
    ],
)
def test_the_simulator_accepts_what_ptburn_accepts(rig, disc, run_to_end, body: str) -> None:
    robot, sim = rig("primera")
    text = body.format(
        iso=disc["iso"], std=disc["std"], v33="V" * 33, v260="M" * 260, dicomdir=disc["fileset"] / "DICOMDIR"
    )
    atomic_write(disc["hot"], "OK1.JRQ", text.encode("cp1252"))
    assert run_to_end(robot, "OK1").state == JobState.DONE
    assert sim.renames("OK1") == ["QRJ", "INP", "DON"]
