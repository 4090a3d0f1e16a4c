"""The staff forwarding page, the forwarding state in the study list, and the extended search in the study list
(Orthanc as the regional server)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from appliance.config import ForwardingConfig
from appliance.dicom.regional import DicomRegional
from appliance.forwarding.queue import ForwardQueue
from appliance.forwarding.search import ExtendedSearch

import dicomdata
from conftest import HOST, free_port


def text(response: Any) -> str:
    return response.get_data(as_text=True)


def _instances(env: Any, study_uid: str) -> list[str]:
    return [i.sop_uid for i in env.app.index.instances_of("STUDY", study_uid)]


def _row(page: str, cells: str) -> str:
    match = re.search(rf'<tr id="state-{cells}">(.*?)</tr>', page, re.S)
    assert match, cells
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def test_forwarding_page_counts_errors_and_admin_buttons(env: Any, admin: Any, desk: Any) -> None:
    queue = ForwardQueue(env.app.db)
    assert queue.restart() == 9  # CT 6, MR 2, the old one 1
    ct, mr = _instances(env, env.studies["ct"]), _instances(env, env.studies["mr"])
    queue.mark_sent(ct, "1.2.3.4")
    queue.apply_report("1.2.3.4", ct, {}, 10, 10)
    queue.mark_failed({mr[0]: "connection refused by 127.0.0.1:104"}, 600, 600)
    page = text(desk.get("/staff/forwarding"))
    assert _row(page, "committed") == "Committed 6 2"
    assert _row(page, "queued") == "Waiting 2 1"  # images: the MR's other one and the old one; series: the old one
    assert _row(page, "failed") == "Failed 1 1"
    assert "connection refused by 127.0.0.1:104" in page
    assert "Retry failed now" not in page  # buttons are the admins'
    token = env.csrf(desk, "/staff/forwarding")
    assert desk.post("/staff/forwarding/retry", data={"csrf_token": token}).status_code == 403
    # The study list says per study where it stands.
    studies = text(desk.get("/staff/studies"))
    assert re.search(
        rf'{env.studies["ct"]}.*?forward-state"><span class="badge state-committed">Committed', studies, re.S
    )
    assert re.search(rf'{env.studies["mr"]}.*?forward-state"><span class="badge state-failed">Failed', studies, re.S)
    token = env.csrf(admin, "/staff/forwarding")
    response = admin.post("/staff/forwarding/retry", data={"csrf_token": token}, follow_redirects=True)
    assert "1 failed instance(s) will be tried again at once" in text(response)
    assert queue.take(10)[0].sop_uid in mr + [i for i in _instances(env, env.studies["expired"])]
    response = admin.post("/staff/forwarding/restart", data={"csrf_token": token}, follow_redirects=True)
    assert "9 instance(s) queued to be sent again" in text(response)
    assert queue.status().counts == {"queued": 9, "sent": 0, "committed": 0, "failed": 0}


def _search(env: Any, port: int, timeout_ms: int = 30_000) -> ExtendedSearch:
    fwd = ForwardingConfig(
        extended_search=True,
        ae_title="REGIONAL",
        host=HOST,
        port=port,
        dicom_timeout_ms=timeout_ms,
        tcp_timeout_ms=2000,
    )
    return ExtendedSearch(
        DicomRegional(fwd, env.cfg.dicom.ae_title), env.cfg.dicom.ae_title, "REGIONAL", timeout_ms / 1000
    )


def test_study_list_shows_regional_only_studies(env: Any, desk: Any, orthanc_factory: Any, tmp_path: Path) -> None:
    regional = orthanc_factory(aet="REGIONAL")
    remote = dicomdata.study("PID101", "SMITH^ALICE", ("MR",), 2, study_description="MR HEAD")
    held = dicomdata.study("PID100", "SMITH^ANNA", ("CT",), 1)
    held[0].study_uid = env.studies["ct"]  # one image of the local CT study is also at the regional PACS
    for inst in remote + held:
        regional.post("/instances", inst.write(tmp_path).read_bytes())
    regional.put_modality("appliance", env.cfg.dicom.ae_title, free_port())  # Orthanc answers known AEs only
    env.app.extended_search = _search(env, regional.dicom_port)
    page = text(desk.get("/staff/studies?name=SMITH"))
    local, _, regional_part = page.partition('id="regional-studies"')
    assert env.studies["ct"] in local and env.studies["ct"] not in regional_part
    assert f'data-study-uid="{remote[0].study_uid}"' in regional_part
    assert "SMITH, ALICE" in regional_part and "Regional only" in regional_part
    assert "regional-warning" not in page
    # A search that matches nothing regionally lists nothing more.
    assert 'id="regional-studies"' not in text(desk.get("/staff/studies?name=JONES"))


def test_study_list_with_the_regional_server_down_warns(env: Any, desk: Any) -> None:
    env.app.extended_search = _search(env, free_port(), timeout_ms=2000)
    page = text(desk.get("/staff/studies?name=SMITH"))
    assert env.studies["ct"] in page
    assert 'id="regional-warning"' in page and "REGIONAL did not answer" in page
