"""The Epson driver and simulator against facts from PP100API.h and the TD Bridge guides Rev. C and Rev. L."""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

import pytest

from robots.base import BurnRequest, JobState, LabelFiles, RobotConfigError, RobotState
from robots.detect import UsbScan
from robots.epson import NO_LABEL_NOTE
from robots.hotfolder import atomic_write
from robots.registry import create_robot
from robots.report import describe

BD_STACKERS = {"1": "CD", "2": "BD"}

# What a Rev. C (PP-100/PP-100N era) bridge writes: no [TDB_INFO] section (TD Bridge guide Rev. C p61).
REV_C_STF = (
    "[ACTIVE_JOB]\r\nJOB1=J1\r\n[COMPLETE_JOB]\r\n"
    "[PUBLISHER1]\r\nNAME=PP-100 1\r\nSTACKER1=80\r\nSTACKER1_SETTING=1\r\nINK_C=60\r\nINK_B=70\r\n"
    "[J1]\r\nSTATUS=2\r\nDETAIL_STATUS=3\r\nPUBLICATION_NUMBER=2\r\nCOMPLETION_NUMBER=0\r\n"
    "ERRORDISC_NUMBER=0\r\nERROR=\r\n"
)


# --------------------------------------------------------------------------------- 1. Rev. C status files


def test_a_rev_c_status_file_without_tdb_info_is_an_online_bridge(tmp_path: Path) -> None:
    robot = create_robot("epson", {"hotfolder": str(tmp_path), "status_timeout": 30.0})
    (tmp_path / "TDBStatus.txt").write_bytes(REV_C_STF.encode("cp1252"))
    (tmp_path / "J1.INP").write_bytes(b"JOB_ID=J1\r\n")
    status = robot.status()
    assert status.online and status.state == RobotState.BUSY and status.reason == "1 job(s) active"
    assert status.ink == {"cyan": 60, "black": 70} and status.media == {"stacker 1 (CD)": 80}
    assert status.bridge == "TD Bridge"  # no version without [TDB_INFO]
    progress = robot.poll("J1")
    assert (progress.state, progress.reason) == (JobState.BURNING, "publishing copy 1 of 2")


def test_offline_means_a_missing_or_stale_status_file(tmp_path: Path) -> None:
    robot = create_robot("epson", {"hotfolder": str(tmp_path), "status_timeout": 30.0})
    assert robot.status().reason == f"bridge offline: no TDBStatus.txt in {tmp_path}"
    stf = tmp_path / "TDBStatus.txt"
    stf.write_bytes(REV_C_STF.encode("cp1252"))
    old = time.time() - 3600
    os.utime(stf, (old, old))
    stale = create_robot("epson", {"hotfolder": str(tmp_path), "status_timeout": 30.0}).status()
    assert not stale.online and stale.reason.startswith("bridge offline: no answer from TD Bridge for ")


def test_a_job_runs_to_the_end_on_a_rev_c_bridge(rig, make_request, run_to_end) -> None:
    robot, sim = rig("epson", sim={"tdb_info": False})
    ticket = robot.submit(make_request())
    assert run_to_end(robot, ticket).state == JobState.DONE
    assert "[TDB_INFO]" not in (sim.hotfolder / "TDBStatus.txt").read_text("cp1252")
    assert robot.status().online


# ------------------------------------------------------------------- 3, 4. FORMAT for BD, OUT_STACKER per model


def test_bd_formats_are_udf102_and_udf260_only() -> None:
    with pytest.raises(RobotConfigError, match=r"formats\.BD = 'UDF150'"):
        create_robot("epson", {"hotfolder": "/hot", "formats": {"BD": "UDF150"}})
    assert create_robot("epson", {"hotfolder": "/hot", "formats": {"DVD": "UDF150"}}) is not None


@pytest.mark.parametrize(
    ("model", "allowed"),
    [
        ("PP-100", (2, 3, 4)),
        ("PP-100N", (2, 3, 4)),
        ("PP-100AP", (2, 3, 4)),
        ("PP-100II", (2, 3, 4)),
        ("PP-50", (2, 3)),
        ("PP-50BD", (2, 3)),
        ("PP-7050", (2, 3)),
        ("PP-7050BD", (2, 3)),
        ("", (2, 3)),
    ],
)
def test_out_stacker_follows_the_configured_model(model: str, allowed: tuple[int, ...]) -> None:
    for value in (1, 2, 3, 4, 5):
        table = {"hotfolder": "/hot", "model": model, "out_stacker": value}
        if value in allowed:
            jdf = create_robot("epson", table).render(BurnRequest("J1", 1, "CD", "x", image_path=Path("/d.iso")))
            assert f"OUT_STACKER={value}\r\n".encode() in jdf["J1.JDF"]
        else:
            with pytest.raises(RobotConfigError, match=f"out_stacker = {value}"):
                create_robot("epson", table)


def test_unknown_models_and_print_settings_the_bridge_rejects_are_refused() -> None:
    with pytest.raises(RobotConfigError, match="model 'PP-999'"):
        create_robot("epson", {"hotfolder": "/hot", "model": "PP-999"})
    with pytest.raises(RobotConfigError, match="JDF2603"):
        create_robot("epson", {"hotfolder": "/hot", "model": "PP-100", "print_mode": 3})
    with pytest.raises(RobotConfigError, match="JDF2602"):
        create_robot("epson", {"hotfolder": "/hot", "label_type": 3, "print_mode": 2})
    assert create_robot("epson", {"hotfolder": "/hot", "model": "PP-100AP", "print_mode": 3}) is not None


# ------------------------------------------------------------------------- 6. the simulator as TD Bridge


def _jdf(body: str, disc: dict[str, Path]) -> bytes:
    return body.format(
        iso=disc["iso"],
        tdd=disc["tdd"],
        data=disc["fileset"],
        missing=disc["root"] / "gone",
        dat=disc["root"] / "gone.dat",
    ).encode("cp1252")


@pytest.mark.parametrize(
    ("model", "body", "code"),
    [
        ("", "JOB_ID=B\r\nDISC_TYPE=CD\r\nFORMAT=JOLIET\r\nDATA={missing}\r\n", "JDF0907"),
        ("", "JOB_ID=B\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nLABEL={tdd}\r\nREPLACE_FIELD={dat}\r\n", "JDF1600"),
        ("", "JOB_ID=B\r\nDISC_TYPE=BD\r\n", "JDF0003"),
        ("", "JOB_ID=B\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nLABEL_TYPE=3\r\nPRINT_MODE=2\r\n", "JDF2602"),
        ("", "JOB_ID=B\r\nDISC_TYPE=BD\r\nFORMAT=UDF150\r\nDATA={data}\r\n", "JDF1402"),
        ("", "JOB_ID=B\r\nDISC_TYPE=CD\r\nFORMAT=UDF260\r\nDATA={data}\r\n", "JDF1400"),
        ("", "JOB_ID=B\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nPRINT_MODE=3\r\n", "JDF2603"),
        ("", "JOB_ID=B\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nMEASURE=2\r\n", "JDF2800"),
        ("", "JOB_ID=B\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nWRITING_SPEED=fast\r\n", "JDF0600"),
        ("PP-50", "JOB_ID=B\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nOUT_STACKER=4\r\n", "JDF0400"),
        ("PP-100AP", "JOB_ID=B\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\n", "JDF0002"),
    ],
)
def test_the_simulator_rejects_what_td_bridge_rejects_with_its_code(
    rig, disc, run_to_end, model: str, body: str, code: str
) -> None:
    robot, sim = rig("epson", model=model, sim={"stackers": BD_STACKERS})
    atomic_write(disc["hot"], "B.JDF", _jdf(body, disc))
    done = run_to_end(robot, "B")
    assert (done.state, done.error_code) == (JobState.FAILED, code)
    assert sim.renames("B") == ["RJD", "ERR"]


@pytest.mark.parametrize(
    ("model", "body"),
    [
        ("", "JOB_ID=A\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nOUT_STACKER=3\r\n"),
        ("PP-100II", "JOB_ID=A\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nOUT_STACKER=4\r\n"),
        ("PP-50", "JOB_ID=A\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nOUT_STACKER=3\r\n"),
        ("", "JOB_ID=A\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nWRITING_SPEED=4.0\r\n"),
        ("", "JOB_ID=A\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nMEASURE=0\r\n"),
        ("", "JOB_ID=A\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nMEASURE=1\r\n"),
        ("", "JOB_ID=A\r\nDISC_TYPE=BD\r\nFORMAT=UDF260\r\nDATA={data}\r\n"),
        ("", "JOB_ID=A\r\nDISC_TYPE=CD\r\nLABEL={tdd}\r\n"),  # a print-only job has data enough
        ("PP-100AP", "JOB_ID=A\r\nDISC_TYPE=CD\r\nIMAGE={iso}\r\nLABEL={tdd}\r\nPRINT_MODE=3\r\n"),
    ],
)
def test_the_simulator_accepts_what_td_bridge_accepts(rig, disc, run_to_end, model: str, body: str) -> None:
    robot, sim = rig("epson", model=model, sim={"stackers": BD_STACKERS})
    atomic_write(disc["hot"], "A.JDF", _jdf(body, disc))
    assert run_to_end(robot, "A").state == JobState.DONE
    assert sim.renames("A") == ["RJD", "INP", "DON"]


def test_error_is_written_empty_when_there_is_no_error(rig, make_request, run_to_end) -> None:
    robot, sim = rig("epson", sim={"disc_seconds": 0.3})
    ticket = robot.submit(make_request())
    assert run_to_end(robot, ticket).state == JobState.DONE
    text = (sim.hotfolder / "TDBStatus.txt").read_bytes().decode("cp1252")
    section = text.split(f"[{ticket}]\r\n", 1)[1].split("[", 1)[0]
    assert "ERROR=\r\n" in section and "ERROR=0" not in text


def test_oth000_right_after_submission_is_neither_an_error_nor_a_call_for_staff(
    rig, make_request, run_to_end, wait
) -> None:
    robot, sim = rig("epson")
    sim.inject_code("OTH000")
    ticket = robot.submit(make_request())
    wait(lambda: sim.jobs.get(ticket) is not None and sim.jobs[ticket].error == "OTH000")
    progress = robot.poll(ticket)
    assert progress.state in (JobState.ACCEPTED, JobState.BURNING)
    assert not progress.needs_staff and progress.error_code is None
    status = robot.status()
    assert status.state != RobotState.ERROR and status.errors == ()
    sim.clear_faults()
    assert run_to_end(robot, ticket).state == JobState.DONE


# ------------------------------------------------------------------------------ 5. labels need a .tdd


def test_without_a_template_the_robot_warns_and_the_job_says_no_label_was_printed(
    rig, make_request, run_to_end
) -> None:
    robot, sim = rig("epson")
    (warning,) = robot.setup_warnings()
    assert "no label template" in warning and ".tdd" in warning
    ticket = robot.submit(make_request())
    done = run_to_end(robot, ticket)
    assert done.state == JobState.DONE and done.notes == (NO_LABEL_NOTE,)
    assert done.reason == f"1 disc(s) published; {NO_LABEL_NOTE}"
    assert b"LABEL=" not in (sim.hotfolder / f"{ticket}.DON").read_bytes()
    report = describe({"epson": robot}, UsbScan(True))
    assert f"    warning: {warning}\n" in report


def test_with_a_template_nothing_is_said(rig, disc, make_request, run_to_end) -> None:
    robot, sim = rig("epson", label_template=str(disc["tdd"]))
    assert robot.setup_warnings() == ()
    done = run_to_end(robot, robot.submit(make_request()))
    assert done.state == JobState.DONE and done.notes == () and done.reason == "1 disc(s) published"
    assert sim.jobs[next(iter(sim.jobs))].keys["LABEL"] == str(disc["tdd"])


def test_the_note_holds_after_td_bridge_moved_the_done_file_away(tmp_path: Path) -> None:
    robot = create_robot("epson", {"hotfolder": str(tmp_path)})
    stf = REV_C_STF.replace("STATUS=2\r\nDETAIL_STATUS=3", "STATUS=4\r\nDETAIL_STATUS=9")
    (tmp_path / "TDBStatus.txt").write_bytes(stf.replace("COMPLETION_NUMBER=0", "COMPLETION_NUMBER=2").encode())
    done = robot.poll("J1")
    assert done.state == JobState.DONE and done.notes == (NO_LABEL_NOTE,)
    images = create_robot("epson", {"hotfolder": str(tmp_path), "image_labels": True})
    assert images.poll("J1").notes == () and images.setup_warnings() == ()


def test_the_example_merge_file_in_the_docs_is_what_labels_write() -> None:
    """docs/labels.md's example .DAT is produced by the labels package for its example patient."""
    from labels import DiscLabelFields, LabelLayout, LabelStudy, epson_field_file

    docs = Path(__file__).resolve().parents[2] / "docs"
    example = (docs / "examples" / "epson-label.dat").read_bytes()
    fields = DiscLabelFields(
        patient_name="Doe^John",
        patient_id="PID-0012345",
        birth_date="19700131",
        studies=(
            LabelStudy("20240501", "CT Thorax Abdomen", ("CT", "SR"), "ACC-1"),
            LabelStudy("20240502", "MR Knee left", ("MR",), "ACC-2"),
        ),
        institution="St. Example General Hospital",
        department="Radiology",
        disc_number=1,
        disc_count=2,
        with_viewer=True,
        token_url="https://host:3000/token?EXAMPLE",
        created=datetime.date(2024, 5, 3),
    )
    data, warnings = epson_field_file(fields, LabelLayout.from_options({}))
    assert warnings == () and data == example
    names = [line.split(b"=", 1)[0].decode() for line in example.split(b"\r\n") if line]
    text = (docs / "labels.md").read_text()
    for name in names:  # every field the .DAT fills is listed for the template designer
        assert f"`{name}`" in text, name


def test_a_rendered_jdf_without_template_has_no_label_key() -> None:
    robot = create_robot("epson", {"hotfolder": "/hot"})
    req = BurnRequest("J1", 1, "CD", "x", image_path=Path("/d.iso"), label=LabelFiles(fields={"a": "b"}))
    assert b"LABEL" not in robot.render(req)["J1.JDF"]
