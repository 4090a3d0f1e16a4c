"""Orthanc's DICOMweb plugin (Debian ``orthanc-dicomweb``) as a client of our DICOMweb server.

Orthanc is configured with the appliance as a remote DICOMweb server (``DicomWeb.Servers``, with our API key in
its HTTP headers) and driven through its ``/dicom-web/servers/appliance/...`` REST calls: QIDO through ``get``,
WADO-RS through ``retrieve`` (the study lands in Orthanc), STOW-RS through ``stow`` (Orthanc's study lands here).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread

from webui.dicomweb import create_dicomweb_app
from webui.server import WebServer

import dicomdata
from conftest import HOST, wait_until
from orthanc_support import DICOMWEB_PLUGIN, Orthanc


@pytest.fixture
def served(env: Any) -> Iterator[tuple[Any, str, str]]:
    server = WebServer(create_dicomweb_app(env.site), HOST, 0, threads=4)
    server.start()
    _, key = env.site.apikeys.add("orthanc", "frontdesk")
    yield env, server.url, key
    server.stop()


@pytest.fixture(scope="module")
def orthanc_dw(orthanc_factory: Any) -> Orthanc:
    return orthanc_factory(
        aet="ORTHANCDW", plugins=[DICOMWEB_PLUGIN], settings={"DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    )


def _register(orthanc: Orthanc, url: str, key: str) -> None:
    orthanc.put(
        "/dicom-web/servers/appliance", {"Url": url + "/dicom-web/", "HttpHeaders": {"Authorization": f"Bearer {key}"}}
    )


def test_orthanc_queries_and_retrieves_from_us(served: tuple[Any, str, str], orthanc_dw: Orthanc) -> None:
    env, url, key = served
    _register(orthanc_dw, url, key)
    ct = env.studies["ct"]
    studies = orthanc_dw.post(
        "/dicom-web/servers/appliance/get", {"Uri": "/studies", "Arguments": {"PatientName": "smith*"}}
    )
    assert [s["0020000D"]["Value"][0] for s in studies] == [ct]
    series = orthanc_dw.post("/dicom-web/servers/appliance/get", {"Uri": f"/studies/{ct}/series"})
    assert len(series) == 2
    orthanc_dw.post("/dicom-web/servers/appliance/retrieve", {"Resources": [{"Study": ct}]})
    stored = {i.sop_uid: i for i in env.site.dicomweb.instances(ct)}
    assert orthanc_dw.sop_uids(ct) == set(stored)
    for sop_uid, instance in stored.items():
        theirs = dcmread(io.BytesIO(orthanc_dw.instance_file(orthanc_dw.instance_id(sop_uid) or "")))
        ours = dcmread(env.app.file_path(instance))
        assert np.array_equal(theirs.pixel_array, ours.pixel_array)
        assert theirs.PatientName == ours.PatientName
    assert env.site.audit.entries(action="dicomweb.retrieve")[0].actor == "apikey:orthanc"


def test_orthanc_stores_to_us(served: tuple[Any, str, str], orthanc_dw: Orthanc) -> None:
    env, url, key = served
    _register(orthanc_dw, url, key)
    instances = dicomdata.study("PID800", "ORTHANC^STOW", ("MR",), 3)
    ids = []
    for inst in instances:
        out = io.BytesIO()
        inst.dataset().save_as(out, enforce_file_format=True)
        ids.append(orthanc_dw.post("/instances", out.getvalue())["ID"])
    study_id = orthanc_dw.post("/tools/lookup", instances[0].study_uid)[0]["ID"]
    orthanc_dw.post("/dicom-web/servers/appliance/stow", {"Resources": [study_id]})
    wait_until(lambda: env.app.index.study(instances[0].study_uid) is not None, timeout=30)
    assert {i.sop_uid for i in env.site.dicomweb.instances(instances[0].study_uid)} == {i.sop_uid for i in instances}
    # stored as C-STORE stores: found by C-FIND
    from pydicom.dataset import Dataset

    ident = Dataset()
    ident.PatientID = "PID800"
    ident.StudyInstanceUID = ""
    assert [str(a.StudyInstanceUID) for a in env.app.find(ident, "STUDY")] == [instances[0].study_uid]
