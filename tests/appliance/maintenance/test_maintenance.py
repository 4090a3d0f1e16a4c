"""Maintenance: weekly windows, archiving (real compression, decoded again by DCMTK/GDCM and fetched back by
getscu), deletion with its rules and audit lines, low-space removal on a real small file system, and the dry
run ``appliance maintenance plan``."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE
from upkeep_support import cli, config, getscu_study, mount_tmpfs, started, store, umount, write_toml

from appliance.cli.upkeep import Upkeep
from appliance.config import Config
from appliance.errors import ConfigError
from appliance.maintenance.windows import Schedule, hours_of

import dicomdata
from conftest import HOST, Node, dcmtk, indexed

pytestmark = pytest.mark.dcmtk

# -- windows ---------------------------------------------------------------------------------------------------


def test_windows_cover_the_hours_of_the_week() -> None:
    s = Schedule(["Mon-Fri 22:00-06:00", "Sat-Sun 00:00-24:00"])
    friday = dt.datetime(2026, 12, 4)  # a Friday
    assert s.is_open(friday.replace(hour=22)) and s.is_open(friday.replace(hour=23, minute=59))
    assert not s.is_open(friday.replace(hour=12))
    assert s.is_open(dt.datetime(2026, 12, 8, 5, 59)) and not s.is_open(dt.datetime(2026, 12, 8, 6))  # Tuesday
    assert not s.is_open(dt.datetime(2026, 12, 7, 5))  # Monday morning: Sunday's window ended at 24:00
    assert s.opened_at(dt.datetime(2026, 12, 5, 3, 30)) == friday.replace(hour=22)
    assert s.next_open(friday.replace(hour=12)) == friday.replace(hour=22)
    assert len(hours_of(["Mon 22:00-06:00"])) == 8
    assert hours_of(["Sun 23:00-01:00"]) == {167, 0}
    grid = s.grid()
    assert len(grid) == 7 and all(len(row) == 24 for row in grid) and all(grid[5]) and not grid[2][12]


@pytest.mark.parametrize(
    "bad", ["Mon-Fri 22:30-06:00", "Monday 22:00-06:00", "Mon 25:00-01:00", "Mon 06:00-06:00", "22:00-06:00"]
)
def test_bad_windows_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="maintenance"):
        config(tmp_path, maintenance={"archiving": [bad]})


def test_lossy_archiving_needs_confirmation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="confirm_lossy"):
        config(tmp_path, archiving={"compression": "jpeg2000-lossy"})
    assert config(tmp_path, archiving={"compression": "jpeg2000-lossy", "confirm_lossy": True}).archiving


# -- archiving -------------------------------------------------------------------------------------------------

#: (bits stored, signed, frames, photometric interpretation)
KINDS = [
    (8, False, 1, "MONOCHROME2"),
    (12, False, 1, "MONOCHROME2"),
    (16, False, 1, "MONOCHROME2"),
    (16, True, 1, "MONOCHROME2"),
    (12, True, 3, "MONOCHROME2"),
    (8, False, 1, "RGB"),
    (8, False, 2, "YBR_FULL"),
]


def _image(study_uid: str, series_uid: str, bits: int, signed: bool, frames: int, photometric: str) -> Dataset:
    """A synthetic image with a full-range ramp (a clipped or lossy round trip shows)."""
    color = photometric != "MONOCHROME2"
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage if color else CTImageStorage
    ds.SOPInstanceUID = dicomdata.uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = "ARCHIVE^TEST"
    ds.PatientID = "PARCH"
    ds.Modality = "OT" if color else "CT"
    ds.Rows, ds.Columns = 48, 40
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = int(signed)
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = photometric
    if color:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    shape = (frames, 48, 40, 3) if color else (frames, 48, 40)
    count = int(np.prod(shape))
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    values = (np.arange(count, dtype=np.int64) * 7919) % (high - low + 1) + low
    dtype = {(8, False): np.uint8, (8, True): np.int8}.get(
        (ds.BitsAllocated, signed), np.int16 if signed else np.uint16
    )
    ds.PixelData = values.astype(dtype).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _raw_pixels(ds: Dataset) -> bytes:
    """Decoded pixel bytes in the stored colour space (no YBR -> RGB conversion)."""
    from pydicom.pixels import pixel_array

    return bytes(pixel_array(ds, as_rgb=False).tobytes())


def _send(port: int, datasets: list[Dataset], folder: Path | None = None) -> None:
    """C-STORE the data sets with DCMTK's storescu (from files), or with pynetdicom when no folder is given."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for ds in datasets:
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        dcmtk("storescu", "-aec", "DISCPACS", "+sd", HOST, str(port), str(folder), check=True)
        return
    ae = AE(ae_title="ARCHIVER")
    for cls in (CTImageStorage, SecondaryCaptureImageStorage):
        ae.add_requested_context(cls, [ExplicitVRLittleEndian])
    assoc = ae.associate(HOST, port, ae_title="DISCPACS")
    assert assoc.is_established
    try:
        for ds in datasets:
            assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()


def _run_window(node: Node, cfg: Config, kind: str = "archiving") -> Upkeep:
    upkeep = Upkeep(node.app, cfg, workers=0)
    upkeep.engine.collect(kind, force=True)
    for task in upkeep.engine.tasks.unfinished():
        upkeep.engine.run_task(task)
    return upkeep


def _second_decoder(path: Path, target: str, out: Path) -> Dataset:
    """The file decoded by another implementation: DCMTK for JPEG, JPEG-LS and RLE, GDCM for JPEG 2000, zlib (pydicom)
    for deflate."""
    if target == JPEGLSLossless:
        dcmtk("dcmdjpls", str(path), str(out), check=True)
    elif target == RLELossless:
        dcmtk("dcmdrle", str(path), str(out), check=True)
    elif target == JPEGLosslessSV1:
        dcmtk("dcmdjpeg", "+cn", str(path), str(out), check=True)  # compare in the stored colour space
    elif target == JPEG2000Lossless:
        if not shutil.which("gdcmconv"):
            pytest.skip("gdcmconv (libgdcm-tools) is not installed")
        subprocess.run(["gdcmconv", "--raw", str(path), str(out)], check=True, capture_output=True)
    else:
        shutil.copyfile(path, out)
    return dcmread(out)


@pytest.mark.parametrize(
    "compression,target",
    [
        ("rle", RLELossless),
        ("jpeg-ls-lossless", JPEGLSLossless),
        ("jpeg2000-lossless", JPEG2000Lossless),
        ("jpeg-lossless", JPEGLosslessSV1),
        ("deflate", DeflatedExplicitVRLittleEndian),
    ],
)
def test_lossless_archiving_keeps_uids_and_pixels(tmp_path: Path, compression: str, target: str) -> None:
    cfg = config(tmp_path / "var", archiving={"compression": compression})
    node = started(cfg)
    try:
        study, series = dicomdata.uid(), dicomdata.uid()
        originals = [_image(study, series, *kind) for kind in KINDS]
        _send(node.port, originals, tmp_path / "sent")
        upkeep = _run_window(node, cfg)
        for n, orig in enumerate(originals):
            inst = indexed(node.app, orig.SOPInstanceUID)
            if target == JPEG2000Lossless and KINDS[n][3] == "YBR_FULL":
                # Not a colour space JPEG 2000 carries (PS3.5 8.2.4): left as received, with the reason.
                assert inst.transfer_syntax == ExplicitVRLittleEndian
                items = upkeep.engine.tasks.items(1)
                assert "YBR_FULL" in items[0][2]
                continue
            assert inst is not None and inst.transfer_syntax == target, (KINDS[n], inst)
            stored = node.app.file_path(inst)
            ds = dcmread(stored)
            assert ds.file_meta.TransferSyntaxUID == target
            assert ds.SOPInstanceUID == orig.SOPInstanceUID and ds.SeriesInstanceUID == series
            assert "LossyImageCompression" not in ds or ds.LossyImageCompression == "00"
            if target == JPEG2000Lossless and KINDS[n][3] == "RGB":
                # PS3.5 8.2.4: RGB is compressed with the reversible colour transform, and says so.
                assert ds.PhotometricInterpretation == "YBR_RCT"
            elif target != DeflatedExplicitVRLittleEndian:
                assert ds.PhotometricInterpretation == KINDS[n][3]
            again = _second_decoder(stored, target, tmp_path / f"dec{n}.dcm")
            assert _raw_pixels(again) == _raw_pixels(orig), f"{compression} changed the pixels of {KINDS[n]}"
            assert _raw_pixels(ds) == _raw_pixels(orig)
        # Index and disc agree: every file is one the index names; the old ones are gone.
        assert set(node.app.store_area.iter_files()) == node.app.index.all_paths()
        sizes = {o.SOPInstanceUID: indexed(node.app, o.SOPInstanceUID).size for o in originals}
        assert all(node.app.file_path(indexed(node.app, u)).stat().st_size == n for u, n in sizes.items())
        study_row = node.app.index.study(study)
        assert study_row is not None
        study_size = study_row["size"]
        assert study_size == sum(sizes.values()), "the study size counter missed the new file sizes"
        # DCMTK fetches the compressed instances back and decodes them to the original pixels.
        got = getscu_study(node.port, study, tmp_path / "get")
        assert len(got) == len(originals)
        by_uid = {str(o.SOPInstanceUID): _raw_pixels(o) for o in originals}
        for path in got:
            ds = dcmread(path)
            assert _raw_pixels(ds) == by_uid[str(ds.SOPInstanceUID)]
    finally:
        node.stop()


def test_lossy_archiving_is_marked(tmp_path: Path) -> None:
    cfg = config(tmp_path / "var", archiving={"compression": "jpeg2000-lossy", "confirm_lossy": True})
    node = started(cfg)
    try:
        ds = _image(dicomdata.uid(), dicomdata.uid(), 12, False, 1, "MONOCHROME2")
        _send(node.port, [ds])
        _run_window(node, cfg)
        inst = indexed(node.app, ds.SOPInstanceUID)
        assert inst.transfer_syntax == JPEG2000
        stored = dcmread(node.app.file_path(inst))
        assert stored.SOPInstanceUID == ds.SOPInstanceUID
        assert stored.LossyImageCompression == "01"
        assert stored.LossyImageCompressionMethod == "ISO_15444_1"
        assert float(stored.LossyImageCompressionRatio) > 1
    finally:
        node.stop()


def _received_days_ago(node: Node, sop_uids: list[str], days: float) -> None:
    """Make instances look received ``days`` ago (the test's stand-in for waiting)."""
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with node.app.db.transaction() as conn:
        conn.executemany("UPDATE instances SET received = ? WHERE sop_uid = ?", [(when, u) for u in sop_uids])


def test_uncompressed_days_new_images_and_a_changed_level(tmp_path: Path) -> None:
    cfg = config(tmp_path / "var", archiving={"compression": "rle", "uncompressed_days": 3})
    node = started(cfg)
    try:
        items = dicomdata.study("PDAYS", "DAYS^TEST", ("CT", "MR"), 2)
        assert store(node.port, items) == [0] * 4
        ct = [i.sop_uid for i in items if i.modality == "CT"]
        _received_days_ago(node, ct, 4)
        _run_window(node, cfg)
        syntaxes = {i.sop_uid: indexed(node.app, i.sop_uid).transfer_syntax for i in items}
        assert {syntaxes[u] for u in ct} == {RLELossless}
        assert RLELossless not in {s for u, s in syntaxes.items() if u not in ct}, "too young to compress"
        # A new image in the compressed series is compressed at the next window.
        late = dicomdata.Instance(
            "PDAYS", "DAYS^TEST", items[0].study_uid, items[0].series_uid, dicomdata.uid(), instance_number=9
        )
        assert store(node.port, [late]) == [0]
        _received_days_ago(node, [late.sop_uid], 4)
        _run_window(node, cfg)
        assert indexed(node.app, late.sop_uid).transfer_syntax == RLELossless
        # A changed level leaves archived series alone until "appliance maintenance restart archiving".
        node.stop()
        cfg2 = config(
            tmp_path / "var", node.port, archiving={"compression": "jpeg-ls-lossless", "uncompressed_days": 3}
        )
        node = started(cfg2)
        _run_window(node, cfg2)
        assert {indexed(node.app, u).transfer_syntax for u in ct} == {RLELossless}
        toml = write_toml(
            tmp_path / "a.toml",
            tmp_path / "var",
            node.port,
            archiving={"compression": "jpeg-ls-lossless", "uncompressed_days": 3},
        )
        done = cli("maintenance", "restart", "archiving", "--config", str(toml))
        assert done.returncode == 0, done.stderr
        _run_window(node, cfg2)
        assert {indexed(node.app, u).transfer_syntax for u in ct} == {JPEGLSLossless}
    finally:
        node.stop()


# -- deletion --------------------------------------------------------------------------------------------------


def _audit(node: Node) -> list[dict[str, Any]]:
    return [dict(r) for r in node.app.db.conn.execute("SELECT * FROM audit_log WHERE action = 'series.delete'")]


def test_deletion_after_store_days_with_its_rules(tmp_path: Path) -> None:
    cfg = config(tmp_path / "var", deletion={"store_days": 30})
    node = started(cfg)
    try:
        old = dicomdata.study("POLD", "OLD^ONE", ("CT",), 3)
        linked = dicomdata.study("PLINK", "LINKED^ONE", ("CT",), 1)
        burning = dicomdata.study("PBURN", "BURN^ONE", ("CT",), 1)
        young = dicomdata.study("PYOUNG", "YOUNG^ONE", ("CT",), 1)
        assert store(node.port, old + linked + burning + young) == [0] * 6
        _received_days_ago(node, [i.sop_uid for i in old + linked + burning], 31)
        from appliance.discs.jobs import JobStore
        from appliance.site.service import Site

        site = Site(node.app)
        site.tokens.ensure(linked[0].study_uid, "20991231")  # a live patient link
        jobs = JobStore(node.app.db)
        jobs.create("epson", 1, [burning[0].sop_uid], source="manual")
        old_paths = [node.app.file_path(indexed(node.app, i.sop_uid)) for i in old]
        thumb = site.pictures.thumbs._file(old[0].sop_uid, indexed(node.app, old[0].sop_uid).path)
        thumb.parent.mkdir(parents=True, exist_ok=True)
        thumb.write_bytes(b"jpeg")
        toml = write_toml(tmp_path / "a.toml", tmp_path / "var", node.port, deletion={"store_days": 30})
        plan = cli("maintenance", "plan", "--config", str(toml))
        assert plan.returncode == 0, plan.stderr
        assert f"delete {old[0].series_uid}" in plan.stdout
        assert f"keep {linked[0].series_uid}: the study has a live patient link" in plan.stdout
        assert f"keep {burning[0].series_uid}: in a disc job that is not done" in plan.stdout
        assert young[0].series_uid not in plan.stdout

        upkeep = Upkeep(node.app, cfg, site, workers=0)
        upkeep.engine.collect("deletion", force=True)
        for task in upkeep.engine.tasks.unfinished():
            upkeep.engine.run_task(task)
        assert node.app.index.study(old[0].study_uid) is None
        assert not any(p.exists() for p in old_paths)
        assert not thumb.exists(), "the thumbnail outlived its instance"
        for keep in (linked, burning, young):
            assert node.app.index.lookup(keep[0].sop_uid) is not None
        audit = _audit(node)
        assert len(audit) == 1 and audit[0]["actor"] == "maintenance" and old[0].series_uid in audit[0]["detail"]
        assert "older than 30 day(s)" in audit[0]["detail"] and audit[0]["study_uid"] == old[0].study_uid
        assert set(node.app.store_area.iter_files()) == node.app.index.all_paths()
    finally:
        node.stop()


def test_delete_shared_lifts_the_patient_link_rule(tmp_path: Path) -> None:
    cfg = config(tmp_path / "var", deletion={"store_days": 1, "delete_shared": True})
    node = started(cfg)
    try:
        items = dicomdata.study("PSHARED", "SHARED^ONE", ("CT",), 1)
        assert store(node.port, items) == [0]
        _received_days_ago(node, [items[0].sop_uid], 2)
        from appliance.site.service import Site

        site = Site(node.app)
        site.tokens.ensure(items[0].study_uid, "20991231")
        upkeep = Upkeep(node.app, cfg, site, workers=0)
        upkeep.engine.collect("deletion", force=True)
        for task in upkeep.engine.tasks.unfinished():
            upkeep.engine.run_task(task)
        assert node.app.index.study(items[0].study_uid) is None
        assert site.tokens.get(items[0].study_uid) is None, "the patient link outlived the study"
    finally:
        node.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "8m")
    try:
        yield disk
    finally:
        umount(disk)


def test_low_space_removal_deletes_the_oldest_at_once(small_disk: Path, tmp_path: Path) -> None:
    cfg = config(
        tmp_path / "var",
        storage=[{"path": str(small_disk / "s"), "free_space_limit_mb": 1}],
        deletion={"low_space_removal": True, "low_space_threshold_mb": 4},
        maintenance={"deletion": ["Mon 03:00-04:00"]},
    )
    node = started(cfg)
    try:
        series = [dicomdata.study(f"PLOW{n}", "LOW^SPACE", ("CT",), 4, rows=256, columns=256) for n in range(8)]
        for n, items in enumerate(series):  # about 0.5 MB per series; 8 of them leave under 4 MB of 8
            assert store(node.port, items) == [0] * 4
            _received_days_ago(node, [i.sop_uid for i in items], 10 - n)
        storage = node.app.store_area.all()[0]
        assert storage.free_bytes() < 4 * 1024 * 1024
        upkeep = Upkeep(node.app, cfg, workers=0)
        upkeep.engine.run_once()  # no window is open: low space is handled anyway
        assert storage.free_bytes() >= 4 * 1024 * 1024
        gone = [s for s in series if node.app.index.lookup(s[0].sop_uid) is None]
        assert gone and gone == series[: len(gone)], "not the oldest series were deleted"
        assert len(gone) < len(series)
        assert all("low space" in a["detail"] for a in _audit(node)) and len(_audit(node)) == len(gone)
        assert set(node.app.store_area.iter_files()) == node.app.index.all_paths()
    finally:
        node.stop()


def test_a_compression_without_an_encoder_is_refused_with_the_usable_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance import codecs
    from appliance.errors import CodecError

    monkeypatch.setattr(codecs, "HAVE_GDCM", False)  # as on a machine without python-gdcm
    with pytest.raises(CodecError, match="no encoder installed") as refused:
        codecs.archive_syntax("jpeg-lossless")
    assert "jpeg-ls-lossless" in str(refused.value) and "jpeg-lossy" in str(refused.value)


def test_jpeg_lossless_is_planned_from_the_command_line(tmp_path: Path) -> None:
    toml = write_toml(tmp_path / "a.toml", tmp_path / "var", 11112, archiving={"compression": "jpeg-lossless"})
    done = cli("maintenance", "plan", "--config", str(toml))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "RGB"])
def test_lossy_jpeg_archiving_is_marked(tmp_path: Path, photometric: str) -> None:
    cfg = config(tmp_path / "var", archiving={"compression": "jpeg-lossy", "confirm_lossy": True})
    node = started(cfg)
    try:
        ds = _image(dicomdata.uid(), dicomdata.uid(), 8, False, 1, photometric)
        deep = _image(dicomdata.uid(), dicomdata.uid(), 16, False, 1, "MONOCHROME2")
        _send(node.port, [ds, deep])
        upkeep = _run_window(node, cfg)
        inst = indexed(node.app, ds.SOPInstanceUID)
        assert inst.transfer_syntax == JPEGBaseline8Bit
        stored = dcmread(node.app.file_path(inst))
        assert stored.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
        assert stored.SOPInstanceUID == ds.SOPInstanceUID
        assert stored.LossyImageCompression == "01"
        assert stored.LossyImageCompressionMethod == "ISO_10918_1"
        assert float(stored.LossyImageCompressionRatio) > 0
        assert stored.PhotometricInterpretation == ("YBR_FULL_422" if photometric == "RGB" else "MONOCHROME2")
        dcmtk("dcmdjpeg", str(node.app.file_path(inst)), str(tmp_path / "dec.dcm"), check=True)
        assert dcmread(tmp_path / "dec.dcm").pixel_array.shape == stored.pixel_array.shape
        # A 16-bit image cannot be JPEG Baseline: left as received, with the reason in the task.
        assert indexed(node.app, deep.SOPInstanceUID).transfer_syntax == ExplicitVRLittleEndian
        reasons = " ".join(str(item[2]) for task in (1, 2) for item in upkeep.engine.tasks.items(task))
        assert "8-bit" in reasons
    finally:
        node.stop()


def test_a_series_not_yet_forwarded_is_kept_until_committed(tmp_path: Path) -> None:
    from appliance.forwarding.queue import ForwardQueue

    cfg = config(tmp_path / "var", deletion={"store_days": 1})
    node = started(cfg)
    try:
        queue = ForwardQueue(node.app.db)
        queue.set_enabled(True)  # what [forwarding] enabled does: every indexed instance is queued
        items = dicomdata.study("PFWD", "FORWARD^ME", ("CT",), 2)
        assert store(node.port, items) == [0, 0]
        _received_days_ago(node, [i.sop_uid for i in items], 2)
        upkeep = Upkeep(node.app, cfg, workers=0)
        assert upkeep.deleter.candidates()[1] == {items[0].series_uid: "not yet forwarded"}
        uids = [i.sop_uid for i in items]
        queue.mark_sent(uids, "1.2.3.4")  # sent, but the regional server has not committed yet
        upkeep.engine.collect("deletion", force=True)
        assert node.app.index.lookup(items[0].sop_uid) is not None
        queue.apply_report("1.2.3.4", uids, {}, 10, 100)
        upkeep.engine.collect("deletion", force=True)
        for task in upkeep.engine.tasks.unfinished():
            upkeep.engine.run_task(task)
        assert node.app.index.lookup(items[0].sop_uid) is None
    finally:
        node.stop()


def test_remove_not_forwarded_lifts_the_forwarding_rule(tmp_path: Path) -> None:
    from appliance.forwarding.queue import ForwardQueue

    cfg = config(tmp_path / "var", deletion={"store_days": 1, "remove_not_forwarded": True})
    node = started(cfg)
    try:
        ForwardQueue(node.app.db).set_enabled(True)
        items = dicomdata.study("PFWD2", "FORWARD^ME", ("CT",), 1)
        assert store(node.port, items) == [0]
        _received_days_ago(node, [items[0].sop_uid], 2)
        upkeep = Upkeep(node.app, cfg, workers=0)
        assert upkeep.deleter.due() == [items[0].series_uid]
    finally:
        node.stop()


def test_a_window_collects_once_and_a_started_task_runs_to_its_end(tmp_path: Path) -> None:
    cfg = config(tmp_path / "var", archiving={"compression": "rle"}, maintenance={"archiving": ["Mon-Fri 22:00-06:00"]})
    node = started(cfg)
    try:
        first = dicomdata.study("PWIN", "WINDOW^ONE", ("CT",), 2)
        assert store(node.port, first) == [0, 0]
        engine = Upkeep(node.app, cfg, workers=0).engine
        monday_noon = dt.datetime(2026, 12, 7, 12)
        assert engine.collect("archiving", monday_noon) is None, "collected outside the window"
        task = engine.collect("archiving", monday_noon.replace(hour=22, minute=5))
        assert task is not None
        assert engine.tasks.get(task).total == 1
        # The task runs to its end even though the window has closed meanwhile.
        engine.run_task(engine.tasks.get(task))
        assert engine.tasks.get(task).state == "done"
        later = dicomdata.study("PWIN2", "WINDOW^TWO", ("CT",), 1)
        assert store(node.port, later) == [0]
        # The same window opening does not collect again; the next night's does.
        assert engine.collect("archiving", monday_noon.replace(hour=23)) is None
        again = engine.collect("archiving", dt.datetime(2026, 12, 8, 22, 1))
        assert again is not None and engine.tasks.items(again) == [(later[0].series_uid, "pending", "")]
    finally:
        node.stop()
