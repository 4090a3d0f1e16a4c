"""The JSON API under ``/api/v1`` through ``curl`` against the web site served by waitress."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from typing import Any

import pytest
from pydicom.dataset import Dataset

DESK = ("desk", "desk-password-1")


def curl(url: str, *args: str, key: str | None = None, data: Any = None) -> tuple[int, str, Any]:
    """``curl`` a URL: (status, content type, JSON body or bytes)."""
    cmd = ["curl", "-s", "-o", "-", "-w", "\n%{http_code} %{content_type}", url, *args]
    if key:
        cmd += ["-H", f"Authorization: Bearer {key}"]
    if data is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(data)]
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=True)
    body, _, tail = proc.stdout.rpartition(b"\n")
    status, _, ctype = tail.decode().partition(" ")
    if "json" in ctype:
        return int(status), ctype, json.loads(body or b"null")
    return int(status), ctype, body


@pytest.fixture
def api(live: Any) -> tuple[Any, str, str, str]:
    served = live()
    _, admin = served.env.site.apikeys.add("ris-admin", "admin")
    _, desk = served.env.site.apikeys.add("ris-desk", "frontdesk")
    return served, served.url + "/api/v1", admin, desk


def test_openapi_describes_every_route(api: tuple[Any, str, str, str]) -> None:
    served, base, _, _ = api
    status, ctype, spec = curl(base + "/openapi.json")
    assert status == 200 and ctype.startswith("application/json")
    assert spec["openapi"].startswith("3.1") and spec["paths"]
    rules = {
        (r.rule, m)
        for r in served.env.flask.url_map.iter_rules()
        if r.rule.startswith("/api/v1")
        for m in r.methods - {"HEAD", "OPTIONS"}
    }
    documented = set()
    for path, ops in spec["paths"].items():
        for method in ops:
            flask_path = "/api/v1" + path.replace("{job_id}", "<int:job_id>").replace("{step_id}", "<int:step_id>")
            flask_path = flask_path.replace("{", "<").replace("}", ">")
            documented.add((flask_path, method.upper()))
    # every route is documented (link actions and job actions are one route each, listed per action)
    for rule, method in rules:
        if "<action>" in rule:
            assert any(p.startswith(rule.split("<action>")[0]) and m == method for p, m in documented), rule
        elif rule != "/api/v1/openapi.json":
            assert (rule, method) in documented, (rule, method)


def test_credentials_and_problem_details(api: tuple[Any, str, str, str]) -> None:
    served, base, _admin, desk = api
    status, ctype, body = curl(base + "/studies")
    assert status == 401 and ctype == "application/problem+json" and body["status"] == 401
    status, _, body = curl(base + "/studies", key="apk_wrong")
    assert status == 401 and "not known" in body["detail"]
    token = served.env.token("ct")
    status, _, body = curl(base + "/studies", key=token)
    assert status == 403 and "DICOMweb only" in body["detail"]
    served.env.site.apikeys.revoke("ris-desk")
    status, _, body = curl(base + "/health", key=desk)
    assert status == 401 and "revoked" in body["detail"]


def test_health(api: tuple[Any, str, str, str]) -> None:
    _, base, admin, _ = api
    status, _, health = curl(base + "/health", key=admin)
    assert status == 200
    assert health["services"]["web"]["up"] is True
    assert health["storage"]["free_bytes"] > 0 and health["storage"]["counts"]["studies"] == 3
    assert isinstance(health["robots"], list) and "disc_jobs" in health["queues"]
    assert health["status"] in ("ok", "degraded")
    first = health["storage"]["storages"][0]
    assert first["available"] is True and first["problem"] == "" and first["path"]


def test_studies_search_details_delete(api: tuple[Any, str, str, str]) -> None:
    served, base, admin, desk = api
    env = served.env
    status, _, found = curl(base + "/studies?name=smith", key=desk)
    assert status == 200 and [s["study_uid"] for s in found["studies"]] == [env.studies["ct"]]
    status, _, bad = curl(base + "/studies?period=fortnight", key=desk)
    assert status == 400 and "period" in bad["detail"]
    status, _, study = curl(f"{base}/studies/{env.studies['ct']}", key=desk)
    assert status == 200 and len(study["series"]) == 2 and study["patient_link"]["state"] == "valid"
    status, _, body = curl(f"{base}/studies/1.2.3.4", key=desk)
    assert status == 404 and body["status"] == 404
    mr = env.studies["mr"]
    status, _, body = curl(f"{base}/studies/{mr}", "-X", "DELETE", key=desk)
    assert status == 403 and "admin" in body["detail"]
    status, _, body = curl(f"{base}/studies/{mr}", "-X", "DELETE", key=admin)
    assert status == 200 and body["deleted_instances"] == 2
    ident = Dataset()
    ident.StudyInstanceUID = mr
    assert list(env.app.find(ident, "STUDY")) == []
    rows = env.site.audit.entries(study_uid=mr, action="api.change")
    assert rows[0].actor == "apikey:ris-admin" and "study.delete" in rows[0].detail


def test_patient_links(api: tuple[Any, str, str, str]) -> None:
    served, base, _, desk = api
    ct = served.env.studies["ct"]
    status, _, link = curl(f"{base}/studies/{ct}/link", "-X", "POST", key=desk)
    assert status == 200 and "/token?" in link["link"]
    until = (dt.date.today() + dt.timedelta(days=400)).isoformat()
    status, _, ext = curl(f"{base}/studies/{ct}/link/extend", key=desk, data={"until": until})
    assert status == 200 and ext["valid_until"] == until, ext
    status, _, bad = curl(f"{base}/studies/{ct}/link/extend", key=desk, data={"until": "next week"})
    assert status == 400 and "YYYY-MM-DD" in bad["detail"]
    status, ctype, pdf = curl(f"{base}/studies/{ct}/link/slip.pdf", key=desk)
    assert status == 200 and ctype == "application/pdf" and pdf.startswith(b"%PDF")
    status, _, revoked = curl(f"{base}/studies/{ct}/link/revoke", "-X", "POST", key=desk)
    assert status == 200 and revoked["state"] == "revoked"
    assert served.env.site.tokens.resolve(served.env.token("ct")) is None
    status, _, _body = curl(f"{base}/studies/{ct}/link/explode", "-X", "POST", key=desk)
    assert status == 404


def test_jobs_and_robots(api: tuple[Any, str, str, str]) -> None:
    served, base, _, desk = api
    ct = served.env.studies["ct"]
    status, _, robots = curl(base + "/robots", key=desk)
    assert status == 200 and isinstance(robots["robots"], list)
    names = served.env.site.discs.robot_names()
    status, _, bad = curl(base + "/jobs", key=desk, data={"study_uid": ct, "robot": "no-such-robot"})
    assert status == 400 and "no robot 'no-such-robot'" in bad["detail"]
    status, _, bad = curl(base + "/jobs", key=desk, data={"study_uid": ct, "copies": "two"})
    assert status == 400 and "copies" in bad["detail"]
    status, _, bad = curl(base + "/jobs", "-X", "POST", "-H", "Content-Type: text/plain", "--data", "x", key=desk)
    assert status == 415
    status, _, bad = curl(
        base + "/jobs", "-X", "POST", "-H", "Content-Type: application/json", "--data", "{oops", key=desk
    )
    assert status == 400 and "JSON object" in bad["detail"]
    assert names and served.env.site.discs.job_rows() == []  # the refused requests made no job
    status, _, job = curl(base + "/jobs", key=desk, data={"study_uid": ct, "copies": 2})
    assert status == 201 and job["copies"] == 2 and job["state"] == "queued"
    status, _, listed = curl(base + "/jobs", key=desk)
    assert job["id"] in [j["id"] for j in listed["jobs"]]
    status, _, cancelled = curl(f"{base}/jobs/{job['id']}/cancel", "-X", "POST", key=desk)
    assert status == 200 and cancelled["state"] == "cancelled"
    status, _, again = curl(f"{base}/jobs/{job['id']}/cancel", "-X", "POST", key=desk)
    assert status == 409 and "cancelled" in again["detail"]


def test_worklist(api: tuple[Any, str, str, str]) -> None:
    _served, base, admin, desk = api
    item = {
        "PatientID": "WL1",
        "PatientName": "WORK^LIST",
        "AccessionNumber": "A-77",
        "RequestedProcedureDescription": "CT HEAD",
        "steps": [
            {
                "Modality": "CT",
                "ScheduledStationAETitle": "CT1",
                "ScheduledProcedureStepStartDate": "20300101",
                "ScheduledProcedureStepStartTime": "0900",
                "ScheduledProcedureStepDescription": "HEAD",
            }
        ],
    }
    status, _, created = curl(base + "/worklist", key=desk, data=item)
    assert status == 201, created
    study_uid = created["created"][0]["study_uid"]
    status, _, listed = curl(base + "/worklist?patient=WL1", key=desk)
    assert [i["study_uid"] for i in listed["items"]] == [study_uid]
    step_id = listed["items"][0]["steps"][0]["id"]
    status, _, reset = curl(f"{base}/worklist/steps/{step_id}/reset", "-X", "POST", key=desk)
    assert status == 200 and reset["reset_steps"] in (0, 1)
    incomplete = {
        **{k: v for k, v in item.items() if k != "PatientName"},
        "PatientID": "WL2",
        "AccessionNumber": "A-78",
    }
    incomplete["steps"] = [*item["steps"], {"Modality": "MR"}]
    status, _, bad = curl(base + "/worklist", key=desk, data=incomplete)
    assert status == 400 and "PatientName" in bad["detail"], bad
    status, _, listed = curl(base + "/worklist?patient=WL2", key=desk)
    assert listed["items"] == []  # nothing half-written
    status, _, body = curl(f"{base}/worklist/{study_uid}", "-X", "DELETE", key=desk)
    assert status == 403
    status, _, body = curl(f"{base}/worklist/{study_uid}", "-X", "DELETE", key=admin)
    assert status == 200 and body["deleted_steps"] == 1


def test_nodes(api: tuple[Any, str, str, str]) -> None:
    _, base, _, desk = api
    status, _, nodes = curl(base + "/nodes", key=desk)
    assert status == 200 and isinstance(nodes["nodes"], list)
    status, _, _body = curl(base + "/nodes/NOBODY/echo", "-X", "POST", key=desk)
    assert status == 404


def test_staff_session_needs_csrf_to_change(api: tuple[Any, str, str, str], tmp_path: Any) -> None:
    served, base, _, _ = api
    jar = str(tmp_path / "cookies")
    page = subprocess.run(
        ["curl", "-s", "-c", jar, served.url + "/staff/login"], capture_output=True, text=True, check=True
    ).stdout
    csrf = served.env.csrf_of(page)
    subprocess.run(
        [
            "curl",
            "-s",
            "-b",
            jar,
            "-c",
            jar,
            "--data-urlencode",
            f"name={DESK[0]}",
            "--data-urlencode",
            f"password={DESK[1]}",
            "--data-urlencode",
            f"csrf_token={csrf}",
            served.url + "/staff/login",
        ],
        check=True,
        capture_output=True,
    )
    ct = served.env.studies["ct"]
    staff_page = subprocess.run(
        ["curl", "-s", "-b", jar, "-c", jar, served.url + "/staff/studies"], capture_output=True, text=True, check=True
    ).stdout
    csrf = served.env.csrf_of(staff_page)  # the signed-in session's token
    status, _, body = curl(base + "/studies?name=smith", "-b", jar)
    assert status == 200 and body["total"] == 1
    status, _, body = curl(f"{base}/studies/{ct}/link", "-X", "POST", "-b", jar)
    assert status == 400
    status, _, body = curl(f"{base}/studies/{ct}/link", "-X", "POST", "-b", jar, "-H", f"X-CSRF-Token: {csrf}")
    assert status == 200 and "/token?" in body["link"], body
