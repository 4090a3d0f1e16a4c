"""Disc authoring pieces: transcoding per media profile, DICOMDIR records and validation, ISO names, planning."""

from __future__ import annotations

import io
import os
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from publishing_support import PublishNode, dcmdump_ok, iso_files, publish_config, publish_node, volume_label
from pydicom import dcmread
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
)

from appliance.discs.content import Content, InstanceInfo, PatientInfo, SeriesInfo, StudyInfo
from appliance.discs.fileset import allowed_syntaxes, stage_instance, validate_fileset, write_fileset
from appliance.discs.iso import build_iso, volume_id
from appliance.discs.jobs import JobState
from appliance.discs.spanning import Planner, choose_medium
from appliance.errors import AuthoringError

import dicomdata
from conftest import dcmtk

__all__ = ["publish_node"]
CD = allowed_syntaxes("STD-GEN-CD")


def instance_file(folder: Path, ts: str = ExplicitVRLittleEndian, name: str = "a.dcm", **kw: object) -> Path:
    inst = dicomdata.study("PIDT", "TRANS^CODE", ("CT",), 1, rows=64, columns=64, **kw)[0]
    ds = inst.dataset()
    path = folder / name
    if ts == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = UID(ts)
        ds.save_as(path, enforce_file_format=True)
    elif ts in (RLELossless, JPEG2000Lossless):
        ds.compress(ts, generate_instance_uid=False)
        ds.save_as(path, enforce_file_format=True)
    elif ts == JPEGLosslessSV1:
        plain = folder / f"plain-{name}"
        ds.save_as(plain, enforce_file_format=True)
        dcmtk("dcmcjpeg", "+e1", str(plain), str(path), check=True)
    elif ts == "1.2.840.10008.1.2.2":  # big endian: values of OW swapped by hand, as pydicom expects
        ds.PixelData = np.frombuffer(ds.PixelData, "<u2").astype(">u2").tobytes()
        ds.file_meta.TransferSyntaxUID = UID(ts)
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize(
    "ts", [ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless, JPEGLosslessSV1, "1.2.840.10008.1.2.2"]
)
def test_instances_are_transcoded_losslessly_for_std_gen_cd(tmp_path: Path, ts: str) -> None:
    reference = dcmread(instance_file(tmp_path, ExplicitVRLittleEndian, "ref.dcm"))
    source = instance_file(tmp_path, ts)
    original = dcmread(source)
    assert original.file_meta.TransferSyntaxUID == ts
    staged = stage_instance(source, tmp_path / "staged", str(original.SOPInstanceUID), ts, CD)
    assert staged.transcoded and staged.transfer_syntax == ExplicitVRLittleEndian
    out = dcmread(staged.path)
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.SOPInstanceUID == original.SOPInstanceUID  # a lossless change keeps the instance
    assert np.array_equal(out.pixel_array, original.pixel_array)
    assert out.pixel_array.shape == reference.pixel_array.shape == (64, 64)
    assert dcmread(source).file_meta.TransferSyntaxUID == ts  # the store's file is untouched


def test_allowed_syntaxes_are_linked_not_copied(tmp_path: Path) -> None:
    source = instance_file(tmp_path, JPEGLosslessSV1)
    staged = stage_instance(source, tmp_path / "staged", "x", JPEGLosslessSV1, allowed_syntaxes("STD-GEN-DVD-JPEG"))
    assert not staged.transcoded and staged.transfer_syntax == JPEGLosslessSV1
    assert staged.path.stat().st_ino == source.stat().st_ino
    jpeg_on_cd = stage_instance(source, tmp_path / "cd", "x", JPEGLosslessSV1, CD)
    assert jpeg_on_cd.transcoded


def test_a_missing_store_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AuthoringError, match="no longer in the store"):
        stage_instance(tmp_path / "gone.dcm", tmp_path / "x", "1.2.3", ExplicitVRLittleEndian, CD)


def staged_set(tmp_path: Path, count: int = 3, **kw: object) -> list:
    pool = tmp_path / "pool"
    pool.mkdir()
    out = []
    for n, inst in enumerate(dicomdata.study("PIDV", "VALID^ATE", ("CT",), count, **kw)):
        path = inst.write(tmp_path)
        out.append(stage_instance(path, pool / f"{n:08d}", inst.sop_uid, ExplicitVRLittleEndian, CD))
    return out


def test_fileset_records_match_files_and_dcmdump_reads_it(tmp_path: Path) -> None:
    staged = staged_set(tmp_path)
    placed = write_fileset(tmp_path / "fs", "TESTSET", staged)
    assert set(placed) == {s.sop_uid for s in staged}
    assert all(p.parent.parent.parent.parent == tmp_path / "fs" for p in placed.values())  # PT/ST/SE/IM
    assert validate_fileset(tmp_path / "fs", CD, "/usr/bin/dcmdump") == 3
    dump = dcmdump_ok(tmp_path / "fs" / "DICOMDIR")
    assert "(0004,1130) CS [TESTSET]" in dump


def test_missing_type1_record_values_are_supplied(tmp_path: Path) -> None:
    items = dicomdata.study("", "NO^IDS", ("CT",), 2)
    pool = tmp_path / "pool"
    pool.mkdir()
    staged = []
    for n, inst in enumerate(items):
        ds = inst.dataset()
        for keyword in ("PatientID", "StudyID", "SeriesNumber", "InstanceNumber"):
            delattr(ds, keyword)
        ds.StudyTime = ""
        path = tmp_path / f"{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        staged.append(stage_instance(path, pool / f"{n}", inst.sop_uid, ExplicitVRLittleEndian, CD))
    write_fileset(tmp_path / "fs", "NOIDS", staged)
    assert validate_fileset(tmp_path / "fs", CD, "/usr/bin/dcmdump") == 2
    dump = dcmdump_ok(tmp_path / "fs" / "DICOMDIR")
    assert "PatientID" in dump and "UNKNOWN" in dump


def test_validation_finds_a_file_that_does_not_match_its_record(tmp_path: Path) -> None:
    staged = staged_set(tmp_path)
    placed = write_fileset(tmp_path / "fs", "BROKEN", staged)
    files = sorted(placed.values())
    os.replace(files[0], tmp_path / "moved")
    files[1].write_bytes(files[2].read_bytes())
    with pytest.raises(AuthoringError) as err:
        validate_fileset(tmp_path / "fs", CD, None)
    message = str(err.value)
    assert "\\".join(files[0].relative_to(tmp_path / "fs").parts) + ": the file is missing" in message
    assert "\\".join(files[1].relative_to(tmp_path / "fs").parts) + ": SOP Instance UID" in message
    assert "differs from the DICOMDIR's" in message


def test_validation_refuses_a_transfer_syntax_the_profile_does_not_allow(tmp_path: Path) -> None:
    source = instance_file(tmp_path, RLELossless)
    pool = tmp_path / "pool"
    pool.mkdir()
    kept = stage_instance(
        source,
        pool / "a",
        str(dcmread(source).SOPInstanceUID),
        RLELossless,
        frozenset({ExplicitVRLittleEndian, RLELossless}),
    )
    write_fileset(tmp_path / "fs", "RLE", [kept])
    with pytest.raises(AuthoringError, match="not allowed by the media profile"):
        validate_fileset(tmp_path / "fs", CD, None)


def test_iso_keeps_real_names_in_joliet_and_level1_names_in_iso9660(tmp_path: Path) -> None:
    root = tmp_path / "disc"
    (root / "Weasis Portable" / "lib").mkdir(parents=True)
    (root / "Weasis Portable" / "lib" / "felix-framework.jar").write_bytes(b"jar")
    (root / "viewer.exe").write_bytes(b"MZ")
    (root / "Viewer.EXE.config").write_bytes(b"<x/>")
    (root / "README.TXT").write_text("hello")
    size = build_iso(root, tmp_path / "out.iso", volume_id("pid-123/4"))
    assert size == (tmp_path / "out.iso").stat().st_size and size % 2048 == 0
    assert volume_label(tmp_path / "out.iso") == "PID_123_4"
    joliet = iso_files(tmp_path / "out.iso", joliet=True)
    assert joliet["/Weasis Portable/lib/felix-framework.jar"] == b"jar"
    assert joliet["/viewer.exe"] == b"MZ" and joliet["/README.TXT"] == b"hello"
    level1 = iso_files(tmp_path / "out.iso")
    assert set(level1) == {"/WEASIS_P/LIB/FELIX_FR.JAR", "/VIEWER.EXE", "/VIEWER_E.CON", "/README.TXT"}


def test_iso_refuses_a_tree_deeper_than_iso9660_allows(tmp_path: Path) -> None:
    deep = tmp_path / "disc" / "a" / "b" / "c" / "d" / "e" / "f" / "g" / "h"
    deep.mkdir(parents=True)
    (deep / "x.txt").write_text("x")
    with pytest.raises(AuthoringError, match="folder levels deep"):
        build_iso(tmp_path / "disc", tmp_path / "out.iso", "DEEP")
    assert not (tmp_path / "out.iso").exists()


def _content(sizes: list[list[int]]) -> Content:
    """One patient; one study per entry; one series per study with instances of the given sizes."""
    studies = []
    for s, series_sizes in enumerate(sizes):
        instances = [
            InstanceInfo(f"{s}.{i}", "1.2", ExplicitVRLittleEndian, "", size, str(i))
            for i, size in enumerate(series_sizes)
        ]
        studies.append(
            StudyInfo(f"st{s}", "20240101", "", "", "", "1", [SeriesInfo(f"se{s}", "CT", "1", "", instances)])
        )
    return Content([PatientInfo("P", "N", "", "", studies)])


def test_planner_keeps_studies_whole_and_splits_only_what_cannot_fit() -> None:
    content = _content([[40_000] * 2, [40_000] * 2, [40_000] * 6])
    plans = Planner(250_000, 20_000, lambda i: i.size).plan(content)
    ids = [[i.sop_uid for i in p.instances] for p in plans]
    assert ids[0] == ["0.0", "0.1", "1.0", "1.1"]  # two whole studies
    assert all(uid.startswith("2.") for disc in ids[1:] for uid in disc)  # the big series is split over the rest
    assert sorted(u for d in ids for u in d) == sorted(i.sop_uid for i in content.instances())
    assert len(plans) == 3 and all(p.estimate <= 250_000 for p in plans)


def test_planner_refuses_an_instance_bigger_than_a_disc() -> None:
    with pytest.raises(AuthoringError, match="bigger than a disc"):
        Planner(100_000, 20_000, lambda i: i.size).plan(_content([[150_000]]))


def test_medium_choice_by_size_unless_pinned() -> None:
    assert choose_medium(500_000_000, "auto", ("CD", "DVD", "BD"), {}, 3) == "CD"
    assert choose_medium(690_000_000, "auto", ("CD", "DVD", "BD"), {}, 3) == "DVD"
    assert choose_medium(9_000_000_000, "auto", ("CD", "DVD", "DVD-DL", "BD"), {}, 3) == "BD"
    assert choose_medium(90_000_000_000, "auto", ("CD", "DVD"), {}, 3) == "DVD"  # spans DVDs
    assert choose_medium(100, "DVD", ("CD",), {}, 3) == "DVD"
    assert choose_medium(500_000_000, "auto", ("CD", "DVD"), {"CD": 400}, 3) == "DVD"


@pytest.mark.dcmtk
def test_disc_with_a_viewer_and_implicit_vr_input(publish_node, tmp_path: Path) -> None:
    viewer = tmp_path / "viewer"
    (viewer / "bin").mkdir(parents=True)
    (viewer / "bin" / "Start Viewer.exe").write_bytes(b"MZ viewer")
    (viewer / "autorun.inf").write_text("[autorun]\nopen=bin\\Start Viewer.exe\n")
    (viewer / "README.TXT").write_text("the viewer's own readme must not replace ours")
    node: PublishNode = publish_node(
        burn={"viewer_dir": str(viewer), "viewer_entry": "bin/Start Viewer.exe", "contact": "Radiology, +1 555 0100"}
    )
    src = tmp_path / "in"
    src.mkdir()
    items = dicomdata.study("PIDI", "IMPLICIT^VR", ("CT",), 2)
    for inst in items:
        inst.write(src)
    node.send(src, "_E", "-xi")  # propose Implicit VR Little Endian only
    stored = node.app.index.lookup(items[0].sop_uid)
    assert stored is not None and stored.transfer_syntax == ImplicitVRLittleEndian
    node.wait_state(1, JobState.DONE)
    root = node.job_dir(1) / "disc1" / "fileset"
    readme = (root / "README.TXT").read_text()
    assert "Start bin/Start Viewer.exe from this disc" in readme and "Radiology, +1 555 0100" in readme
    raw = (root / "INDEX.HTM").read_bytes()
    assert raw.count(b"\n") == raw.count(b"\r\n")  # CR LF throughout, no bare LF
    index = raw.decode()
    assert '<a href="bin/Start%20Viewer.exe">Open the viewer</a>' in index
    page = ElementTree.fromstring(index.encode())  # well-formed XHTML
    assert "IMPLICIT, VR" in "".join(page.itertext())
    files = iso_files(node.job_dir(1) / "disc1" / "disc.iso", joliet=True)
    assert files["/bin/Start Viewer.exe"] == b"MZ viewer" and "/autorun.inf" in files
    assert files["/README.TXT"].startswith(b"MEDICAL IMAGES ON THIS DISC")
    for path, data in files.items():
        if path.startswith("/PT"):
            assert dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert "DICOM + VIEWER" in (node.job_dir(1) / "disc1" / "label-epson.dat").read_text("cp1252")


@pytest.mark.dcmtk
def test_jpeg_profile_keeps_jpeg_lossless_on_a_dvd(tmp_path: Path, publish_node) -> None:
    cfg = publish_config(tmp_path / "var", burn={"profile": "STD-GEN-DVD-JPEG", "media": "DVD"})
    node = publish_node(cfg)
    src = tmp_path / "in"
    src.mkdir()
    path = instance_file(src, JPEGLosslessSV1)
    (src / f"plain-{path.name}").unlink()
    node.send(src, "_E", "-xs")  # propose JPEG lossless SV1 (the file's own syntax)
    job = node.wait_state(1, JobState.DONE)
    assert job.media == "DVD"
    placed = [p for p in (node.job_dir(1) / "disc1" / "fileset").rglob("IM*")]
    assert len(placed) == 1 and dcmread(placed[0]).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    assert "DISC_TYPE=DVD" in (node.job_dir(1) / "disc1" / "J1D1A1.JDF").read_text()
