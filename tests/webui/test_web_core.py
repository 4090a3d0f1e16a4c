"""Core pieces behind the web site: users, node registry and policy, audit log, search, pictures, zips."""

from __future__ import annotations

import datetime as dt
import io
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.fileset import FileSet
from pydicom.uid import JPEGLosslessSV1

from appliance import codecs
from appliance.config import NodeConfig, parse_config
from appliance.errors import InvalidValue, NotFound
from appliance.nodes import validate_host
from appliance.site.admin import effective_settings
from appliance.site.catalog import StudyQuery, parse_date, period_range, text_pattern
from appliance.site.export import Busy, Exporter, ZipItem, zip_name
from appliance.site.imaging import Window, apply_window, default_window, picture, render
from webui.presenters import settings_sections

import dicomdata

# -- users ------------------------------------------------------------------------------------------


def test_users_hash_passwords_and_check_them(env) -> None:
    users = env.site.users
    row = env.app.db.conn.execute("SELECT password_hash FROM users WHERE name = 'admin'").fetchone()
    assert "admin-password-1" not in row[0] and row[0].startswith(("scrypt:", "pbkdf2:"))
    assert users.authenticate("admin", "admin-password-1").role == "admin"
    assert users.authenticate("ADMIN", "admin-password-1") is not None  # names are case-insensitive
    assert users.authenticate("admin", "wrong") is None
    assert users.authenticate("nobody", "whatever-1") is None
    assert users.by_name("admin").last_login


@pytest.mark.parametrize(
    ("name", "password", "role", "message"),
    [
        ("", "long-enough", "admin", "user name"),
        ("has space", "long-enough", "admin", "user name"),
        ("ok", "short", "admin", "at least 8"),
        ("ok", "long-enough", "root", "role"),
        ("admin", "long-enough", "admin", "already exists"),
    ],
)
def test_user_validation(env, name: str, password: str, role: str, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        env.site.users.add(name, password, role)


def test_last_admin_is_kept(env) -> None:
    users = env.site.users
    admin = users.by_name("admin")
    with pytest.raises(InvalidValue, match="last admin"):
        users.delete(admin.id)
    with pytest.raises(InvalidValue, match="last admin"):
        users.set_role(admin.id, "frontdesk")
    desk = users.by_name("desk")
    users.set_role(desk.id, "admin")
    users.set_role(admin.id, "frontdesk")
    users.delete(admin.id)
    with pytest.raises(NotFound):
        users.delete(admin.id)
    with pytest.raises(NotFound):
        users.set_password(admin.id, "long-enough")


# -- nodes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "::1", "[fe80::1]", "pacs", "pacs.example.org", "ct-1.lan.", "2001:db8::7"]
)
def test_valid_hosts(host: str) -> None:
    assert validate_host(host)


@pytest.mark.parametrize(
    "host", ["", "999.1.1.1", "1.2.3", "bad_host", "-lead.example", "a..b", "::g", "x" * 64, "host name"]
)
def test_invalid_hosts(host: str) -> None:
    with pytest.raises(InvalidValue):
        validate_host(host)


def test_ui_nodes_join_the_association_policy(tmp_path: Path) -> None:
    from appliance.core import Appliance

    cfg = parse_config(
        {
            "appliance": {"data_dir": str(tmp_path)},
            "dicom": {"accept_any_ae": False, "nodes": [{"ae_title": "CFGNODE", "find": False}]},
        }
    )
    app = Appliance(cfg)
    try:
        registry = app.node_registry
        assert app.may_associate("CFGNODE") and not app.may("CFGNODE", "find")
        assert not app.may_associate("UINODE")
        registry.add(NodeConfig("UINODE", "127.0.0.1", 11112, store=False))
        assert app.may_associate("UINODE") and app.may("UINODE", "find") and not app.may("UINODE", "store")
        assert (added := app.node("UINODE")) is not None and added.port == 11112
        registry.update("UINODE", NodeConfig("UINODE2", "::1", 104))
        assert app.node("UINODE") is None and (moved := app.node("UINODE2")) is not None and moved.host == "::1"
        with pytest.raises(InvalidValue, match="config file"):
            registry.update("CFGNODE", NodeConfig("CFGNODE", "127.0.0.1", 1))
        with pytest.raises(InvalidValue, match="config file"):
            registry.delete("CFGNODE")
        with pytest.raises(InvalidValue, match="already exists"):
            registry.add(NodeConfig("CFGNODE", "127.0.0.1", 104))
        with pytest.raises(InvalidValue, match="already exists"):
            registry.add(NodeConfig("UINODE2", "127.0.0.1", 104))
        with pytest.raises(NotFound):
            registry.delete("NOPE")
        assert [(k.node.ae_title, k.source) for k in registry.all()] == [("CFGNODE", "config"), ("UINODE2", "ui")]
        registry.delete("UINODE2")
        assert not app.may_associate("UINODE2")
    finally:
        app.stop()


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (NodeConfig("", "127.0.0.1", 104), "not valid"),
        (NodeConfig("BACK\\SLASH", "127.0.0.1", 104), "not valid"),
        (NodeConfig("X" * 17, "127.0.0.1", 104), "not valid"),
        (NodeConfig(" LEAD", "127.0.0.1", 104), "spaces"),
        (NodeConfig("OK", "127.0.0.1", 0), "TCP port"),
        (NodeConfig("OK", "127.0.0.1", 70000), "TCP port"),
        (NodeConfig("OK", "300.0.0.1", 104), "IPv4"),
        (NodeConfig("OK", "127.0.0.1", 104, description="d" * 65), "64"),
    ],
)
def test_node_validation(env, node: NodeConfig, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        env.site.nodes.add(node)


# -- audit ------------------------------------------------------------------------------------------


def test_audit_log_is_append_only(env) -> None:
    env.site.audit.record("study.view", actor="patient", address="127.0.0.1", study_uid="1.2")
    entries = env.site.audit.entries(study_uid="1.2")
    assert [(e.action, e.actor, e.outcome) for e in entries] == [("study.view", "patient", "success")]
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        env.app.db.conn.execute("UPDATE audit_log SET actor = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        env.app.db.conn.execute("DELETE FROM audit_log")


# -- search -----------------------------------------------------------------------------------------


def _names(env, **kwargs) -> list[str]:
    page = env.site.catalog.search(StudyQuery(**kwargs))
    return [r["patient_name"] for r in page.rows]


def test_names_are_found_as_people_type_them(env, store) -> None:
    """Any order, comma/space/^, case and accents ignored, as the worklist matches names (issue 20, item 8)."""
    store(env.app, dicomdata.sample_archive())
    for typed in ("doe, john", "Doe John", "john doe", "DOE^JOHN", "doe jo"):
        assert _names(env, name=typed) == ["DOE^JOHN", "DOE^JOHN"], typed
    store(env.app, dicomdata.study("PIDMU", "MÜLLER^JÜRGEN", ("CT",), 1))
    for typed in ("jürgen", "jurgen", "Müller, Jürgen", "muller jurgen", "JÜRGEN MÜLLER"):
        assert _names(env, name=typed) == ["MÜLLER^JÜRGEN"], typed
    assert _names(env, name="jürgen smith") == []


def test_search_rules(env, store) -> None:
    store(env.app, dicomdata.sample_archive())
    assert _names(env, name="doe", sort="name", descending=False) == ["DOE^JANE", "DOE^JOHN", "DOE^JOHN"]
    assert _names(env, name="*OHN") == ["DOE^JOHN", "DOE^JOHN"]
    assert _names(env, name="*n?a", sort="name") == ["SMITH^ANNA"]
    assert _names(env, name="myname[") == ["MyName[*]"]  # GLOB metacharacters typed are literal
    assert _names(env, patient_id="pid_5") == ["MyName[*]"]
    assert _names(env, accession="a10", sort="accession", descending=False) == ["DOE^JOHN", "DOE^JOHN"]
    assert _names(env, modality="pt") == ["DOE^JANE"]
    assert _names(env, date_from="20070101", date_to="20071231", sort="name") == ["DOE^JOHN", "DOE^JANE"]
    assert _names(env, birth_date="19700101", patient_id="PID003") == ["MÜLLER^HANS"]
    page = env.site.catalog.search(StudyQuery(per_page=4, page=3, sort="images"))
    assert page.total == 9 and page.pages == 3 and page.page == 3 and len(page.rows) == 1
    assert env.site.catalog.search(StudyQuery(page=99, per_page=4)).page == 3
    with pytest.raises(InvalidValue):
        env.site.catalog.search(StudyQuery(sort="evil; DROP TABLE"))


def test_period_ranges() -> None:
    today = dt.date(2024, 3, 1)
    assert period_range("any", today) == ("", "")
    assert period_range("today", today) == ("20240301", "20240301")
    assert period_range("yesterday", today) == ("20240229", "20240229")
    assert period_range("week", today) == ("20240224", "20240301")
    assert period_range("month", today) == ("20240131", "20240301")
    assert period_range("year", today) == ("20230303", "20240301")
    assert period_range("exact", today, exact="2024-02-03") == ("20240203", "20240203")
    assert period_range("range", today, start="2024-01-01") == ("20240101", "")
    with pytest.raises(InvalidValue, match="after"):
        period_range("range", today, start="2024-02-01", end="2024-01-01")
    with pytest.raises(InvalidValue):
        period_range("exact", today, exact="2024-02-30")
    with pytest.raises(InvalidValue):
        period_range("fortnight", today)
    assert parse_date("1970.01.31", "x") == "19700131"
    assert text_pattern("") == "" and text_pattern("ab*") == "ab*" and text_pattern("[x") == "[[]x*"


# -- pictures ---------------------------------------------------------------------------------------


def _ds(**extra):
    inst = dicomdata.study("P", "A^B", ("CT",), 1, rows=32, columns=32)[0]
    inst.extra.update(extra)
    return inst


def test_window_from_tags_or_computed(tmp_path: Path) -> None:
    path = _ds(WindowCenter=1000, WindowWidth=200).write(tmp_path)
    assert render(path).window == Window(1000, 200)
    path = _ds().write(tmp_path)
    computed = render(path).window
    assert computed is not None
    assert 0 < computed.center < 4096 and computed.width > 1000  # noise over the whole 12-bit range
    assert render(path, Window(10, 20)).window == Window(10, 20)
    values = np.array([[0.0, 50.0], [100.0, 100.0]])
    assert default_window(dcmread(path, stop_before_pixels=True), values).width >= 1
    assert apply_window(np.array([-1000.0, 40.0, 1000.0]), Window(40, 400)).tolist() == [0, 128, 255]


def test_monochrome1_is_inverted_and_rgb_and_multiframe_render(tmp_path: Path) -> None:
    inst = _ds(WindowCenter=2048, WindowWidth=4096)
    ds = inst.dataset()
    ds.PixelData = np.zeros((32, 32), np.uint16).tobytes()
    ds.save_as(tmp_path / "m2.dcm", enforce_file_format=True)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm", enforce_file_format=True)
    dark = np.asarray(render(tmp_path / "m2.dcm").image)
    light = np.asarray(render(tmp_path / "m1.dcm").image)
    assert dark.max() < 10 and light.min() > 245
    ds = inst.dataset()
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.full((32, 32, 3), (200, 10, 10), np.uint8).tobytes()
    ds.save_as(tmp_path / "rgb.dcm", enforce_file_format=True)
    rendered = render(tmp_path / "rgb.dcm")
    assert rendered.image.mode == "RGB" and rendered.window is None
    assert rendered.image.getpixel((5, 5)) == (200, 10, 10)
    ds = inst.dataset()
    frames = np.stack([np.full((32, 32), v, np.uint16) for v in (0, 4000, 4000)])
    ds.NumberOfFrames, ds.PixelData = 3, frames.tobytes()
    ds.save_as(tmp_path / "mf.dcm", enforce_file_format=True)
    assert np.asarray(render(tmp_path / "mf.dcm").image).max() < 10  # the first frame, not the others


def test_instance_without_pixels_gets_a_placeholder(tmp_path: Path) -> None:
    ds = _ds().dataset()
    del ds.PixelData, ds.Rows, ds.Columns
    ds.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    data, window = picture(tmp_path / "sr.dcm", 100)
    assert data[:2] == b"\xff\xd8" and window is None
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    assert picture(tmp_path / "junk.dcm", 100)[0][:2] == b"\xff\xd8"


def test_thumbnails_are_cached_on_disk(env) -> None:
    series = env.site.catalog.series(env.studies["ct"])[0]
    first = env.site.pictures.series_thumbnail(series["series_uid"])
    cached = list((env.cfg.data_dir / "cache" / "thumbs").rglob("*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == first
    assert env.site.pictures.series_thumbnail(series["series_uid"]) == first
    with pytest.raises(NotFound):
        env.site.pictures.series_thumbnail(series["series_uid"], env.studies["mr"])


# -- JPEG Lossless ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bits", "signed", "size"), [(12, False, (64, 48)), (16, True, (33, 17)), (8, False, (8, 8)), (16, False, (1, 1))]
)
def test_jpeg_lossless_round_trip(tmp_path: Path, bits: int, signed: bool, size: tuple[int, int]) -> None:
    ds = dicomdata.study("P", "A^B", ("CT",), 1, rows=size[0], columns=size[1])[0].dataset()
    rng = np.random.default_rng(bits)
    if bits == 8:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        pixels = rng.integers(0, 256, size).astype(np.uint8)
    elif signed:
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
        pixels = rng.integers(-32768, 32767, size).astype(np.int16)
    else:
        ds.BitsStored, ds.HighBit = bits, bits - 1
        pixels = rng.integers(0, 2**bits, size).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    ds.save_as(tmp_path / "u.dcm", enforce_file_format=True)
    # What a zip download holds with zip_compression = "jpeg-lossless" (appliance.codecs, GDCM's encoder).
    (tmp_path / "c.dcm").write_bytes(codecs.recode_file((tmp_path / "u.dcm").read_bytes(), JPEGLosslessSV1, "TEST"))
    back = dcmread(tmp_path / "c.dcm")
    assert back.file_meta.TransferSyntaxUID == JPEGLosslessSV1 and back.SOPInstanceUID == ds.SOPInstanceUID
    assert np.array_equal(back.pixel_array.reshape(size), pixels)


# -- zips -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "jpeg-lossless"])
def test_dicom_zip_is_a_fileset_with_dicomdir(env, tmp_path: Path, compression: str) -> None:
    exporter = Exporter(tmp_path / "zips", compression, 1)
    items = [
        ZipItem(env.app.file_path(i), "S01", n)
        for n, i in enumerate(env.app.index.instances_of("STUDY", env.studies["ct"]), 1)
    ]
    with exporter.dicom_zip(items) as handle, zipfile.ZipFile(handle) as zf:
        names = zf.namelist()
        assert "DICOMDIR" in names and "README.TXT" in names
        readme = zf.read("README.TXT").decode()
        folders = {n.split("/")[0] for n in names if "/" in n}
        assert "beside DICOMDIR" in readme and "DICOM folder" not in readme and "DICOM" not in folders
        zf.extractall(tmp_path / "out")
    fileset = FileSet(dcmread(tmp_path / "out" / "DICOMDIR"))
    assert len(fileset) == 6
    syntaxes = {str(inst.load().file_meta.TransferSyntaxUID) for inst in fileset}
    assert syntaxes == ({JPEGLosslessSV1} if compression == "jpeg-lossless" else {"1.2.840.10008.1.2.1"})
    assert not any((tmp_path / "zips").iterdir())  # nothing left behind


def test_zip_builds_are_limited(tmp_path: Path) -> None:
    exporter = Exporter(tmp_path / "zips", "none", 1, wait=0.01)
    exporter._slots.acquire()
    with pytest.raises(Busy):
        exporter.jpeg_zip([])


def test_zip_name_has_no_patient_name() -> None:
    assert zip_name("dicom", "20240105", "A/1 2") == "study-20240105-A_1_2-dicom.zip"
    assert zip_name("jpeg", "", "", "S3") == "study-nodate-S3-jpeg.zip"


# -- settings ---------------------------------------------------------------------------------------


def test_settings_mask_secrets(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "appliance": {"data_dir": str(tmp_path)},
            "robots": {"epson": {"hotfolder": "x", "password": "hunter2", "simulate": True}},
            "labels": {"logo": "l.png"},
        }
    )
    sections = dict(settings_sections(effective_settings(cfg)))
    assert dict(sections["robots.epson"])["password"] == "••••••"
    assert dict(sections["robots.epson"])["hotfolder"] == "x"
    assert dict(sections["web"])["token_days"] == "60"
    assert dict(sections["labels"])["logo"] == "l.png"
    assert "hunter2" not in repr(sections)
    assert dict(sections["robots.epson"])["simulate"] == "true"  # as the config file spells it


def test_settings_show_values_as_the_config_file_spells_them_and_every_table(tmp_path: Path) -> None:
    """Issue 20, item 11: no ``20.0`` / ``True``, and the robots and labels tables are shown also on defaults."""
    cfg = parse_config({"appliance": {"data_dir": str(tmp_path)}})
    sections = dict(settings_sections(effective_settings(cfg)))
    assert dict(sections["dicom"])["acse_timeout"] == "30"
    assert dict(sections["dicom"])["accept_any_ae"] == "true"
    assert dict(sections["robots.epson (built-in demo)"])["simulate"] == "true"
    assert "labels" in sections


def test_web_config_validation() -> None:
    from appliance.config import ConfigError

    for table in (
        {"zip_compression": "zstd"},
        {"slip_paper": "A5"},
        {"threads": 0},
        {"rate_limit": 0},
        {"port": 70000},
        {"https": "yes"},
        {"unknown": 1},
    ):
        with pytest.raises(ConfigError):
            parse_config({"web": table})
    web = parse_config({"web": {"https": True, "zip_compression": "jpeg-lossless", "slip_paper": "receipt80"}}).web
    assert web.https and web.zip_compression == "jpeg-lossless"


def test_site_download_and_delete(env) -> None:
    site = env.site
    handle, name = site.studies.download("jpeg", env.studies["ct"])
    with zipfile.ZipFile(io.BytesIO(handle.read())) as zf:
        jpgs = [n for n in zf.namelist() if n.endswith(".jpg")]
    assert len(jpgs) == 6 and name.endswith("-jpeg.zip")
    with pytest.raises(NotFound):
        site.studies.download("tar", env.studies["ct"])
    series = site.catalog.series(env.studies["ct"])
    assert site.studies.delete(env.studies["ct"], series[0]["series_uid"]) == 3
    assert env.app.index.study(env.studies["ct"])["num_instances"] == 3
    assert site.tokens.get(env.studies["ct"]) is not None
    assert site.studies.delete(env.studies["ct"]) == 3
    assert env.app.index.study(env.studies["ct"]) is None
    assert site.tokens.get(env.studies["ct"]) is None
    assert (
        not list(env.cfg.store_dir.rglob("*.dcm"))
        or all("tmp" in p.parts for p in env.cfg.store_dir.rglob("*.dcm"))
        or len(list(env.cfg.store_dir.rglob("*.dcm"))) == 3
    )
    with pytest.raises(NotFound):
        site.studies.delete(env.studies["ct"])


def test_zip_keeps_instances_that_lack_dicomdir_keys(tmp_path: Path) -> None:
    good = dicomdata.study("P", "A^B", ("CT",), 2)
    bad = good[1].dataset()
    del bad.InstanceNumber, bad.SeriesNumber
    bad.save_as(tmp_path / "bad.dcm", enforce_file_format=True)
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    items = [
        ZipItem(good[0].write(tmp_path), "S01", 1),
        ZipItem(tmp_path / "bad.dcm", "S01", 2),
        ZipItem(tmp_path / "junk.dcm", "S01", 3),
    ]
    with Exporter(tmp_path / "zips").dicom_zip(items) as handle, zipfile.ZipFile(handle) as zf:
        zf.extractall(tmp_path / "out")
        assert "OTHER/FILE0001" in zf.namelist()
        assert "OTHER folder" in zf.read("README.TXT").decode()
    assert len(FileSet(dcmread(tmp_path / "out" / "DICOMDIR"))) == 2


def test_thumbnails_are_rendered_when_an_association_ends(env) -> None:
    cache = env.cfg.data_dir / "cache" / "thumbs"
    assert not list(cache.rglob("*.jpg"))
    env.app.association_ended("DISCPACS", "nothing-received")
    env.app.association_ended("DISCPACS", "test")  # the association id the conftest stored everything under
    assert env.site.pictures.prerender.wait_idle(60)
    assert len(list(cache.rglob("*.jpg"))) == 4  # CT 2 series, MR 1, the old study 1


@pytest.mark.parametrize(("bits", "signed"), [(12, False), (12, True), (16, True), (8, False)])
def test_fast_pixel_path_matches_pydicom(tmp_path: Path, bits: int, signed: bool) -> None:
    from appliance.site.imaging import _native_frame

    ds = dicomdata.study("P", "A^B", ("CT",), 1, rows=8, columns=6)[0].dataset()
    rng = np.random.default_rng(bits)
    allocated = 8 if bits == 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, bits, bits - 1, int(signed)
    raw = rng.integers(0, 2**allocated, (8, 6)).astype(np.uint8 if allocated == 8 else np.uint16)
    ds.PixelData = raw.tobytes()  # high bits above BitsStored hold junk on purpose
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    fast = _native_frame(dcmread(tmp_path / "x.dcm", defer_size=64))
    assert fast is not None
    assert np.array_equal(fast, dcmread(tmp_path / "x.dcm").pixel_array)
