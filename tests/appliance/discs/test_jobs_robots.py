"""Jobs against robot faults, staging limits and the job commands: nothing received is lost, reasons are readable,
and a retry after the fault is cleared works."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from publishing_support import publish_config, publish_node, robot_table, wait_until

from appliance.discs.jobs import JobState

import dicomdata

pytestmark = pytest.mark.dcmtk
__all__ = ["publish_node"]


def send_study(node, folder: Path, suffix: str = "_E", patient: str = "PIDF") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    items = dicomdata.study(patient, "FAULT^TEST", ("CT",), 2)
    for inst in items:
        inst.write(folder)
    node.send(folder, suffix)
    return [i.sop_uid for i in items]


def test_no_blank_media_holds_the_job_until_discs_are_loaded(publish_node, tmp_path: Path) -> None:
    node = publish_node()
    node.sim("epson").inject("no_media")
    send_study(node, tmp_path / "in")
    held = node.wait_job(1, lambda j: j.needs_staff)
    assert held.state in (JobState.SUBMITTED, JobState.BURNING)
    assert "RTN000" in held.message and held.message.startswith("held:")
    node.sim("epson").clear_faults()
    done = node.wait_state(1, JobState.DONE)
    # The demo Epson robot has no .tdd template: TD Bridge burns the disc unprinted, and the note says so.
    assert not done.needs_staff and done.message == "no label printed (no template configured)"


def test_an_epson_robot_with_a_template_prints_and_leaves_no_note(publish_node, tmp_path: Path) -> None:
    data = tmp_path / "pub"
    template = tmp_path / "templates" / "patient.tdd"
    template.parent.mkdir()
    template.write_bytes(b"template")
    robots = {"epson": robot_table(data, "epson", label_template=str(template))}
    node = publish_node(publish_config(data, robots=robots))
    send_study(node, tmp_path / "in")
    done = node.wait_state(1, JobState.DONE)
    assert done.message == "" and not done.needs_staff
    jdf = (node.job_dir(1) / "disc1" / "J1D1A1.JDF").read_bytes()
    assert f"LABEL={template}\r\n".encode() in jdf and b"REPLACE_FIELD=" in jdf


def test_ink_out_holds_a_primera_job(publish_node, tmp_path: Path) -> None:
    node = publish_node()
    node.sim("primera").inject("ink_out")
    send_study(node, tmp_path / "in", "_P")
    held = node.wait_job(1, lambda j: j.needs_staff)
    assert held.message == "held: colour cartridge empty: replace it (system-35)"
    node.sim("primera").clear_faults()
    node.wait_state(1, JobState.DONE)


def test_drive_error_fails_the_job_and_a_retry_after_clearing_works(publish_node, tmp_path: Path) -> None:
    node = publish_node()
    node.sim("epson").inject("drive_error")
    uids = send_study(node, tmp_path / "in")
    failed = node.wait_state(1, JobState.FAILED)
    assert "CAN008" in failed.error and failed.error.startswith("robot epson:")
    iso = node.job_dir(1) / "disc1" / "disc.iso"
    stamp = iso.stat().st_mtime_ns
    node.sim("epson").clear_faults()
    node.jobs.retry(1)
    node.publishing.engine.wake()
    done = node.wait_state(1, JobState.DONE)
    assert done.attempt == 2 and done.error == ""
    assert iso.stat().st_mtime_ns == stamp  # the staged disc was reused, not authored again
    assert node.jobs.discs(1)[0].ticket == "J1D1A2"
    assert sorted(node.jobs.instances(1)) == sorted(uids)
    history = [(e.from_state, e.to_state) for e in node.jobs.events(1)]
    assert ("burning", "failed") in history or ("submitted", "failed") in history
    assert ("failed", "queued") in history and history[-1][1] == "done"


def test_missing_hot_folder_fails_with_the_reason_and_retry_works(publish_node, tmp_path: Path) -> None:
    data = tmp_path / "pub"
    robots = {"epson": robot_table(data, "epson", simulate=False, hotfolder=str(tmp_path / "share"))}
    node = publish_node(publish_config(data, robots=robots))
    send_study(node, tmp_path / "in")
    failed = node.wait_state(1, JobState.FAILED)
    assert "cannot reach the robot's hot folder" in failed.error and "does not exist" in failed.error
    assert node.app.index.counts()["instances"] == 2  # nothing received is lost
    (tmp_path / "share").mkdir()
    node.jobs.retry(1)
    node.publishing.engine.wake()
    submitted = node.wait_state(1, JobState.SUBMITTED)
    assert submitted.error == ""
    # The engine records the new state first and then writes the job file into the hot folder.
    wait_until(lambda: (tmp_path / "share" / "J1D1A2.JDF").is_file())


def test_bridge_gone_holds_the_job_and_it_goes_on_when_the_bridge_is_back(publish_node, tmp_path: Path) -> None:
    data = tmp_path / "pub"
    robots = {"epson": robot_table(data, "epson", offline_timeout=0.5, status_timeout=0.5)}
    node = publish_node(publish_config(data, robots=robots))
    node.sim("epson").stop()
    send_study(node, tmp_path / "in")
    held = node.wait_job(1, lambda j: j.needs_staff)
    assert "bridge offline" in held.message and held.state is JobState.SUBMITTED
    node.sim("epson").start()
    node.wait_state(1, JobState.DONE)


def test_cancel_a_job_held_by_the_robot(publish_node, tmp_path: Path) -> None:
    node = publish_node()
    node.sim("epson").inject("no_media")
    send_study(node, tmp_path / "in")
    node.wait_job(1, lambda j: j.needs_staff)
    job = node.publishing.publisher.cancel(1)
    assert job.state is JobState.CANCELLED
    assert node.jobs.discs(1)[0].robot_state == "cancelled"
    node.sim("epson").clear_faults()
    node.jobs.retry(1)
    node.publishing.engine.wake()
    node.wait_state(1, JobState.DONE)


def test_a_disk_too_full_to_stage_fails_the_job_clearly(publish_node, tmp_path: Path) -> None:
    free_mb = shutil.disk_usage(tmp_path).free // 1_000_000
    node = publish_node(burn={"staging_free_space_mb": free_mb + 1000})
    send_study(node, tmp_path / "in")
    failed = node.wait_state(1, JobState.FAILED)
    assert failed.error.startswith("not enough free space to stage the instances")
    assert "staging_free_space_mb" in failed.error
    assert not list((node.job_dir(1)).glob("disc*"))  # nothing half-staged left behind
    assert node.app.index.counts()["instances"] == 2


def test_finished_staging_is_purged_and_a_reburn_authors_from_the_store(publish_node, tmp_path: Path) -> None:
    node = publish_node(burn={"staging_purge_hours": 0})
    send_study(node, tmp_path / "in")
    node.wait_state(1, JobState.DONE)
    node.wait_job(1, lambda j: j.purged)
    folder = node.job_dir(1)
    assert not (folder / "disc1" / "disc.iso").exists() and not (folder / "disc1" / "fileset").exists()
    assert (folder / "label.pdf").is_file() and (folder / "disc1" / "J1D1A1.JDF").is_file()
    reburn = node.jobs.repeat(1, "reburn")
    node.publishing.engine.wake()
    node.wait_state(reburn, JobState.DONE)
    assert node.jobs.get(reburn).parent_id == 1
    assert sorted(node.jobs.instances(reburn)) == sorted(node.jobs.instances(1))


def test_reburn_and_reprint_reuse_the_staged_image(publish_node, tmp_path: Path) -> None:
    node = publish_node()
    send_study(node, tmp_path / "in")
    node.wait_state(1, JobState.DONE)
    original = node.job_dir(1) / "disc1"
    reburn = node.jobs.repeat(1, "reburn", copies=3)
    node.publishing.engine.wake()
    node.wait_state(reburn, JobState.DONE)
    copy = node.job_dir(reburn) / "disc1"
    assert (copy / "disc.iso").stat().st_ino == (original / "disc.iso").stat().st_ino  # linked, not re-authored
    assert (copy / "label.pdf").stat().st_ino == (original / "label.pdf").stat().st_ino
    assert "COPIES=3" in (copy / f"J{reburn}D1A1.JDF").read_text()
    reprint = node.jobs.repeat(1, "reprint")
    node.publishing.engine.wake()
    node.wait_state(reprint, JobState.DONE)
    fresh = node.job_dir(reprint) / "disc1"
    assert (fresh / "disc.iso").stat().st_ino == (original / "disc.iso").stat().st_ino
    assert (fresh / "label.pdf").stat().st_ino != (original / "label.pdf").stat().st_ino  # a new label


def test_a_job_for_instances_gone_from_the_store_fails_with_the_reason(publish_node, tmp_path: Path) -> None:
    node = publish_node(burn={"staging_purge_hours": 0})
    uids = send_study(node, tmp_path / "in")
    node.wait_state(1, JobState.DONE)
    node.wait_job(1, lambda j: j.purged)
    node.app.index.remove_paths([r[0] for r in node.app.db.conn.execute("SELECT path FROM instances")])
    again = node.jobs.repeat(1, "reburn")
    node.publishing.engine.wake()
    failed = node.wait_state(again, JobState.FAILED)
    assert uids and failed.error.startswith("2 of the job's 2 instance(s) are no longer in the store (e.g. 1.2.826")


def test_a_disk_that_fills_up_while_imaging_fails_the_job_and_cleans_up(
    publish_node, tmp_path: Path, monkeypatch
) -> None:
    import errno

    import pycdlib

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pycdlib.PyCdlib, "write", full)  # the disk edge: the image write fails
    node = publish_node()
    send_study(node, tmp_path / "in")
    failed = node.wait_state(1, JobState.FAILED)
    assert failed.error == "the data disk filled up while staging the disc(s): No space left on device"
    folder = node.job_dir(1)
    assert (
        not (folder / "pool").exists()
        and not list(folder.glob("disc*/disc.iso*"))
        and not list(folder.glob("disc*/.disc.iso.part"))
    )
    assert node.app.index.counts()["instances"] == 2
    monkeypatch.undo()
    node.jobs.retry(1)
    node.publishing.engine.wake()
    node.wait_state(1, JobState.DONE)
