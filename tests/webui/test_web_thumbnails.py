"""Thumbnails: pre-rendered when an association ends, rendered in child processes, cached, forgotten on delete."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian

from appliance.site.thumbnails import PrerenderWorker, RenderFailed, RenderProcess
from webui.server import QueueWarningFilter

import dicomdata


def send(env, instances: list[dicomdata.Instance], association: str, corrupt: bool = False) -> None:
    """Store instances on one association and end it, as the DICOM front end does."""
    for inst in instances:
        ds = inst.dataset()
        # A damaged file: far fewer pixel bytes than Rows x Columns asks for.
        pixels = np.arange(inst.rows * inst.columns, dtype=np.uint16) * inst.instance_number % 4096
        ds.PixelData = b"\x00\x01" * 7 if corrupt else pixels.tobytes()
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_dataset(fp, ds)
        env.app.store(
            fp.getvalue(),
            ExplicitVRLittleEndian,
            ds.SOPClassUID,
            ds.SOPInstanceUID,
            "MODALITY",
            env.cfg.dicom.ae_title,
            association,
        )
    env.app.association_ended(env.cfg.dicom.ae_title, association)


def cache_file(env, series_uid: str) -> Path:
    """Where the thumbnail of a series is cached (its middle instance's)."""
    instances = env.site.catalog.instances(series_uid)
    middle = instances[len(instances) // 2]
    return env.site.pictures.thumbs._file(middle["sop_uid"], middle["path"])


def series_of(env, study_uid: str) -> list[str]:
    return [s["series_uid"] for s in env.site.catalog.series(study_uid)]


def test_thumbnails_are_prerendered_when_a_study_is_stored(env) -> None:
    study = dicomdata.study("PID900", "NEW^NORA", ("CT", "CT"), 3, rows=64, columns=64)
    send(env, study, "assoc-new")
    assert env.site.pictures.prerender.wait_idle(60)
    series = series_of(env, study[0].study_uid)
    assert len(series) == 2 and all(cache_file(env, uid).is_file() for uid in series)
    assert env.site.pictures.prerender.rendered == 2 and env.site.pictures.prerender.failed == 0
    # Nothing else was rendered: the studies stored without an association end keep an empty cache.
    assert len(list((env.cfg.data_dir / "cache" / "thumbs").rglob("*.jpg"))) == 2
    # The page's thumbnail is the pre-rendered file; sending the study again renders nothing new.
    assert env.site.pictures.series_thumbnail(series[0]) == cache_file(env, series[0]).read_bytes()
    send(env, study, "assoc-again")
    assert env.site.pictures.prerender.wait_idle(60)
    assert env.site.pictures.prerender.rendered == 2 and env.site.pictures.prerender.skipped == 2


def test_a_damaged_file_is_logged_and_the_worker_goes_on(env, caplog) -> None:
    damaged = dicomdata.study("PID901", "BAD^BEN", ("CT",), 1, rows=64, columns=64)
    good = dicomdata.study("PID902", "GOOD^GINA", ("CT",), 1, rows=64, columns=64)
    with caplog.at_level(logging.INFO, logger="appliance.site.thumbnails"):
        send(env, damaged, "assoc-damaged", corrupt=True)
        send(env, good, "assoc-good")
        assert env.site.pictures.prerender.wait_idle(60)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "placeholder" in r.getMessage()]
    assert len(warnings) == 1 and "cannot be decoded" in warnings[0].getMessage()
    # The damaged series gets its placeholder (the file will not get better); the next study is rendered.
    placeholder = cache_file(env, series_of(env, damaged[0].study_uid)[0]).read_bytes()
    rendered = cache_file(env, series_of(env, good[0].study_uid)[0]).read_bytes()
    assert placeholder[:2] == rendered[:2] == b"\xff\xd8" and placeholder != rendered


def test_the_worker_survives_a_failed_render(env, caplog, monkeypatch) -> None:
    renderer = env.site.pictures.renderer
    real = renderer.thumbnail
    calls: list[Path] = []

    def crash_once(path: Path, size: int) -> tuple[bytes, str]:
        calls.append(path)
        if len(calls) == 1:
            raise RenderFailed("the render process ended while rendering it (exit code -11)")
        return real(path, size)

    monkeypatch.setattr(renderer, "thumbnail", crash_once)
    first, second = series_of(env, env.studies["ct"])
    with caplog.at_level(logging.WARNING, logger="appliance.site.thumbnails"):
        assert env.site.pictures.prerender.submit_series([first, second])
        assert env.site.pictures.prerender.wait_idle(60)
    assert any("not pre-rendered" in r.getMessage() and first in r.getMessage() for r in caplog.records)
    assert not cache_file(env, first).exists() and cache_file(env, second).is_file()
    assert env.site.pictures.prerender.failed == 1 and env.site.pictures.prerender.rendered == 1


def test_a_failed_on_demand_render_gives_a_placeholder_that_is_not_cached(env, caplog, monkeypatch) -> None:
    def crash(path: Path, size: int) -> tuple[bytes, str]:
        raise RenderFailed("rendering it took over 60 s: render process restarted")

    monkeypatch.setattr(env.site.pictures.renderer, "thumbnail", crash)
    series = series_of(env, env.studies["ct"])[0]
    with caplog.at_level(logging.ERROR, logger="appliance.site.pictures"):
        data = env.site.pictures.series_thumbnail(series)
    assert data[:2] == b"\xff\xd8" and not cache_file(env, series).exists()
    assert any("took over 60 s" in r.getMessage() for r in caplog.records)


def test_thumbnails_render_on_demand_with_an_empty_cache(env, client) -> None:
    assert not (env.cfg.data_dir / "cache" / "thumbs").exists()
    assert client.get(f"/token?{env.token('ct')}").status_code == 303
    series = series_of(env, env.studies["ct"])
    for uid in series:
        response = client.get(f"/study/thumb/{uid}.jpg")
        assert response.status_code == 200 and response.mimetype == "image/jpeg"
        assert response.headers["Cache-Control"] == "no-store"
        assert cache_file(env, uid).read_bytes() == response.data
    assert env.site.pictures.prerender.pending == 0 and env.site.pictures.prerender.rendered == 0


def test_deleting_a_study_removes_its_cached_thumbnails(env) -> None:
    ct, mr = series_of(env, env.studies["ct"]), series_of(env, env.studies["mr"])
    assert env.site.pictures.prerender.submit_series(ct + mr)
    assert env.site.pictures.prerender.wait_idle(60)
    ct_files = [cache_file(env, uid) for uid in ct]
    mr_file = cache_file(env, mr[0])
    assert all(f.is_file() for f in [*ct_files, mr_file])
    env.site.studies.delete(env.studies["ct"], ct[0])
    assert not ct_files[0].exists() and ct_files[1].is_file()
    env.site.studies.delete(env.studies["ct"])
    assert not ct_files[1].exists() and mr_file.is_file()


def test_the_render_process_is_started_again_after_it_dies(env) -> None:
    path = env.app.store_area.path(env.site.catalog.instances(series_of(env, env.studies["ct"])[0])[0]["path"])
    renderer = RenderProcess(nice=0)
    try:
        first, reason = renderer.thumbnail(path, 64)
        assert first[:2] == b"\xff\xd8" and reason == ""
        assert renderer.pid is not None
        os.kill(renderer.pid, signal.SIGKILL)  # as a decoder crash would
        with pytest.raises(RenderFailed, match="render process ended"):
            renderer.thumbnail(path, 64)
        assert renderer.thumbnail(path, 64) == (first, "")
        no_dicom = env.cfg.data_dir / "note.txt"
        no_dicom.write_text("not DICOM")
        data, reason = renderer.thumbnail(no_dicom, 64)
        assert data[:2] == b"\xff\xd8" and "DICOM" in reason
    finally:
        renderer.close()
    with pytest.raises(RenderFailed, match="stopped"):
        renderer.thumbnail(path, 64)


def test_a_full_prerender_queue_drops_jobs_without_waiting(caplog) -> None:
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def prerender(uid: str) -> bool:
        started.set()
        assert release.wait(30)
        done.append(uid)
        return True

    worker = PrerenderWorker(lambda uids: uids, prerender, max_jobs=1)
    try:
        assert worker.submit_series(["A"])
        assert started.wait(30)  # A is being rendered: the queue is empty again
        with caplog.at_level(logging.WARNING, logger="appliance.site.thumbnails"):
            assert worker.submit_instances(["B"])
            assert not worker.submit_series(["C"])  # full: dropped at once, not waited for
            assert not worker.submit_series(["D"])
        assert sum("queue full" in r.getMessage() for r in caplog.records) == 1  # one warning, not one per job
        release.set()
        assert worker.wait_idle(30)
        assert done == ["A", "B"] and worker.rendered == 2
    finally:
        release.set()
        worker.close()
    assert not worker.submit_series(["E"])  # closed


def test_waitress_queue_warnings_are_throttled(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("webui.server.time.monotonic", lambda: now[0])
    flt = QueueWarningFilter(interval=60)

    def record() -> logging.LogRecord:
        return logging.LogRecord("waitress.queue", logging.WARNING, __file__, 1, "Task queue depth is %d", (3,), None)

    assert flt.filter(record())
    assert not flt.filter(record()) and not flt.filter(record())
    now[0] += 61
    passed = record()
    assert flt.filter(passed)
    assert passed.getMessage() == "Task queue depth is 3 (2 more such warnings since the last one)"
