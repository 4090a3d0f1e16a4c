"""Disc publishing end to end on loopback: DCMTK storescu -> burn AE title -> job -> simulated robot -> done.

Every disc is checked the way a recipient would read it: the ISO with pycdlib and xorriso, the DICOMDIR with
DCMTK dcmdump, every referenced file against its record.
"""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import pytest
from publishing_support import (
    PublishNode,
    dcmdump_ok,
    iso_files,
    publish_config,
    publish_node,
    robot_table,
    volume_label,
    wait_until,
)
from pydicom import dcmread
from pydicom.fileset import FileSet

from appliance.db import Database
from appliance.discs.jobs import JobState

import dicomdata

pytestmark = pytest.mark.dcmtk
__all__ = ["publish_node"]


def write_study(
    folder: Path,
    patient_id: str,
    name: str,
    modalities: tuple[str, ...] = ("CT",),
    per_series: int = 2,
    **kwargs: object,
) -> list[dicomdata.Instance]:
    folder.mkdir(parents=True, exist_ok=True)
    items = dicomdata.study(patient_id, name, modalities, per_series, **kwargs)
    for inst in items:
        inst.write(folder)
    return items


def disc_uids(iso: Path) -> set[str]:
    """SOP Instance UIDs of the DICOM files on a disc image, read back from the image itself."""
    files = iso_files(iso)
    out = set()
    for path, data in files.items():
        if path.startswith("/PT"):
            out.add(str(dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID))
    return out


def check_disc(node: PublishNode, job_id: int, number: int = 1) -> set[str]:
    """The staged File-set reads with dcmdump, every record matches its file, and the ISO carries it all."""
    folder = node.job_dir(job_id) / f"disc{number}"
    dicomdir = folder / "fileset" / "DICOMDIR"
    dump = dcmdump_ok(dicomdir)
    assert "DirectoryRecordSequence" in dump
    fs = FileSet(dcmread(dicomdir))
    for inst in fs:
        header = dcmread(inst.path, stop_before_pixels=True)
        assert header.SOPInstanceUID == inst.ReferencedSOPInstanceUIDInFile
        assert header.file_meta.TransferSyntaxUID == inst.ReferencedTransferSyntaxUIDInFile == "1.2.840.10008.1.2.1"
    iso = folder / "disc.iso"
    assert volume_label(iso) == fs.ID
    files = iso_files(iso)
    assert {"/DICOMDIR", "/README.TXT", "/INDEX.HTM"} <= set(files)
    assert files["/DICOMDIR"] == dicomdir.read_bytes()
    listing = subprocess.run(
        ["/usr/bin/xorriso", "-indev", str(iso), "-find", "/", "-type", "f"], capture_output=True, text=True, check=True
    ).stdout
    assert "'/DICOMDIR'" in listing and "'/README.TXT'" in listing
    uids = disc_uids(iso)
    assert uids == {str(i.SOPInstanceUID) for i in fs}
    return uids


def test_association_to_epson_ae_makes_one_disc(publish_node, tmp_path: Path) -> None:
    node = publish_node()
    items = write_study(tmp_path / "in", "PIDE", "EPSON^ONE", ("CT", "MR"), 3)
    node.send(tmp_path / "in", "_E")
    job = node.wait_state(1, JobState.DONE)
    assert (job.robot, job.copies, job.media, job.disc_count, job.source) == ("epson", 1, "CD", 1, "association")
    assert job.called_ae == "DISCPACS_E" and job.patient_id == "PIDE"
    assert check_disc(node, 1) == {i.sop_uid for i in items}
    folder = node.job_dir(1)
    assert (folder / "label.pdf").read_bytes().startswith(b"%PDF")
    assert (folder / "disc1" / "label-epson.dat").read_text("cp1252").startswith("institution=St. Example Hospital")
    jdf = (folder / "disc1" / "J1D1A1.JDF").read_text()
    assert "DISC_TYPE=CD" in jdf and f"IMAGE={folder / 'disc1' / 'disc.iso'}" in jdf
    assert node.sim("epson").renames("J1D1A1")[-1] == "DON"
    states = [e.to_state for e in node.jobs.events(1)]
    assert states[:3] == ["queued", "authoring", "submitted"] and states[-1] == "done"
    assert len(node.jobs.recent()) == 1


def test_primera_ae_prints_our_jpg(publish_node, tmp_path: Path) -> None:
    node = publish_node()
    write_study(tmp_path / "in", "PIDP", "PRIMERA^ONE")
    node.send(tmp_path / "in", "_P")
    job = node.wait_state(1, JobState.DONE)
    assert job.robot == "primera"
    disc = node.job_dir(1) / "disc1"
    jrq = (disc / "J1D1A1.JRQ").read_text()
    assert f"PrintLabel = {disc / 'label-primera.jpg'}" in jrq and f"ImageFile = {disc / 'disc.iso'}" in jrq
    assert (disc / "label-primera.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    check_disc(node, 1)


def test_plain_ae_only_stores(publish_node, tmp_path: Path) -> None:
    node = publish_node()
    write_study(tmp_path / "in", "PIDS", "STORE^ONLY")
    node.send(tmp_path / "in")
    assert node.app.index.counts()["instances"] == 2
    wait_until(lambda: not node.app._received)  # the association's end has been handled
    assert node.jobs.recent() == [] and node.publishing.groups.pending() == []


def test_delayed_group_gathers_two_associations_into_one_disc(publish_node, tmp_path: Path) -> None:
    # The delay is long enough that a slow start of the second storescu (a loaded CI machine) still lands
    # inside it; what is tested is that the second association restarts the timer.
    node = publish_node(burn={"delay": 8.0})
    first = write_study(tmp_path / "a", "PIDG", "GROUP^ONE", ("CT",), 2)
    second = write_study(tmp_path / "b", "PIDG", "GROUP^ONE", ("MR",), 2, study_date="20240106")
    node.send(tmp_path / "a", "_TP")
    first_due = node.publishing.groups.pending()[0].due
    time.sleep(1.0)  # less than the delay: the second association restarts the group's timer
    node.send(tmp_path / "b", "_TP")
    assert node.publishing.groups.pending()[0].due >= first_due + 0.9
    job = node.wait_state(1, JobState.DONE)
    assert job.source == "group" and job.robot == "primera" and len(job.studies) == 2
    assert check_disc(node, 1) == {i.sop_uid for i in first + second}
    time.sleep(2.0)
    assert len(node.jobs.recent()) == 1 and not node.publishing.groups.pending()


def test_delayed_groups_of_two_patients_make_two_discs(publish_node, tmp_path: Path) -> None:
    node = publish_node(burn={"delay": 2.0})
    one = write_study(tmp_path / "in", "PIDA", "ALPHA^ONE")
    two = write_study(tmp_path / "in", "PIDB", "BETA^TWO")
    node.send(tmp_path / "in", "_TE")
    jobs = [node.wait_state(n, JobState.DONE) for n in (1, 2)]
    assert {j.patient_id for j in jobs} == {"PIDA", "PIDB"}
    by_patient = {j.patient_id: check_disc(node, j.id) for j in jobs}
    assert by_patient == {"PIDA": {i.sop_uid for i in one}, "PIDB": {i.sop_uid for i in two}}


def test_group_by_study_uid(publish_node, tmp_path: Path) -> None:
    node = publish_node(burn={"delay": 2.0, "group_by": "study_uid"})
    write_study(tmp_path / "in", "PIDC", "SAME^PATIENT")
    write_study(tmp_path / "in", "PIDC", "SAME^PATIENT", ("MR",))
    node.send(tmp_path / "in", "_TE")
    jobs = [node.wait_state(n, JobState.DONE) for n in (1, 2)]
    assert [len(j.studies) for j in jobs] == [1, 1] and jobs[0].studies != jobs[1].studies


def test_restart_while_a_group_is_pending_still_burns_exactly_one_disc(publish_node, tmp_path: Path) -> None:
    cfg = publish_config(tmp_path / "var", burn={"delay": 30.0})
    node = publish_node(cfg)
    items = write_study(tmp_path / "in", "PIDR", "RESTART^ME")
    node.send(tmp_path / "in", "_TE")
    group = node.publishing.groups.pending()[0]
    assert group.instances == 2 and node.jobs.recent() == []
    node.stop()  # long before the delay is over
    # The appliance stays down for 27 of the 30 s: the group resumes with the 3 s that remain.
    db = Database(cfg.database)
    db.conn.execute("UPDATE burn_groups SET due = due - 27, last_at = last_at - 27")
    db.close()
    again = publish_node(publish_config(tmp_path / "var", burn={"delay": 30.0}, port=cfg.dicom.port))
    assert [g.id for g in again.publishing.groups.pending()] == [group.id]
    job = again.wait_state(1, JobState.DONE)
    assert check_disc(again, 1) == {i.sop_uid for i in items}
    assert len(again.jobs.recent()) == 1 and again.publishing.groups.pending() == []
    assert "delayed group for PIDR" in again.jobs.events(job.id)[0].reason


def test_aborted_association_burns_nothing(publish_node, tmp_path: Path) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]  # generated at import time

    node = publish_node()
    items = dicomdata.study("PIDX", "ABORT^ED", ("CT",), 2)
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DISCPACS_E")
    assert assoc.is_established
    for inst in items:
        assert assoc.send_c_store(inst.dataset()).Status == 0
    assoc.abort()
    wait_until(lambda: not node.app._received)  # the abort has been handled
    assert node.app.index.counts()["instances"] == 2  # stored, acknowledged, kept
    assert node.jobs.recent() == []


def test_a_study_too_big_for_the_medium_spans_discs(publish_node, tmp_path: Path) -> None:
    # 16 CT images of 64 x 64 x 16 bit (about 10 kB each) in two studies, on a 0.2 MB "CD".
    node = publish_node(burn={"media": "CD", "capacity_mb": {"CD": 0.2}, "capacity_margin": 0})
    big = write_study(tmp_path / "in", "PIDZ", "SPAN^NING", ("CT", "CT"), 5, rows=64, columns=64)
    small = write_study(tmp_path / "in", "PIDZ", "SPAN^NING", ("MR",), 3, rows=64, columns=64, study_date="20240301")
    node.send(tmp_path / "in", "_E")
    job = node.wait_state(1, JobState.DONE)
    assert job.disc_count >= 2
    seen: list[set[str]] = [check_disc(node, 1, n) for n in range(1, job.disc_count + 1)]
    assert set().union(*seen) == {i.sop_uid for i in big + small}
    assert sum(len(s) for s in seen) == len(big + small)  # each instance on exactly one disc
    for n in range(1, job.disc_count + 1):
        folder = node.job_dir(1) / f"disc{n}"
        assert (folder / "disc.iso").stat().st_size <= 200_000
        assert f"Disc:     {n} of {job.disc_count}" in (folder / "fileset" / "README.TXT").read_text()
        assert f"discNumber=Disc {n} of {job.disc_count}" in (folder / "label-epson.dat").read_text("cp1252")
        assert volume_label(folder / "disc.iso").endswith(f"_{n}")
    assert [d.ticket for d in node.jobs.discs(1)] == [f"J1D{n}A1" for n in range(1, job.disc_count + 1)]


def test_spanning_never_splits_a_series_that_fits_on_a_disc(publish_node, tmp_path: Path) -> None:
    node = publish_node(burn={"media": "CD", "capacity_mb": {"CD": 0.2}, "capacity_margin": 0})
    items = write_study(tmp_path / "in", "PIDW", "WHOLE^SERIES", ("CT", "MR", "PT"), 4, rows=64, columns=64)
    node.send(tmp_path / "in", "_E")
    job = node.wait_state(1, JobState.DONE)
    assert job.disc_count >= 2
    series_of = {i.sop_uid: i.series_uid for i in items}
    discs_of_series: dict[str, set[int]] = {}
    for n in range(1, job.disc_count + 1):
        for uid in check_disc(node, 1, n):
            discs_of_series.setdefault(series_of[uid], set()).add(n)
    assert all(len(d) == 1 for d in discs_of_series.values()), discs_of_series


def test_custom_route_suffix_is_data_driven(publish_node, tmp_path: Path) -> None:
    data = tmp_path / "pub"
    robots = {"epson": robot_table(data, "epson"), "epson-2": robot_table(data, "epson-2", kind="epson")}
    node = publish_node(
        publish_config(data, robots=robots, burn={"routes": {"_E2": {"robot": "epson-2", "copies": 2}}})
    )
    write_study(tmp_path / "in", "PIDQ", "SECOND^ROBOT")
    node.send(tmp_path / "in", "_E2")
    job = node.wait_state(1, JobState.DONE)
    assert (job.robot, job.copies) == ("epson-2", 2)
    assert "COPIES=2" in (node.job_dir(1) / "disc1" / "J1D1A1.JDF").read_text()
    # _P routes to "primera", which is not configured here: stored, not burned, nothing lost.
    write_study(tmp_path / "p", "PIDQ2", "NO^PRIMERA")
    node.send(tmp_path / "p", "_P")
    wait_until(lambda: not node.app._received)
    assert len(node.jobs.recent()) == 1 and node.app.index.counts()["instances"] == 4
