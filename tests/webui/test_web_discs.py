"""Staff pages of issue 8 through the Flask test client: burn, burn queue, robots, worklist, HL7 log, certificates."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import hl7support

from appliance.discs.jobs import DiscSpec, JobState
from hl7.handlers import MessageProcessor
from webui import presenters


def post(env: Any, client: Any, path: str, data: dict | None = None) -> Any:
    payload = dict(data or {})
    payload["csrf_token"] = env.csrf(client)
    return client.post(path, data=payload)


def text(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def follow(client: Any, response: Any) -> str:
    assert response.status_code in (302, 303), text(response)
    return text(client.get(response.headers["Location"]))


def finish(env: Any, job_id: int, to: JobState = JobState.DONE, label: Path | None = None) -> None:
    """Move a job along as the engine would (no robot needed)."""
    jobs = env.site.discs.jobs
    jobs.transition(job_id, JobState.AUTHORING, "test")
    files = {"label": {"pdf": str(label)}} if label else {}
    jobs.set_discs(job_id, [DiscSpec(1, "CD", 1000, "VOL", files)])
    jobs.transition(job_id, JobState.SUBMITTED, "test", media="CD", disc_count=1, size=1000)
    jobs.transition(job_id, to, "test", **({"error": "drive failed"} if to is JobState.FAILED else {}))


def hl7_order(env: Any, **kwargs: Any) -> None:
    processor = MessageProcessor(env.app, env.cfg.hl7)
    ack = processor(hl7support.orm(**kwargs).encode("latin-1"), "127.0.0.1")
    assert ack is not None and b"|AA|" in ack, ack


# -- routes need a login, CSRF and the right role --------------------------------------------------


def test_new_pages_need_a_login(env, client) -> None:
    for path in ("/staff/jobs", "/staff/robots", "/staff/worklist", "/staff/hl7", "/staff/jobs/1/label.pdf"):
        response = client.get(path)
        assert response.status_code == 302 and "/staff/login" in response.headers["Location"], path
    assert client.get("/api/jobs").status_code == 401
    assert client.get("/api/robots").status_code == 401


def test_posts_need_csrf(env, admin) -> None:
    ct = env.studies["ct"]
    for path in (
        f"/staff/studies/{ct}/burn",
        "/staff/jobs/1/retry",
        "/staff/worklist/purge",
        "/staff/worklist/steps/1/reset",
        "/staff/worklist/steps/1/delete",
        "/staff/worklist/items/1.2.3/delete",
    ):
        response = admin.post(path, data={"robot": "epson"})
        assert response.status_code == 400 and "form has expired" in text(response), path
    assert env.site.discs.jobs.recent() == []


# -- burn ------------------------------------------------------------------------------------------


def test_study_page_has_the_burn_form(env, desk) -> None:
    page = text(desk.get(f"/staff/studies/{env.studies['ct']}"))
    assert 'id="burn-slot"' in page and 'action="/staff/studies/' in page
    assert '<option value="epson">' in page and '<option value="primera">' in page
    assert 'id="burn-copies"' in page


def test_burn_queues_a_job_like_the_cli(env, desk) -> None:
    ct = env.studies["ct"]
    response = post(env, desk, f"/staff/studies/{ct}/burn", {"robot": "primera", "copies": "2"})
    assert response.status_code == 302 and response.headers["Location"].endswith("?job=1")
    page = follow(desk, response)
    assert "Disc job 1 queued on primera (2 copies)." in page
    assert 'href="/staff/jobs#job-1"' in page
    job = env.site.discs.jobs.get(1)
    assert (job.state, job.robot, job.copies, job.source, job.instances) == (JobState.QUEUED, "primera", 2, "manual", 6)
    assert job.studies == (ct,) and job.patient_name == "SMITH^ANNA"
    assert "burn requested on the web by desk" in env.site.discs.jobs.events(1)[0].reason
    # Default robot and copies.
    post(env, desk, f"/staff/studies/{ct}/burn", {})
    assert (env.site.discs.jobs.get(2).robot, env.site.discs.jobs.get(2).copies) == ("epson", env.cfg.burn.copies)
    assert any(e.action == "disc.burn" for e in env.site.audit.entries(study_uid=ct))


def test_burn_refuses_bad_input(env, admin) -> None:
    ct = env.studies["ct"]
    for data, message in (
        ({"robot": "nope"}, "there is no robot 'nope'"),
        ({"copies": "0"}, "copies must be 1-99"),
        ({"copies": "100"}, "copies must be 1-99"),
        ({"copies": "x"}, "copies must be a number"),
    ):
        response = post(env, admin, f"/staff/studies/{ct}/burn", data)
        assert response.status_code == 400 and message in text(response), data
    assert post(env, admin, "/staff/studies/1.2.3.4/burn", {}).status_code == 404
    assert env.site.discs.jobs.recent() == []


# -- burn queue ------------------------------------------------------------------------------------


def test_queue_page_and_json(env, desk) -> None:
    job = env.site.discs.burn(env.studies["mr"], "epson", 1, "test")
    page = text(desk.get("/staff/jobs"))
    assert 'id="job-1"' in page and "JONES, BOB" in page and "Waiting" in page and ">Cancel<" in page
    assert ">Retry<" not in page and 'data-api="/api/jobs"' in page
    data = desk.get("/api/jobs").get_json()["jobs"]
    assert data[0]["id"] == job.id and data[0]["state"] == "queued" and data[0]["actions"] == ["cancel"]
    assert data[0]["studies"] == [env.studies["mr"]] and data[0]["robot"] == "epson"


def test_empty_queue(env, desk) -> None:
    assert "No disc jobs yet." in text(desk.get("/staff/jobs"))
    assert desk.get("/api/jobs").get_json() == {"jobs": []}


def test_cancel_retry_reburn_reprint_follow_the_cli_rules(env, desk, tmp_path) -> None:
    site = env.site
    first = site.discs.burn(env.studies["ct"], "epson", 1, "test").id
    # Wrong state: a clear message, no traceback.
    for action in ("retry", "reburn", "reprint"):
        page = follow(desk, post(env, desk, f"/staff/jobs/{first}/{action}"))
        assert f"Job {first}: job {first} is queued; only" in page, action
    page = follow(desk, post(env, desk, f"/staff/jobs/{first}/cancel"))
    assert f"Job {first} is cancelled." in page and site.discs.jobs.get(first).state is JobState.CANCELLED
    assert "is cancelled; only queued or authoring or submitted or burning jobs can be cancelled" in follow(
        desk, post(env, desk, f"/staff/jobs/{first}/cancel")
    )
    page = follow(desk, post(env, desk, f"/staff/jobs/{first}/retry"))
    assert f"Job {first} is queued again." in page
    assert site.discs.jobs.get(first).state is JobState.QUEUED and site.discs.jobs.get(first).attempt == 2
    label = tmp_path / "label.pdf"
    label.write_bytes(b"%PDF-1.4 test label")
    finish(env, first, label=label)
    assert desk.get("/api/jobs").get_json()["jobs"][0]["actions"] == ["reburn", "reprint"]
    page = follow(desk, post(env, desk, f"/staff/jobs/{first}/reburn"))
    assert f"Job {first + 1} queued: job {first} burned again." in page
    page = follow(desk, post(env, desk, f"/staff/jobs/{first}/reprint"))
    assert f"Job {first + 2} queued: job {first} again with new labels." in page
    assert [site.discs.jobs.get(first + n).source for n in (1, 2)] == ["reburn", "reprint"]
    assert site.discs.jobs.get(first + 1).parent_id == first
    failed = site.discs.burn(env.studies["mr"], "epson", 1, "test").id
    finish(env, failed, JobState.FAILED)
    row = next(j for j in desk.get("/api/jobs").get_json()["jobs"] if j["id"] == failed)
    assert row["actions"] == ["retry"] and row["note"] == "drive failed"
    assert "drive failed" in text(desk.get("/staff/jobs"))
    assert post(env, desk, f"/staff/jobs/{failed}/explode").status_code == 404
    assert post(env, desk, "/staff/jobs/999/retry").status_code == 404
    actions = [e.action for e in site.audit.entries(limit=50)]
    assert "disc.cancel" in actions and "disc.reburn" in actions


def test_label_preview(env, desk, tmp_path) -> None:
    job = env.site.discs.burn(env.studies["ct"], "epson", 1, "test").id
    assert desk.get(f"/staff/jobs/{job}/label.pdf").status_code == 404  # not authored yet
    label = tmp_path / "label.pdf"
    label.write_bytes(b"%PDF-1.4 test label")
    finish(env, job, label=label)
    response = desk.get(f"/staff/jobs/{job}/label.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.data == b"%PDF-1.4 test label"
    assert f'href="/staff/jobs/{job}/label.pdf?disc=1"' in text(desk.get("/staff/jobs"))
    assert desk.get(f"/staff/jobs/{job}/label.pdf?disc=2").status_code == 404
    assert desk.get("/staff/jobs/999/label.pdf").status_code == 404
    label.unlink()  # purged staging: no preview, no error
    assert desk.get(f"/staff/jobs/{job}/label.pdf").status_code == 404
    assert desk.get("/api/jobs").get_json()["jobs"][0]["labels"] == []


# -- robots ----------------------------------------------------------------------------------------


def test_robots_page_shows_each_robot_and_usb(env, desk) -> None:
    page = text(desk.get("/staff/robots"))
    assert 'id="robot-epson"' in page and 'id="robot-primera"' in page
    assert "Bridge offline" in page  # nothing runs the demo bridges here
    assert 'id="usb"' in page
    robots = desk.get("/api/robots").get_json()["robots"]
    assert [r["name"] for r in robots] == ["epson", "primera"]
    assert all(r["online"] is False and r["reason"] for r in robots)


def test_robots_page_warns_of_an_epson_robot_without_a_label_template(env, desk) -> None:
    page = text(desk.get("/staff/robots"))
    epson = page.split('id="robot-epson"', 1)[1].split("</section>", 1)[0]
    primera = page.split('id="robot-primera"', 1)[1].split("</section>", 1)[0]
    assert 'data-warning="setup"' in epson and "no label template is configured" in epson and ".tdd" in epson
    assert "without printing a label" in epson
    assert 'data-warning="setup"' not in primera


def test_robots_with_a_running_simulator_show_levels(env, desk) -> None:
    from appliance.discs.publishing import robot_tables
    from robots.registry import create_simulator

    table = {**robot_tables(env.cfg)["epson"], "simulator": {"status_interval": 0.05}}
    sim = create_simulator("epson", table)
    sim.start()
    try:
        robot = hl7support.wait_for(
            lambda: next(
                (r for r in desk.get("/api/robots").get_json()["robots"] if r["name"] == "epson" and r["online"]), None
            )
        )
        assert robot["ink"] and robot["media"] and robot["state"] in ("idle", "busy")
        page = text(desk.get("/staff/robots"))
        assert "Bridge online" in page and "<meter" in page
    finally:
        sim.stop()


# -- worklist --------------------------------------------------------------------------------------


def test_worklist_shows_hl7_items_and_filters(env, desk) -> None:
    hl7_order(env)
    hl7_order(
        env,
        msg_id="MSG0002",
        name="Brown^Carl",
        pid="P77",
        zds="1.2.3.77",
        accession="ACC-77",
        rp_id="RP-77",
        sps_id="SPS-77",
        modality="CT",
        start="20260906090000",
    )
    page = text(desk.get("/staff/worklist"))
    assert "COMPRESSEDSAMPLES, MR1" in page and "BROWN, CARL" in page.upper() and "SPS-1" in page
    assert "2 item(s)" in page and "tone-open" in page
    assert "1 item(s)" in text(desk.get("/staff/worklist?modality=ct"))
    assert "1 item(s)" in text(desk.get("/staff/worklist?date=2026-09-05"))
    assert "1 item(s)" in text(desk.get("/staff/worklist?patient=brown"))
    assert "0 item(s)" in text(desk.get("/staff/worklist?status=COMPLETED"))
    assert desk.get("/staff/worklist?status=NOPE").status_code == 400
    assert desk.get("/staff/worklist?date=tomorrow").status_code == 400
    assert ">Delete item<" not in page  # front desk: no deletion


def test_worklist_status_colours_reset_and_delete(env, admin, desk) -> None:
    hl7_order(env)
    hl7_order(
        env,
        msg_id="MSG0002",
        name="Brown^Carl",
        pid="P77",
        zds="1.2.3.77",
        accession="ACC-77",
        rp_id="RP-77",
        sps_id="SPS-77",
        modality="CT",
    )
    wl = env.app.worklist
    steps = {r.sps_id: r.id for r in wl.items()}
    with env.app.db.transaction() as conn:
        from appliance.worklist.store import ItemKey, SpsStatus

        wl.set_step_status(conn, ItemKey("1.2.3.4", "SPS-1"), SpsStatus.COMPLETED)
        wl.set_step_status(conn, ItemKey("1.2.3.77", "SPS-77"), SpsStatus.DISCONTINUED)
    page = text(admin.get("/staff/worklist"))
    assert f'class="wl-step tone-done" id="step-{steps["SPS-1"]}"' in page
    assert f'class="wl-step tone-ended" id="step-{steps["SPS-77"]}"' in page
    # Front desk may reset a step, not delete.
    response = post(env, desk, f"/staff/worklist/steps/{steps['SPS-1']}/reset?status=COMPLETED")
    assert response.headers["Location"].endswith("/staff/worklist?status=COMPLETED")
    assert "SCHEDULED again" in follow(desk, response)
    assert {r.sps_id: r.status for r in wl.items()}["SPS-1"] == "SCHEDULED"
    assert post(env, desk, "/staff/worklist/steps/999/reset").status_code == 404
    for path in (
        f"/staff/worklist/steps/{steps['SPS-1']}/delete",
        "/staff/worklist/items/1.2.3.4/delete",
        "/staff/worklist/purge",
    ):
        assert post(env, desk, path).status_code == 403, path
    assert wl.count() == 2
    assert "1 completed, discontinued or cancelled step(s) deleted." in follow(
        admin, post(env, admin, "/staff/worklist/purge")
    )
    assert [r.sps_id for r in wl.items()] == ["SPS-1"]
    assert "The step was deleted." in follow(admin, post(env, admin, f"/staff/worklist/steps/{steps['SPS-1']}/delete"))
    assert post(env, admin, f"/staff/worklist/steps/{steps['SPS-1']}/delete").status_code == 404
    hl7_order(env, msg_id="MSG0003")
    assert "its 1 step(s) were deleted" in follow(admin, post(env, admin, "/staff/worklist/items/1.2.3.4/delete"))
    assert post(env, admin, "/staff/worklist/items/1.2.3.4/delete").status_code == 404
    assert "The worklist is empty" in text(admin.get("/staff/worklist"))


# -- HL7 log and certificates ------------------------------------------------------------------------


def test_hl7_log_for_admins(env, admin, desk) -> None:
    hl7_order(env)
    processor = MessageProcessor(env.app, env.cfg.hl7)
    processor(b"MSH|^~\\&|RIS|HOSP|PACS|HOSP|20260905120000||XYZ^Q99|BAD1|P|2.3.1\r", "127.0.0.1")
    page = text(admin.get("/staff/hl7"))
    assert "ORM^O01" in page and "MSG0001" in page and "BAD1" in page and "PID|||4MR1" in page
    assert "MSG0001" not in text(admin.get("/staff/hl7?ack=AR")) or "BAD1" in text(admin.get("/staff/hl7?ack=AR"))
    assert "BAD1" not in text(admin.get("/staff/hl7?ack=AA"))
    assert admin.get("/staff/hl7?ack=XX").status_code == 400
    assert desk.get("/staff/hl7").status_code == 403
    assert 'href="/staff/hl7"' in text(admin.get("/staff/logs"))


def test_certificate_banner_for_admins_only(env, admin, desk, monkeypatch) -> None:
    from appliance import tls_contexts

    monkeypatch.setattr(
        tls_contexts, "expiry_warnings", lambda cfg: ["certificate /x/server.crt expires in 12 days (2026-12-05)"]
    )
    env.site.admin._cert_cache = None
    page = text(admin.get("/staff/studies"))
    assert 'id="cert-warnings"' in page and "expires in 12 days" in page
    assert 'id="cert-warnings"' not in text(desk.get("/staff/studies"))


def test_no_banner_without_expiring_certificates(env, admin) -> None:
    assert 'id="cert-warnings"' not in text(admin.get("/staff/studies"))


def test_the_burn_queue_names_studies_by_date_and_description(env, admin) -> None:
    """Not "study 1" (issue 20, item 11): the date and description a person recognises."""
    ct = env.studies["ct"]
    env.site.discs.burn(ct, actor="test")
    row = next(r for r in presenters.job_rows(env.site.discs.job_rows()) if ct in r["studies"])
    date = env.site.studies.study(ct)["study_date"]
    label = f"{date[:4]}-{date[4:6]}-{date[6:]} CT THORAX"
    assert row["study_labels"] == [label]
    assert label in text(admin.get("/staff/jobs"))
