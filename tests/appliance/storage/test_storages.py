"""Several storages ([[storage]]): filling real small file systems, disabled and vanished storages, temp_dir,
and ``appliance storage move`` while ``appliance serve`` keeps receiving."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from upkeep_support import cli, config, getscu_study, mount_tmpfs, serve, started, store, umount, write_toml

from appliance.errors import ConfigError
from appliance.site.upkeep import UpkeepView
from appliance.storage import check_temp_dir

import dicomdata
from conftest import HOST, free_port, indexed, wait_until

pytestmark = pytest.mark.dcmtk


@pytest.fixture
def two_disks(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two 8 MB tmpfs file systems."""
    a, b = tmp_path / "disk_a", tmp_path / "disk_b"
    mount_tmpfs(a, "8m")
    try:
        mount_tmpfs(b, "8m")
        yield a, b
    finally:
        umount(a)
        umount(b)


def _instances(n: int, pid: str = "PSTOR") -> list[dicomdata.Instance]:
    return dicomdata.study(pid, "STORAGE^TEST", ("CT",), n, rows=256, columns=256)  # about 130 kB each


def test_new_files_fill_the_first_storage_then_the_next_then_are_refused(two_disks, tmp_path: Path) -> None:
    a, b = two_disks
    cfg = config(
        tmp_path / "var",
        storage=[{"path": str(a / "s"), "free_space_limit_mb": 5}, {"path": str(b / "s"), "free_space_limit_mb": 5}],
    )
    node = started(cfg)
    try:
        items = _instances(60)
        statuses = store(node.port, items)
        accepted = [i for i, s in zip(items, statuses, strict=True) if s == 0]
        # Each 8 MB disk takes files until 5 MB are left: about 3 MB, some 20 instances each; then 0xA700.
        assert 30 <= len(accepted) <= 50, statuses
        first_refused = statuses.index(0xA700)
        assert set(statuses[first_refused:]) == {0xA700}, "a storage took files after all were full"
        paths = [indexed(node.app, i.sop_uid).path for i in accepted]
        on_a = [p for p in paths if p.startswith("@1/")]
        on_b = [p for p in paths if p.startswith("@2/")]
        assert on_a and on_b and len(on_a) + len(on_b) == len(paths)
        assert paths.index(on_b[0]) == len(on_a), "the second storage was used before the first was full"
        assert len(list((a / "s").rglob("*.dcm"))) == len(on_a)
        assert len(list((b / "s").rglob("*.dcm"))) == len(on_b)
        for storage in node.app.store_area.writable():
            assert storage.free_bytes() >= 5 * 1024 * 1024 - 200_000
        # Everything acknowledged comes back over DICOM from both disks, bit for bit.
        got = getscu_study(node.port, items[0].study_uid, tmp_path / "get")
        assert len(got) == len(accepted)
        want = {i.sop_uid: i.dataset().PixelData for i in accepted}
        assert {str(d.SOPInstanceUID): d.PixelData for d in map(dcmread, got)} == want
    finally:
        node.stop()


def test_a_disabled_storage_takes_no_files_but_is_still_read(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    first = _instances(3, "PDIS")
    node = started(config(tmp_path / "var", storage=[{"path": str(a)}, {"path": str(b)}]))
    port = node.port
    try:
        assert store(port, first) == [0, 0, 0]
    finally:
        node.stop()
    assert len(list(a.rglob("*.dcm"))) == 3
    node = started(config(tmp_path / "var", port, storage=[{"path": str(a), "enabled": False}, {"path": str(b)}]))
    try:
        more = [
            dicomdata.Instance(
                "PDIS", "STORAGE^TEST", first[0].study_uid, first[0].series_uid, dicomdata.uid(), instance_number=10 + n
            )
            for n in range(2)
        ]
        assert store(port, more) == [0, 0]
        assert len(list(a.rglob("*.dcm"))) == 3
        assert len(list(b.rglob("*.dcm"))) == 2
        got = getscu_study(port, first[0].study_uid, tmp_path / "get")
        assert sorted(str(dcmread(p).SOPInstanceUID) for p in got) == sorted(i.sop_uid for i in first + more)
    finally:
        node.stop()


def test_a_vanished_storage_is_reported_and_keeps_its_rows(tmp_path: Path, caplog) -> None:
    share = tmp_path / "share"
    items = _instances(4, "PVAN")
    node = started(config(tmp_path / "var", storage=[{"path": str(share)}, {"path": str(tmp_path / "local")}]))
    port = node.port
    try:
        assert store(port, items) == [0] * 4
    finally:
        node.dicom.stop(grace=2.0)  # a crash: the "running" marker stays, so the next start reconciles
        node.app.db.close()
    mount_tmpfs(share, "1m")  # the share "unmounted": an empty folder where it was
    try:
        with caplog.at_level(logging.WARNING):
            node = started(
                config(tmp_path / "var", port, storage=[{"path": str(share)}, {"path": str(tmp_path / "local")}])
            )
        try:
            assert any("storage 1" in r.message and "unavailable" in r.message for r in caplog.records)
            assert node.app.index.counts()["instances"] == 4, "rows of an unmounted storage were dropped"
            listing = cli("storage", "list", "--config", str(_toml_of(tmp_path, port, share)))
            assert "unavailable" in listing.stdout
            # New files go to the storage that is there.
            more = _instances(1, "PVAN2")
            assert store(port, more) == [0]
            assert indexed(node.app, more[0].sop_uid).path.startswith("@2/")
        finally:
            node.stop()
    finally:
        umount(share)
    # Mounted again: the files are there and the storage is used again.
    node = started(config(tmp_path / "var", port, storage=[{"path": str(share)}, {"path": str(tmp_path / "local")}]))
    try:
        assert all(s.available for s in node.app.store_area.all())
        assert len(getscu_study(port, items[0].study_uid, tmp_path / "get")) == 4
    finally:
        node.stop()


def _toml_of(tmp_path: Path, port: int, share: Path) -> Path:
    return write_toml(
        tmp_path / "list.toml",
        tmp_path / "var",
        port,
        storages=[{"path": str(share)}, {"path": str(tmp_path / "local")}],
    )


def test_temp_dir_on_another_file_system(tmp_path: Path) -> None:
    temp = tmp_path / "incoming"
    mount_tmpfs(temp, "4m")
    try:
        node = started(config(tmp_path / "var", appliance={"temp_dir": str(temp)}))
        try:
            items = _instances(3, "PTMP")
            assert store(node.port, items) == [0, 0, 0]
            assert list(temp.iterdir()) == []
            files = list((tmp_path / "var" / "store").rglob("*.dcm"))
            assert len(files) == 3
            stored = {str(dcmread(p).SOPInstanceUID): dcmread(p).PixelData for p in files}
            assert stored == {i.sop_uid: i.dataset().PixelData for i in items}
        finally:
            node.stop()
    finally:
        umount(temp)


def test_an_unusable_temp_dir_stops_the_start_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = write_toml(tmp_path / "a.toml", tmp_path / "var", free_port(), appliance={"temp_dir": str(blocker / "x")})
    done = cli("serve", "--config", str(cfg), timeout=60)
    assert done.returncode != 0
    assert "temp_dir" in done.stderr and str(blocker / "x") in done.stderr
    assert "Traceback" not in done.stderr
    with pytest.raises(ConfigError, match="temp_dir"):
        check_temp_dir(blocker / "x")


def test_storage_move_while_serving(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    port = free_port()
    cfg = write_toml(tmp_path / "appliance.toml", tmp_path / "var", port, storages=[{"path": str(a)}, {"path": str(b)}])
    server = serve(cfg, tmp_path / "serve.log")
    try:
        wait_until(lambda: cli("echo", HOST, str(port), "DISCPACS").returncode == 0, timeout=60)
        before = _instances(6, "PMOVE")
        assert store(port, before) == [0] * 6
        assert len(list(a.rglob("*.dcm"))) == 6
        statuses: list[int] = []
        stop = threading.Event()

        def keep_storing() -> None:
            n = 0
            while not stop.is_set():
                inst = dicomdata.Instance(
                    "PMOVE",
                    "STORAGE^TEST",
                    before[0].study_uid,
                    before[0].series_uid,
                    dicomdata.uid(),
                    instance_number=100 + n,
                    rows=64,
                    columns=64,
                )
                statuses.extend(store(port, [inst]))
                during.append(inst)
                n += 1

        during: list[dicomdata.Instance] = []
        thread = threading.Thread(target=keep_storing)
        thread.start()
        try:
            moved = cli("storage", "move", str(a), str(c), "--settle", "3", "--config", str(cfg), timeout=120)
        finally:
            stop.set()
            thread.join(60)
        assert moved.returncode == 0, moved.stderr
        assert statuses and set(statuses) == {0}, "the move interrupted the store service"
        assert list(b.rglob("*.dcm")), "while moving, storage 1 still took the new files"
        assert a.exists(), "the old folder must be kept until the admin removes it"
        assert f'path = "{c}"' in cfg.read_text()
        # The running server switches within seconds (until then it reads the kept old folder); then it reads the
        # moved files from the new folder: remove the old one to prove it.
        wait_until(lambda: f"now lives at {c}" in (tmp_path / "serve.log").read_text(), timeout=20)
        shutil.rmtree(a)
        got = getscu_study(port, before[0].study_uid, tmp_path / "get")
        assert sorted(str(dcmread(p).SOPInstanceUID) for p in got) == sorted(i.sop_uid for i in before + during)
        for p in got:
            ds = dcmread(p)
            orig = next(i for i in before + during if i.sop_uid == ds.SOPInstanceUID)
            assert np.array_equal(ds.pixel_array, orig.dataset().pixel_array)
        # New files go to the moved storage again (it is first and enabled).
        in_c = len(list(c.rglob("*.dcm")))
        late = _instances(1, "PLATE")
        assert store(port, late) == [0]
        assert len(list(c.rglob("*.dcm"))) == in_c + 1
    finally:
        server.terminate()
        server.wait(30)


def test_a_disc_is_burned_from_files_on_several_storages(tmp_path: Path) -> None:
    import io
    from dataclasses import replace

    from publishing_support import PublishNode, iso_files, publish_config

    from appliance.config import StorageConfig
    from appliance.discs.jobs import JobState

    first, second = tmp_path / "first", tmp_path / "second"
    cfg = publish_config(tmp_path / "var")
    cfg = replace(cfg, storages=(StorageConfig(str(first)), StorageConfig(str(second))))
    node = PublishNode(cfg)
    try:
        early = dicomdata.study("PDISC", "DISC^SPLIT", ("CT",), 2)
        (tmp_path / "in1").mkdir()
        for inst in early:
            inst.write(tmp_path / "in1")
        node.send(tmp_path / "in1")  # plain AE title: only stored, on the first storage
        node.app.store_area.set_enabled(1, False)  # the first storage takes no more files
        late = [
            dicomdata.Instance(
                "PDISC", "DISC^SPLIT", early[0].study_uid, dicomdata.uid(), dicomdata.uid(), series_number=2
            )
        ]
        (tmp_path / "in2").mkdir()
        late[0].write(tmp_path / "in2")
        node.send(tmp_path / "in2")
        paths = {i.sop_uid: indexed(node.app, i.sop_uid).path for i in early + late}
        assert {p.split("/")[0] for p in paths.values()} == {"@1", "@2"}
        job_id = node.jobs.create("epson", 1, list(paths), source="manual")
        node.publishing.engine.wake()
        node.wait_state(job_id, JobState.DONE)
        files = iso_files(node.job_dir(job_id) / "disc1" / "disc.iso")
        on_disc = {
            str(dcmread(io.BytesIO(data)).SOPInstanceUID): dcmread(io.BytesIO(data)).PixelData
            for name, data in files.items()
            if name.startswith("/PT")
        }
        assert on_disc == {i.sop_uid: i.dataset().PixelData for i in early + late}
    finally:
        node.stop()


def test_the_data_dir_store_can_be_moved_too(tmp_path: Path) -> None:
    items = _instances(3, "PMOVE0")
    port = free_port()
    node = started(config(tmp_path / "var", port))  # no [[storage]]: the one data_dir store, as before
    try:
        assert store(port, items) == [0, 0, 0]
        assert all(not indexed(node.app, i.sop_uid).path.startswith("@") for i in items)
    finally:
        node.stop()
    cfg = write_toml(tmp_path / "a.toml", tmp_path / "var", port)
    new = tmp_path / "bigdisk" / "store"
    moved = cli("storage", "move", str(tmp_path / "var" / "store"), str(new), "--settle", "0", "--config", str(cfg))
    assert moved.returncode == 0, moved.stderr
    shutil.rmtree(tmp_path / "var" / "store")  # the admin removes the kept old folder
    node = started(config(tmp_path / "var", port))
    try:
        assert node.app.store_area.first.root == new
        got = getscu_study(port, items[0].study_uid, tmp_path / "get")
        assert sorted(str(dcmread(p).SOPInstanceUID) for p in got) == sorted(i.sop_uid for i in items)
        more = _instances(1, "PMOVE1")
        assert store(port, more) == [0]
        assert len(list(new.rglob("*.dcm"))) == 4
    finally:
        node.stop()


def test_the_old_folder_of_a_move_is_removed_only_when_the_new_one_holds_every_file(tmp_path: Path) -> None:
    items = _instances(4, "PREMOVE")
    old, new = tmp_path / "old", tmp_path / "new"
    port = free_port()
    node = started(config(tmp_path / "var", port, storage=[{"path": str(old)}]))
    try:
        assert store(port, items) == [0] * 4
    finally:
        node.stop()
    cfg = write_toml(tmp_path / "a.toml", tmp_path / "var", port, storages=[{"path": str(old)}])
    moved = cli("storage", "move", str(old), str(new), "--settle", "0", "--config", str(cfg))
    assert moved.returncode == 0, moved.stderr
    assert "remove-old" in moved.stdout
    files = sorted(p.relative_to(new) for p in new.rglob("*.dcm"))
    assert len(files) == 4 and sorted(p.relative_to(old) for p in old.rglob("*.dcm")) == files

    def remove_old(folder: Path) -> Any:
        return cli("storage", "remove-old", str(folder), "--config", str(cfg))

    # A copy that differs from the original: refused, both folders untouched.
    damaged = new / files[0]
    original = damaged.read_bytes()
    damaged.write_bytes(original[:-4] + b"XXXX")
    refused = remove_old(old)
    assert refused.returncode != 0 and "differ" in refused.stderr and str(files[0]) in refused.stderr
    assert "Traceback" not in refused.stderr
    assert len(list(old.rglob("*.dcm"))) == 4
    # A file missing from the new folder: refused.
    damaged.unlink()
    refused = remove_old(old)
    assert refused.returncode != 0 and "not in" in refused.stderr and len(list(old.rglob("*.dcm"))) == 4
    damaged.write_bytes(original)
    # Not a kept copy: the storage's own folder, and a folder that is no storage at all.
    assert "folder now" in remove_old(new).stderr
    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "holiday.jpg").write_bytes(b"jpeg")
    assert "not a storage folder" in remove_old(stranger).stderr and (stranger / "holiday.jpg").exists()
    # Every indexed file is in the new folder and identical: the old folder goes.
    done = remove_old(old)
    assert done.returncode == 0, done.stderr
    assert not old.exists()
    assert len(list(new.rglob("*.dcm"))) == 4
    node = started(config(tmp_path / "var", port, storage=[{"path": str(new)}]))
    try:
        got = getscu_study(port, items[0].study_uid, tmp_path / "get")
        assert {str(dcmread(p).SOPInstanceUID): dcmread(p).PixelData for p in got} == {
            i.sop_uid: i.dataset().PixelData for i in items
        }
    finally:
        node.stop()


def test_a_storage_folder_missing_at_start_is_not_made_again_when_the_index_holds_files(tmp_path: Path, caplog) -> None:
    share, local = tmp_path / "share", tmp_path / "local"
    items = _instances(3, "PMISS")
    port = free_port()
    storages = [{"path": str(share)}, {"path": str(local)}]
    node = started(config(tmp_path / "var", port, storage=storages))
    try:
        assert store(port, items) == [0] * 3
    finally:
        node.stop()
    aside = tmp_path / "share-unmounted"
    share.rename(aside)  # the share's folder is gone, as when the disk holding it is not there
    cfg = config(tmp_path / "var", port, storage=storages)
    with caplog.at_level(logging.INFO):
        node = started(cfg)
    try:
        first = node.app.store_area.get(1)
        assert not first.available and "does not exist" in first.problem
        # The staff Storages page shows it with the reason.
        row = next(r for r in UpkeepView(node.app, cfg).storages() if r.number == 1)
        assert (row.state, row.problem) == ("unavailable", first.problem)
        assert not share.exists(), "an empty folder was made where the storage's files belong"
        assert any(
            "storage 1" in r.message and "unavailable" in r.message and r.levelno >= logging.ERROR
            for r in caplog.records
        )
        assert node.app.index.counts()["instances"] == 3, "index rows of the missing storage were dropped"
        listing = cli(
            "storage",
            "list",
            "--config",
            str(write_toml(tmp_path / "l.toml", tmp_path / "var", port, storages=storages)),
        )
        assert "unavailable" in listing.stdout and "does not exist" in listing.stdout
        more = _instances(1, "PMISS2")
        assert store(port, more) == [0]
        assert indexed(node.app, more[0].sop_uid).path.startswith("@2/")
        # Back in place: the running server finds it and reads its files again.
        aside.rename(share)
        node.app.store_area.refresh()
        assert node.app.store_area.get(1).available
        assert len(getscu_study(port, items[0].study_uid, tmp_path / "get")) == 3
    finally:
        node.stop()


def test_a_new_storage_folder_is_made_only_inside_a_folder_that_exists(tmp_path: Path, caplog) -> None:
    fresh = tmp_path / "disk" / "pacs"  # parent exists: a new storage, made at start
    (tmp_path / "disk").mkdir()
    unmounted = tmp_path / "nas" / "pacs"  # parent missing: a share not mounted yet
    with caplog.at_level(logging.INFO):
        node = started(config(tmp_path / "var", storage=[{"path": str(unmounted)}, {"path": str(fresh)}]))
    try:
        first, second = node.app.store_area.all()[:2]
        assert not first.available and "parent" in first.problem and not unmounted.parent.exists()
        assert second.available and (fresh / ".appliance-storage").is_file()
        assert any("new, empty storage" in r.message and str(fresh) in r.message for r in caplog.records)
        assert store(node.port, _instances(1, "PNEW")) == [0]
        assert len(list(fresh.rglob("*.dcm"))) == 1
        # The share is mounted: its folder is then made (no index row names it yet) and it is used first.
        unmounted.parent.mkdir()
        node.app.store_area.refresh()
        assert node.app.store_area.get(first.number).available and unmounted.is_dir()
        assert store(node.port, _instances(1, "PNEW2")) == [0]
        assert len(list(unmounted.rglob("*.dcm"))) == 1
    finally:
        node.stop()
