"""DICOMweb through a client nobody here wrote (the ``dicomweb-client`` package) and ``curl``.

The DICOMweb app is served by waitress on loopback over the standard web environment (a CT study with two
series of three, an MR study, an old CR/OT study; an admin and a front-desk user).
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless

from appliance import codecs
from appliance.site.apikeys import hash_secret
from webui.dicomweb import create_dicomweb_app
from webui.server import WebServer

import dicomdata
from conftest import HOST

DESK = ("desk", "desk-password-1")

dicomweb_client = pytest.importorskip("dicomweb_client")
from dicomweb_client.api import DICOMwebClient  # noqa: E402


@dataclass
class DW:
    """A served DICOMweb app over a web environment, with an admin key."""

    env: Any
    url: str
    key: str

    @property
    def root(self) -> str:
        return self.url + "/dicom-web"

    def client(self, key: str | None = None) -> DICOMwebClient:
        return DICOMwebClient(self.root, headers={"Authorization": f"Bearer {key or self.key}"})

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


@pytest.fixture
def dw(env: Any) -> Iterator[DW]:
    server = WebServer(create_dicomweb_app(env.site, {"TESTING": True}), HOST, 0, threads=4)
    server.start()
    _, key = env.site.apikeys.add("reader", "frontdesk")
    yield DW(env, server.url, key)
    server.stop()


def _uid(answer: dict[str, Any], tag: str) -> str:
    return str(answer[tag]["Value"][0])


def _cfind_studies(env: Any, **keys: str) -> set[str]:
    ident = Dataset()
    ident.StudyInstanceUID = ""
    for k, v in keys.items():
        setattr(ident, k, v)
    return {str(a.StudyInstanceUID) for a in env.app.find(ident, "STUDY")}


# -- QIDO-RS -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters",
    [
        {"PatientName": "smith*"},  # PN matching is case-insensitive, as in C-FIND
        {"PatientID": "PID2?0"},
        {"ModalitiesInStudy": "MR"},
        {"AccessionNumber": "ACC-CT"},
        {"StudyDescription": "*X*"},
        {},
    ],
)
def test_qido_studies_match_as_cfind(dw: DW, filters: dict[str, str]) -> None:
    answers = dw.client().search_for_studies(search_filters=filters)
    got = {_uid(a, "0020000D") for a in answers}
    assert got == _cfind_studies(dw.env, **filters)
    assert got, "every filter here matches something"


def test_qido_date_range_and_paging(dw: DW) -> None:
    client = dw.client()
    everything = client.search_for_studies()
    assert len(everything) == 3
    ct_date = dw.env.app.index.study(dw.env.studies["ct"])["study_date"]
    recent = client.search_for_studies(search_filters={"StudyDate": f"{ct_date}-"})
    assert {_uid(a, "0020000D") for a in recent} == {dw.env.studies["ct"], dw.env.studies["mr"]}
    first = client.search_for_studies(limit=2)
    rest = client.search_for_studies(offset=2, limit=5)
    assert len(first) == 2 and len(rest) == 1
    assert {_uid(a, "0020000D") for a in first + rest} == {_uid(a, "0020000D") for a in everything}


def test_qido_study_answer_fields_and_includefield(dw: DW) -> None:
    ct = dw.env.studies["ct"]
    (answer,) = dw.client().search_for_studies(search_filters={"StudyInstanceUID": ct})
    assert answer["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "SMITH^ANNA"}]}
    assert answer["00201206"] == {"vr": "IS", "Value": [2]}  # NumberOfStudyRelatedSeries
    assert answer["00201208"] == {"vr": "IS", "Value": [6]}
    assert answer["00081190"]["Value"][0] == f"{dw.root}/studies/{ct}"
    assert "00081030" in answer and "SOPClassesInStudy" not in answer
    (more,) = dw.client().search_for_studies(
        search_filters={"StudyInstanceUID": ct}, fields=["SOPClassesInStudy", "00100040"]
    )
    assert more["00080062"]["Value"] == [dicomdata.SOP_CLASSES["CT"]]
    all_fields = requests.get(
        f"{dw.root}/studies", params={"StudyInstanceUID": ct, "includefield": "all"}, headers=dw.auth(), timeout=30
    ).json()[0]
    assert "00080062" in all_fields and "00100021" in all_fields  # IssuerOfPatientID, held by the index


def test_qido_series_and_instances(dw: DW) -> None:
    ct = dw.env.studies["ct"]
    client = dw.client()
    series = client.search_for_series(ct)
    assert len(series) == 2 and all(s["00080060"]["Value"] == ["CT"] for s in series)
    assert all(s["00201209"]["Value"] == [3] for s in series)
    series_uid = _uid(series[0], "0020000E")
    instances = client.search_for_instances(ct, series_uid)
    assert [i["00200013"]["Value"][0] for i in instances] == [1, 2, 3]
    assert instances[0]["00081190"]["Value"][0].startswith(f"{dw.root}/studies/{ct}/series/{series_uid}/instances/")
    # /series and /instances outside a study carry the study's attributes too
    all_series = client.search_for_series(search_filters={"Modality": "MR"})
    assert len(all_series) == 1 and all_series[0]["00100020"]["Value"] == ["PID200"]
    assert len(client.search_for_instances(search_filters={"PatientID": "PID100"})) == 6
    assert client.search_for_series("1.2.3.4.5") == []


def test_qido_xml_and_fuzzy_warning(dw: DW) -> None:
    ct = dw.env.studies["ct"]
    reply = requests.get(
        f"{dw.root}/studies",
        params={"StudyInstanceUID": ct, "fuzzymatching": "true"},
        headers={**dw.auth(), "Accept": 'multipart/related; type="application/dicom+xml"'},
        timeout=30,
    )
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("multipart/related")
    assert (
        b'<DicomAttribute tag="00100010" vr="PN" keyword="PatientName"><PersonName number="1"><Alphabetic>'
        b"<FamilyName>SMITH</FamilyName><GivenName>ANNA</GivenName>" in reply.content
    )
    assert "fuzzymatching" in reply.headers["Warning"]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({"NoSuchKeyword": "x"}, "not a DICOM attribute"),
        ({"limit": "-1"}, "whole number"),
        ({"00100010.00100020": "x"}, "sequence paths"),
        ({"fuzzymatching": "maybe"}, "true or false"),
    ],
)
def test_qido_bad_queries(dw: DW, query: dict[str, str], reason: str) -> None:
    reply = requests.get(f"{dw.root}/studies", params=query, headers=dw.auth(), timeout=30)
    assert reply.status_code == 400
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert reason in reply.json()["detail"]


# -- WADO-RS -------------------------------------------------------------------------------------


def test_wado_study_series_instance(dw: DW) -> None:
    ct = dw.env.studies["ct"]
    client = dw.client()
    stored = {i.sop_uid: i for i in dw.env.site.dicomweb.instances(ct)}
    datasets = client.retrieve_study(ct)
    assert {str(d.SOPInstanceUID) for d in datasets} == set(stored)
    for ds in datasets:
        original = dcmread(dw.env.app.file_path(stored[str(ds.SOPInstanceUID)]))
        assert np.array_equal(ds.pixel_array, original.pixel_array)
        assert ds.StudyInstanceUID == ct
    series_uid = datasets[0].SeriesInstanceUID
    assert len(client.retrieve_series(ct, series_uid)) == 3
    one = client.retrieve_instance(ct, series_uid, datasets[0].SOPInstanceUID)
    assert one.SOPInstanceUID == datasets[0].SOPInstanceUID


@pytest.mark.parametrize("syntax", [JPEGLSLossless, RLELossless])
def test_wado_converts_to_a_requested_syntax_keeping_uids(dw: DW, syntax: str) -> None:
    ct = dw.env.studies["ct"]
    instance = dw.env.site.dicomweb.instances(ct)[0]
    ds = dw.client().retrieve_instance(
        ct, instance.series_uid, instance.sop_uid, media_types=(("application/dicom", syntax),)
    )
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.SOPInstanceUID == instance.sop_uid
    original = dcmread(dw.env.app.file_path(instance))
    assert np.array_equal(ds.pixel_array, original.pixel_array)  # lossless
    # transfer-syntax=* sends what is stored
    stored = dw.client().retrieve_instance(
        ct, instance.series_uid, instance.sop_uid, media_types=(("application/dicom", "*"),)
    )
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_wado_metadata_with_bulkdata_uri(dw: DW) -> None:
    ct = dw.env.studies["ct"]
    instance = dw.env.site.dicomweb.instances(ct)[0]
    client = dw.client()
    meta = client.retrieve_instance_metadata(ct, instance.series_uid, instance.sop_uid)
    assert meta["00080018"]["Value"] == [instance.sop_uid]
    assert meta["00280010"]["Value"] == [96]
    uri = meta["7FE00010"]["BulkDataURI"]
    assert uri.endswith(f"/instances/{instance.sop_uid}/bulkdata/7FE00010")
    (pixels,) = client.retrieve_bulkdata(uri)
    original = dcmread(dw.env.app.file_path(instance))
    assert pixels == original.PixelData
    study_meta = client.retrieve_study_metadata(ct)
    assert len(study_meta) == 6


def test_wado_frames_native_and_compressed(dw: DW) -> None:
    """Frames of a stored multi-frame JPEG-LS instance: as stored, and decoded to native pixels."""
    inst = dicomdata.study("PID900", "FRAMES^MULTI", ("CT",), 1, rows=64, columns=64)[0]
    ds = inst.dataset()
    rng = np.random.default_rng(7)
    cube = rng.integers(0, 4096, (4, 64, 64), dtype=np.uint16)
    ds.NumberOfFrames = 4
    ds.PixelData = cube.tobytes()
    part10 = io.BytesIO()
    ds.save_as(part10, enforce_file_format=True)
    jls = codecs.convert(part10.getvalue(), JPEGLSLossless)
    from appliance.part10 import file_meta

    body = file_meta(ds.SOPClassUID, ds.SOPInstanceUID, JPEGLSLossless, "TEST") + jls
    client = dw.client()
    client.store_instances([dcmread(io.BytesIO(body))])
    stored = dw.env.app.index.lookup(inst.sop_uid)
    assert stored is not None and stored.transfer_syntax == JPEGLSLossless
    native = client.retrieve_instance_frames(
        inst.study_uid,
        inst.series_uid,
        inst.sop_uid,
        [2, 4],
        media_types=(("application/octet-stream", ExplicitVRLittleEndian),),
    )
    as_arrays = [np.frombuffer(f, "<u2").reshape(64, 64).tolist() for f in native]
    assert as_arrays == [cube[1].tolist(), cube[3].tolist()]
    as_stored = client.retrieve_instance_frames(
        inst.study_uid, inst.series_uid, inst.sop_uid, [3], media_types=(("image/jls", "*"),)
    )
    assert as_stored[0][:2] == b"\xff\xd8"  # a JPEG-LS code stream
    from pydicom.pixels import get_decoder

    assert as_stored[0] != native[0]
    decoded, _ = get_decoder(JPEGLSLossless).as_array(dcmread(io.BytesIO(body)), index=2)
    assert decoded.tolist() == cube[2].tolist()
    reply = requests.get(
        f"{dw.root}/studies/{inst.study_uid}/series/{inst.series_uid}/instances/{inst.sop_uid}/frames/9",
        headers=dw.auth(),
        timeout=30,
    )
    assert reply.status_code == 404 and "out of range" in reply.json()["detail"]


def test_wado_not_acceptable(dw: DW) -> None:
    ct = dw.env.studies["ct"]
    reply = requests.get(f"{dw.root}/studies/{ct}", headers={**dw.auth(), "Accept": "application/zip"}, timeout=30)
    assert reply.status_code == 406 and reply.headers["Content-Type"] == "application/problem+json"


# -- STOW-RS -------------------------------------------------------------------------------------


def test_stow_stores_like_cstore_and_keeps_duplicates_once(dw: DW) -> None:
    instances = dicomdata.study("PID500", "STOW^SARA", ("MR",), 3)
    datasets = [i.dataset() for i in instances]
    client = dw.client()
    answer = client.store_instances(datasets)
    referenced = answer.ReferencedSOPSequence
    assert {str(r.ReferencedSOPInstanceUID) for r in referenced} == {i.sop_uid for i in instances}
    assert "FailedSOPSequence" not in answer
    study_uid = instances[0].study_uid
    assert answer.RetrieveURL == f"{dw.root}/studies/{study_uid}"
    assert _cfind_studies(dw.env, PatientID="PID500") == {study_uid}
    files_before = sorted(p.name for p in dw.env.cfg.store_dir.rglob("*") if p.is_file())
    again = client.store_instances(datasets)  # the duplicate policy of C-STORE: ignored, acknowledged
    assert len(again.ReferencedSOPSequence) == 3
    assert sorted(p.name for p in dw.env.cfg.store_dir.rglob("*") if p.is_file()) == files_before
    # a patient token was made for the new study, as for C-STORE
    assert dw.env.site.tokens.get(study_uid) is not None
    rows = dw.env.site.audit.entries(action="dicomweb.store")
    assert rows[0].actor == "apikey:reader" and rows[0].study_uid == study_uid


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for content_type, data in parts:
        out += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def _part10(instance: dicomdata.Instance) -> bytes:
    out = io.BytesIO()
    instance.dataset().save_as(out, enforce_file_format=True)
    return out.getvalue()


STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=b0undary'


def _stow(dw: DW, body: bytes, content_type: str = STOW_TYPE, path: str = "/studies") -> requests.Response:
    return requests.post(dw.root + path, data=body, headers={**dw.auth(), "Content-Type": content_type}, timeout=60)


def test_stow_bad_input(dw: DW) -> None:
    good = dicomdata.study("PID600", "BAD^INPUT", ("CT",), 2)
    count = dw.env.app.db.conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
    # malformed multipart: the closing boundary is missing
    reply = _stow(dw, _multipart([("application/dicom", _part10(good[0]))])[:-12])
    assert reply.status_code == 400 and "truncated" in reply.json()["detail"]
    # wrong content types
    reply = _stow(dw, _part10(good[0]), content_type="application/dicom")
    assert reply.status_code == 415 and reply.headers["Content-Type"] == "application/problem+json"
    reply = _stow(
        dw,
        _multipart([("application/dicom+json", b"[]")]),
        'multipart/related; type="application/dicom+json"; boundary=b0undary',
    )
    assert reply.status_code == 415
    # a non-DICOM part among good ones: stored what is DICOM, the rest in FailedSOPSequence
    reply = _stow(
        dw, _multipart([("application/dicom", b"this is not DICOM"), ("application/dicom", _part10(good[0]))])
    )
    assert reply.status_code == 202
    answer = reply.json()
    assert answer["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert answer["00081199"]["Value"][0]["00081155"]["Value"] == [good[0].sop_uid]
    # only non-DICOM: 409
    reply = _stow(dw, _multipart([("text/plain", b"hello")]))
    assert reply.status_code == 409
    # an instance of another study than the path names
    reply = _stow(dw, _multipart([("application/dicom", _part10(good[1]))]), path="/studies/1.2.3.4")
    assert reply.status_code == 409
    assert reply.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC409]
    after = dw.env.app.db.conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
    assert after == count + 1
    # path traversal and junk in UIDs
    for path in (
        "/studies/..%5C..%5Cetc",
        "/studies/1.2.3%2A/series",
        "/studies/1.2.3/series/..%5C..%5Cetc/instances",
        "/studies/1.2.3/series/4.5/instances/..%5Cx/frames/1",
    ):
        reply = requests.get(dw.root + path, headers=dw.auth(), timeout=30)
        assert reply.status_code == 400, path
        assert "not a DICOM UID" in reply.json()["detail"]
    # a slash never reaches a UID: no such resource
    reply = requests.get(dw.root + "/studies/..%2F..%2Fetc%2Fpasswd", headers=dw.auth(), timeout=30)
    assert reply.status_code == 404 and reply.headers["Content-Type"] == "application/problem+json"
    reply = requests.get(f"{dw.root}/studies/1.2.3.999", headers=dw.auth(), timeout=30)
    assert reply.status_code == 404 and "no study 1.2.3.999" in reply.json()["detail"]


def test_stow_oversized_body_is_refused_before_storing(env_factory: Any) -> None:
    env = env_factory()
    import dataclasses

    cfg = dataclasses.replace(env.site.config, dicomweb=dataclasses.replace(env.site.config.dicomweb, max_upload_mb=1))
    env.site.config = cfg
    server = WebServer(create_dicomweb_app(env.site), HOST, 0, threads=2)
    server.start()
    try:
        _, key = env.site.apikeys.add("big", "admin")
        inst = dicomdata.study("PID700", "BIG^BODY", ("CT",), 1, rows=1024, columns=1024)[0]
        count = env.app.db.conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        body = _multipart([("application/dicom", _part10(inst))])
        reply = requests.post(
            server.url + "/dicom-web/studies",
            data=body,
            timeout=60,
            headers={"Authorization": f"Bearer {key}", "Content-Type": STOW_TYPE},
        )
        assert reply.status_code == 413 and "max_upload_mb" in reply.json()["detail"]
        assert env.app.db.conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == count
    finally:
        server.stop()


# -- who may -------------------------------------------------------------------------------------


def test_credentials_required_and_checked(dw: DW) -> None:
    site = dw.env.site
    reply = requests.get(f"{dw.root}/studies", timeout=30)
    assert reply.status_code == 401 and reply.headers["Content-Type"] == "application/problem+json"
    assert "credentials are required" in reply.json()["detail"]
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    _, old = site.apikeys.add("old", "frontdesk")
    site.apikeys.revoke("old")
    reply = requests.get(f"{dw.root}/studies", headers=dw.auth(old), timeout=30)
    assert reply.status_code == 401 and "revoked" in reply.json()["detail"]
    _, expiring = site.apikeys.add("expiring", "frontdesk")
    with site.app.db.transaction() as conn:  # its expiry passed
        conn.execute(
            "UPDATE api_keys SET expires = '2000-01-01T00:00:00Z' WHERE key_hash = ?", (hash_secret(expiring),)
        )
    reply = requests.get(f"{dw.root}/studies", headers=dw.auth(expiring), timeout=30)
    assert reply.status_code == 401 and "expired" in reply.json()["detail"]
    reply = requests.get(f"{dw.root}/studies", headers=dw.auth("apk_made-up"), timeout=30)
    assert reply.status_code == 401 and "not known" in reply.json()["detail"]
    refused = site.audit.entries(action="access.refused")
    assert len(refused) == 3 and all(r.outcome == "failure" for r in refused)


def test_master_cookie_only_from_listed_hosts(env_factory: Any) -> None:
    import dataclasses

    for hosts, expected in ((("10.9.9.9",), 403), ((HOST,), 200), ((), 200)):
        env = env_factory()
        env.site.config = dataclasses.replace(
            env.site.config, api=dataclasses.replace(env.site.config.api, master_cookie_hosts=hosts)
        )
        server = WebServer(create_dicomweb_app(env.site), HOST, 0, threads=2)
        server.start()
        try:
            cookie = env.site.apikeys.new_master()
            reply = requests.get(server.url + "/dicom-web/studies", cookies={"master_cookie": cookie}, timeout=30)
            assert reply.status_code == expected, (hosts, reply.text)
            if expected == 403:
                assert "not accepted from 127.0.0.1" in reply.json()["detail"]
            replaced = env.site.apikeys.new_master()
            reply = requests.get(server.url + "/dicom-web/studies", cookies={"master_cookie": cookie}, timeout=30)
            assert reply.status_code == 401  # the old value stopped working
            assert replaced != cookie
        finally:
            server.stop()


def test_staff_session_cookie_of_the_web_site(live: Any) -> None:
    site_live = live()
    env = site_live.env
    server = WebServer(create_dicomweb_app(env.site), HOST, 0, threads=2)
    server.start()
    try:
        session = requests.Session()
        page = session.get(site_live.url + "/staff/login", timeout=30)
        session.post(
            site_live.url + "/staff/login",
            data={"name": DESK[0], "password": DESK[1], "csrf_token": env.csrf_of(page.text)},
            timeout=30,
        )
        reply = session.get(server.url + "/dicom-web/studies", timeout=30)
        assert reply.status_code == 200 and len(reply.json()) == 3
        assert env.site.audit.entries(action="dicomweb.search")[0].actor == DESK[0]
    finally:
        server.stop()


def test_patient_token_reads_its_own_study_only(dw: DW) -> None:
    ct, mr = dw.env.studies["ct"], dw.env.studies["mr"]
    token = dw.env.token("ct")
    client = DICOMwebClient(dw.root, headers={"Authorization": f"Bearer {token}"})
    assert len(client.retrieve_study(ct)) == 6
    assert len(client.search_for_series(ct)) == 2
    for path in (f"/studies/{mr}", f"/studies/{mr}/metadata", f"/studies/{mr}/series"):
        reply = requests.get(dw.root + path, headers=dw.auth(token), timeout=30)
        assert reply.status_code in (403, 404), path
    reply = requests.get(dw.root + "/studies", headers=dw.auth(token), timeout=30)
    assert reply.status_code == 403
    reply = requests.post(
        dw.root + "/studies",
        data=b"",
        timeout=30,
        headers={**dw.auth(token), "Content-Type": 'multipart/related; type="application/dicom"; boundary=x'},
    )
    assert reply.status_code == 403
    rows = dw.env.site.audit.entries(study_uid=ct, action="dicomweb.retrieve")
    assert rows[0].actor == "patient" and rows[0].token_id == dw.env.site.tokens.get(ct).id
    expired = dw.env.token("expired")
    reply = requests.get(dw.root + f"/studies/{dw.env.studies['expired']}", headers=dw.auth(expired), timeout=30)
    assert reply.status_code == 401


# -- WADO-URI and rendered, with curl -----------------------------------------------------------


def _curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    proc = subprocess.run(["curl", "-s", "-D", "-", *args], capture_output=True, timeout=60, check=True)
    head, _, body = proc.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_wado_uri_and_rendered_with_curl(dw: DW) -> None:
    ct = dw.env.studies["ct"]
    instance = dw.env.site.dicomweb.instances(ct)[0]
    auth = f"Authorization: Bearer {dw.key}"
    base = f"{dw.url}/wado?requestType=WADO&studyUID={ct}&seriesUID={instance.series_uid}&objectUID={instance.sop_uid}"
    status, headers, body = _curl("-H", auth, base + "&contentType=application/dicom")
    assert status == 200 and headers["content-type"] == "application/dicom"
    assert dcmread(io.BytesIO(body)).SOPInstanceUID == instance.sop_uid
    status, headers, body = _curl("-H", auth, base)
    assert status == 200 and headers["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    status, _, narrow = _curl("-H", auth, base + "&windowCenter=40&windowWidth=10")
    assert status == 200 and narrow != body  # another window, another picture
    status, headers, body = _curl("-H", auth, base + "&contentType=image/png&rows=32")
    assert status == 200 and body[:4] == b"\x89PNG"
    from PIL import Image

    assert max(Image.open(io.BytesIO(body)).size) == 32
    status, headers, body = _curl("-H", auth, base.replace("requestType=WADO", "requestType=XYZ"))
    assert status == 400 and headers["content-type"] == "application/problem+json"
    rendered = f"{dw.root}/studies/{ct}/series/{instance.series_uid}/instances/{instance.sop_uid}/rendered"
    status, headers, body = _curl("-H", auth, "-H", "Accept: image/png", rendered + "?window=40,400")
    assert status == 200 and body[:4] == b"\x89PNG"
    status, headers, body = _curl("-H", auth, f"{dw.root}/studies/{ct}/thumbnail")
    assert status == 200 and body[:2] == b"\xff\xd8"
    status, _, body = _curl(f"{dw.url}/wado?requestType=WADO&studyUID={ct}")
    assert status == 401 and json.loads(body)["status"] == 401


def test_metadata_bulk_of_an_implicit_vr_instance(dw: DW) -> None:
    """An instance stored in Implicit VR Little Endian (VRs from the dictionary) with a large overlay."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pydicom.uid import ImplicitVRLittleEndian

    inst = dicomdata.study("PID950", "IMPLICIT^IVY", ("CT",), 1)[0]
    ds = inst.dataset()
    overlay = bytes(range(256)) * 8
    ds.add_new(0x60000010, "US", 128)
    ds.add_new(0x60000011, "US", 128)
    ds.add_new(0x60003000, "OW", overlay)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    dw.env.app.store(fp.getvalue(), ImplicitVRLittleEndian, ds.SOPClassUID, ds.SOPInstanceUID, "MOD", "DISCPACS")
    client = dw.client()
    meta = client.retrieve_instance_metadata(inst.study_uid, inst.series_uid, inst.sop_uid)
    assert meta["60003000"]["vr"] == "OW" and "BulkDataURI" in meta["60003000"]
    assert meta["00100010"]["Value"] == [{"Alphabetic": "IMPLICIT^IVY"}]
    (value,) = client.retrieve_bulkdata(meta["60003000"]["BulkDataURI"])
    assert value == overlay
    (pixels,) = client.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"])
    assert pixels == ds.PixelData


def test_stow_same_instance_twice_in_one_request_is_stored_once(dw: DW) -> None:
    inst = dicomdata.study("PID960", "TWICE^TOM", ("CT",), 1)[0]
    part = _part10(inst)
    reply = _stow(dw, _multipart([("application/dicom", part), ("application/dicom", part)]))
    assert reply.status_code == 200
    assert [r["00081155"]["Value"][0] for r in reply.json()["00081199"]["Value"]] == [inst.sop_uid] * 2
    rows = dw.env.app.db.conn.execute("SELECT path FROM instances WHERE sop_uid = ?", (inst.sop_uid,)).fetchall()
    assert len(rows) == 1
    files = [p for p in dw.env.cfg.store_dir.rglob("*") if p.is_file() and inst.sop_uid.encode() in p.read_bytes()]
    assert len(files) == 1
