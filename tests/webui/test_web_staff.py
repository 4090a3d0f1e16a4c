"""The staff UI and the JSON API through the Flask test client: every route and error path."""

from __future__ import annotations

import datetime as dt
import io
import logging
import sqlite3
import zipfile

import pytest

from appliance.config import NodeConfig
from appliance.db import MIGRATIONS, Database
from appliance.log import setup_logging
from appliance.nodes import NodeRegistry

from conftest import HOST, free_port

ADMIN = ("admin", "admin-password-1")
DESK = ("desk", "desk-password-1")


def post(env, client, path: str, data: dict | None = None, csrf_page: str = "/staff/studies"):
    payload = dict(data or {})
    payload["csrf_token"] = env.csrf(client, csrf_page)
    return client.post(path, data=payload)


def text(response) -> str:
    return response.get_data(as_text=True)


# -- sign-in ----------------------------------------------------------------------------------------


def test_pages_need_a_login(env, client) -> None:
    for path in (
        "/staff/",
        "/staff/studies",
        f"/staff/studies/{env.studies['ct']}",
        "/staff/nodes",
        "/staff/settings",
        "/staff/logs",
        "/staff/about",
        "/staff/users",
        "/staff/account",
    ):
        response = client.get(path)
        assert response.status_code == 302 and "/staff/login" in response.headers["Location"], path
    assert client.get("/api/studies").status_code == 401
    assert client.get("/api/whoami").get_json()["error"] == "Please sign in"
    assert client.get("/api/health").get_json()["status"] == "ok"


def test_login_logout_and_next(env, client) -> None:
    page = client.get("/staff/login?next=/staff/nodes")
    assert 'name="next" value="/staff/nodes"' in text(page)
    response = client.post(
        "/staff/login",
        data={"name": "desk", "password": DESK[1], "next": "/staff/nodes", "csrf_token": env.csrf_of(text(page))},
    )
    assert response.status_code == 302 and response.headers["Location"] == "/staff/nodes"
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("appliance_staff=")]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/api/whoami").get_json()["role"] == "frontdesk"
    assert client.get("/staff/login").status_code == 302  # already signed in
    out = post(env, client, "/staff/logout")
    assert out.status_code == 302 and client.get("/staff/studies").status_code == 302
    actions = [e.action for e in env.site.audit.entries()]
    assert "staff.login" in actions and "staff.logout" in actions


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "javascript:alert(1)", "x"])
def test_no_open_redirect_after_login(env, client, target: str) -> None:
    page = client.get("/staff/login")
    response = client.post(
        "/staff/login",
        data={"name": ADMIN[0], "password": ADMIN[1], "next": target, "csrf_token": env.csrf_of(text(page))},
    )
    assert response.headers["Location"] == "/staff/studies"


def test_wrong_password_and_rate_limit(env, client) -> None:
    for _ in range(env.cfg.web.rate_limit):
        page = client.get("/staff/login")
        response = client.post(
            "/staff/login", data={"name": "admin", "password": "nope", "csrf_token": env.csrf_of(text(page))}
        )
        assert response.status_code == 401 and "Wrong user name or password" in text(response)
    page = client.get("/staff/login")
    response = client.post(
        "/staff/login", data={"name": ADMIN[0], "password": ADMIN[1], "csrf_token": env.csrf_of(text(page))}
    )
    assert response.status_code == 429 and response.headers["Retry-After"]
    assert len(env.site.audit.entries(action="staff.login_failed")) == env.cfg.web.rate_limit + 1


def test_csrf_is_required(env, admin) -> None:
    response = admin.post("/staff/logout")
    assert response.status_code == 400 and "form has expired" in text(response)
    response = admin.post("/staff/logout", data={"csrf_token": "wrong"})
    assert response.status_code == 400
    assert admin.post("/api/nodes/X/echo").status_code == 400
    fresh = env.client()
    assert fresh.post("/staff/login", data={"name": ADMIN[0], "password": ADMIN[1]}).status_code == 400


def test_session_times_out(env, admin) -> None:
    with admin.session_transaction() as session:
        session["seen"] = 0  # last request long ago
    response = admin.get("/staff/studies")
    assert response.status_code == 302 and "/staff/login" in response.headers["Location"]
    assert "signed out after a period without activity" in text(admin.get("/staff/login"))
    with admin.session_transaction() as session:
        assert "uid" not in session


def test_deleted_user_loses_the_session(env, desk) -> None:
    env.site.users.delete(env.site.users.by_name("desk").id)
    assert desk.get("/staff/studies").status_code == 302


# -- roles ------------------------------------------------------------------------------------------


def test_front_desk_cannot_administer(env, desk) -> None:
    ct = env.studies["ct"]
    for path in (
        "/staff/settings",
        "/staff/logs",
        "/staff/logs/download",
        "/staff/users",
        "/staff/nodes/new",
        f"/staff/studies/{ct}/delete",
    ):
        response = desk.get(path)
        assert response.status_code == 403 and "role does not allow" in text(response), path
    assert post(env, desk, f"/staff/studies/{ct}/delete", {"confirm": "yes"}).status_code == 403
    assert env.app.index.study(ct) is not None
    page = text(desk.get(f"/staff/studies/{ct}"))
    assert "Delete study" not in page and "Print token slip" in page
    nav = text(desk.get("/staff/studies"))
    assert "/staff/settings" not in nav and "/staff/nodes" in nav


# -- studies ----------------------------------------------------------------------------------------


def rows(response) -> int:
    return text(response).count('class="strong"')


def test_study_search(env, admin, store) -> None:
    import dicomdata

    store(env.app, dicomdata.sample_archive())
    assert rows(admin.get("/staff/studies")) == 9
    assert rows(admin.get("/staff/studies?name=doe")) == 3
    assert rows(admin.get("/staff/studies?name=*ANNA")) == 1
    assert rows(admin.get("/staff/studies?pid=pid00")) == 5
    assert rows(admin.get("/staff/studies?acc=ACC-")) == 3
    assert rows(admin.get("/staff/studies?modality=MR")) == 2
    assert rows(admin.get("/staff/studies?period=today")) == 2
    assert rows(admin.get("/staff/studies?period=yesterday")) == 0
    assert rows(admin.get("/staff/studies?period=week")) == 2
    assert rows(admin.get("/staff/studies?period=month")) == 2
    assert rows(admin.get("/staff/studies?period=year")) == 2
    assert rows(admin.get("/staff/studies?period=exact&date=2007-02-08")) == 2
    assert rows(admin.get("/staff/studies?period=range&from=1990-01-01&to=2007-12-31")) == 3
    assert rows(admin.get("/staff/studies?birth=1970-01-01&name=m")) == 2
    sorted_page = text(admin.get("/staff/studies?sort=name&dir=asc"))
    assert sorted_page.index("DOE, JANE") < sorted_page.index("SMITH, ANNA")
    assert 'aria-sort="ascending"' in sorted_page
    assert "page 1 of" not in sorted_page


@pytest.mark.parametrize(
    "query",
    ["period=exact&date=2024-02-30", "period=range&from=2024-02-01&to=2024-01-01", "period=decade", "birth=yesterday"],
)
def test_bad_search_input_is_explained(admin, query: str) -> None:
    response = admin.get(f"/staff/studies?{query}")
    assert response.status_code == 400 and 'class="flash flash-error"' in text(response)
    assert admin.get(f"/api/studies?{query}").status_code == 400


def test_search_pagination(env, admin, store) -> None:
    import dicomdata

    for n in range(30):
        store(env.app, dicomdata.study(f"PAGE{n:02d}", f"PAGE^P{n:02d}", ("OT",), 1))
    first = text(admin.get("/staff/studies?name=page"))
    assert "30 studies, page 1 of 2" in first and 'rel="next"' in first
    second = admin.get("/staff/studies?name=page&page=2")
    assert rows(second) == 5 and 'rel="prev"' in text(second)
    assert rows(admin.get("/staff/studies?name=page&page=x")) == 25
    data = admin.get("/api/studies?name=page&page=2").get_json()
    assert data["total"] == 30 and len(data["studies"]) == 5


def test_study_page(env, admin) -> None:
    ct = env.studies["ct"]
    page = text(admin.get(f"/staff/studies/{ct}"))
    for expected in (
        "SMITH, ANNA",
        "PID100",
        "ACC-CT",
        "CT THORAX",
        "Print token slip",
        "Download DICOM zip",
        "Works",
        "burn-slot",
        "3 images",
    ):
        assert expected in page
    assert admin.get("/staff/studies/1.2.3.4").status_code == 404
    series = env.site.catalog.series(ct)[0]["series_uid"]
    assert admin.get(f"/staff/thumb/{series}.jpg").mimetype == "image/jpeg"
    assert admin.get("/staff/thumb/1.2.jpg").status_code == 404
    viewer = admin.get(f"/staff/series/{series}")
    assert viewer.status_code == 200 and "viewer.js" in text(viewer)
    sop = env.site.catalog.instances(series)[0]["sop_uid"]
    assert admin.get(f"/staff/image/{sop}.jpg?wc=0&ww=100").headers["X-Window"] == "0/100"
    assert admin.get(f"/staff/image/{sop}.jpg?ww=x&wc=1").status_code == 400
    assert admin.get("/staff/series/9.9").status_code == 404


def test_staff_downloads(env, admin) -> None:
    ct = env.studies["ct"]
    series = env.site.catalog.series(ct)[1]["series_uid"]
    response = admin.get(f"/staff/studies/{ct}/download/dicom.zip")
    with zipfile.ZipFile(io.BytesIO(response.data)) as zf:
        assert "DICOMDIR" in zf.namelist()
    response = admin.get(f"/staff/studies/{ct}/series/{series}/download/jpeg.zip")
    assert "-S2-jpeg.zip" in response.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(response.data)) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".jpg")]) == 3
    assert admin.get(f"/staff/studies/{ct}/download/rar.zip").status_code == 404
    assert admin.get(f"/staff/studies/{env.studies['mr']}/series/{series}/download/dicom.zip").status_code == 404
    assert [e.action for e in env.site.audit.entries(study_uid=ct)][:2] == ["series.download", "study.download"]


def test_delete_series_then_study_with_confirmation(env, admin) -> None:
    ct = env.studies["ct"]
    series = env.site.catalog.series(ct)[0]["series_uid"]
    confirm = admin.get(f"/staff/studies/{ct}/series/{series}/delete")
    assert confirm.status_code == 200 and "cannot be undone" in text(confirm)
    unconfirmed = post(env, admin, f"/staff/studies/{ct}/series/{series}/delete")
    assert unconfirmed.status_code == 302 and len(env.site.catalog.series(ct)) == 2
    done = post(env, admin, f"/staff/studies/{ct}/series/{series}/delete", {"confirm": "yes"})
    assert done.headers["Location"] == f"/staff/studies/{ct}" and len(env.site.catalog.series(ct)) == 1
    done = post(env, admin, f"/staff/studies/{ct}/delete", {"confirm": "yes"})
    assert done.headers["Location"] == "/staff/studies" and env.app.index.study(ct) is None
    assert admin.get(f"/staff/studies/{ct}/delete").status_code == 404
    assert [e.action for e in env.site.audit.entries(study_uid=ct)][:2] == ["study.delete", "series.delete"]


# -- patient link -----------------------------------------------------------------------------------


def test_token_actions(env, desk) -> None:
    mr = env.studies["mr"]
    token = env.token("mr")
    assert post(env, desk, f"/staff/studies/{mr}/token/revoke").status_code == 302
    assert env.site.tokens.resolve(token) is None
    assert "Revoked" in text(desk.get(f"/staff/studies/{mr}"))
    until = (dt.date.today() + dt.timedelta(days=400)).isoformat()
    post(env, desk, f"/staff/studies/{mr}/token/extend", {"until": until})
    assert env.site.tokens.get(mr).valid_until.isoformat() == until
    post(env, desk, f"/staff/studies/{mr}/token/regenerate")
    assert env.site.tokens.resolve(token) is None and env.site.tokens.resolve(env.token("mr")) is not None
    assert post(env, desk, f"/staff/studies/{mr}/token/extend", {"until": "soon"}).status_code == 400
    past = post(env, desk, f"/staff/studies/{mr}/token/extend", {"until": "2000-01-01"})
    assert past.status_code == 400 and "in the past" in text(past)
    assert post(env, desk, f"/staff/studies/{mr}/token/explode").status_code == 404
    assert post(env, desk, "/staff/studies/1.2.3/token/revoke").status_code == 404
    actions = [e.action for e in env.site.audit.entries(study_uid=mr)]
    assert actions[:3] == ["token.regenerate", "token.extend", "token.revoke"]


def test_the_study_page_shows_one_end_date(env, desk) -> None:
    """The date box holds the link's end date, the one the text says: "Set end date" unchanged extends nothing."""
    import re

    mr = env.studies["mr"]
    page = text(desk.get(f"/staff/studies/{mr}"))
    shown_at = re.search(r'id="token-until">([0-9-]+)<', page)
    boxed_at = re.search(r'id="until" name="until" value="([0-9-]+)"', page)
    assert shown_at is not None and boxed_at is not None
    shown, boxed = shown_at.group(1), boxed_at.group(1)
    assert shown == boxed == env.site.tokens.get(mr).valid_until.isoformat()
    post(env, desk, f"/staff/studies/{mr}/token/extend", {"until": boxed})
    assert env.site.tokens.get(mr).valid_until.isoformat() == shown


def test_expired_link_shows_and_can_be_extended(env, desk) -> None:
    old = env.studies["expired"]
    assert "Expired" in text(desk.get(f"/staff/studies/{old}"))
    post(env, desk, f"/staff/studies/{old}/token/extend", {"until": dt.date.today().isoformat()})
    assert env.site.tokens.resolve(env.token("expired")) is not None


def test_slip_and_link_pages(env, desk) -> None:
    ct = env.studies["ct"]
    slip = desk.get(f"/staff/studies/{ct}/slip.pdf")
    assert slip.status_code == 200 and slip.mimetype == "application/pdf" and slip.data.startswith(b"%PDF")
    assert desk.get(f"/staff/studies/{ct}/slip.pdf?paper=receipt80").data.startswith(b"%PDF")
    assert desk.get(f"/staff/studies/{ct}/slip.pdf?paper=A5").status_code == 400
    assert desk.get("/staff/studies/1.2/slip.pdf").status_code == 404
    page = text(desk.get(f"/staff/studies/{ct}/link"))
    assert f"http://{HOST}:{env.cfg.web.port}/token?{env.token('ct')}" in page


# -- nodes ------------------------------------------------------------------------------------------


def node_form(**overrides) -> dict:
    form = {
        "ae_title": "VIEWER1",
        "host": "127.0.0.1",
        "port": "11112",
        "description": "Viewer",
        "store": "on",
        "find": "on",
        "move": "on",
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def test_node_crud(env, admin) -> None:
    assert "No known node yet" in text(admin.get("/staff/nodes"))
    assert admin.get("/staff/nodes/new").status_code == 200
    assert post(env, admin, "/staff/nodes/new", node_form()).status_code == 302
    node = env.site.nodes.get("VIEWER1")
    assert node.port == 11112 and node.find and not node.get and not node.mwl and not node.tls
    assert env.app.may("VIEWER1", "store")
    edit = admin.get("/staff/nodes/VIEWER1/edit")
    assert 'value="VIEWER1"' in text(edit)
    post(env, admin, "/staff/nodes/VIEWER1/edit", node_form(ae_title="VIEWER2", host="::1", tls="on", store=None))
    assert env.site.nodes.get("VIEWER1") is None
    assert env.site.nodes.get("VIEWER2").tls and not env.app.may("VIEWER2", "store")
    assert "Delete node VIEWER2" in text(admin.get("/staff/nodes/VIEWER2/delete"))
    post(env, admin, "/staff/nodes/VIEWER2/delete")
    assert env.site.nodes.get("VIEWER2") is None
    assert admin.get("/staff/nodes/VIEWER2/edit").status_code == 404
    assert admin.get("/staff/nodes/VIEWER2/delete").status_code == 404
    assert [e.action for e in env.site.audit.entries()][:3] == ["node.delete", "node.edit", "node.add"]


@pytest.mark.parametrize(
    ("form", "message"),
    [
        (node_form(ae_title=""), "not valid"),
        (node_form(ae_title="A\\B"), "not valid"),
        (node_form(host="300.1.1.1"), "not a valid IPv4"),
        (node_form(host="bad host"), "not a valid host name"),
        (node_form(host="fe80::zz"), "not a valid IPv6"),
        (node_form(port="http"), "not a number"),
        (node_form(port="0"), "not a TCP port"),
        (node_form(port="65536"), "not a TCP port"),
        (node_form(preferred_ts="jpeg-2000"), "preferred transfer syntax &#39;jpeg-2000&#39; is not one of"),
    ],
)
def test_node_validation_errors_are_shown(env, admin, form: dict, message: str) -> None:
    response = post(env, admin, "/staff/nodes/new", form)
    assert response.status_code == 400 and message in text(response)
    assert 'id="form-error"' in text(response) and env.site.nodes.all() == []


def test_node_commitment_and_preferred_syntax(env, admin) -> None:
    """The form offers Storage Commitment (on by default, as in the config file) and the preferred syntax; the
    list shows both; an edit keeps them."""
    form = text(admin.get("/staff/nodes/new"))
    assert 'name="commit" checked' in form and '<option value="explicit">Explicit VR Little Endian</option>' in form
    post(env, admin, "/staff/nodes/new", node_form(ae_title="DEFAULTS", commit="on"))
    assert env.site.nodes.get("DEFAULTS").commit and env.site.nodes.get("DEFAULTS").preferred_ts == ""
    post(env, admin, "/staff/nodes/new", node_form(preferred_ts="explicit"))
    node = env.site.nodes.get("VIEWER1")
    assert node.preferred_ts == "explicit" and not node.commit and not env.app.may("VIEWER1", "commit")
    page = text(admin.get("/staff/nodes"))
    row = page[page.index('<tr data-ae="VIEWER1">') :].split("</tr>")[0]
    assert '<td class="center" data-right="commit">–</td>' in row
    assert '<td class="preferred-ts">Explicit VR Little Endian</td>' in row
    default_row = page[page.index('<tr data-ae="DEFAULTS">') :].split("</tr>")[0]
    assert '<td class="center" data-right="commit">✓</td>' in default_row and ">As stored</td>" in default_row
    edit = text(admin.get("/staff/nodes/VIEWER1/edit"))
    assert '<option value="explicit" selected>' in edit and 'name="commit" >' in edit
    post(env, admin, "/staff/nodes/VIEWER1/edit", node_form(preferred_ts="rle", commit="on"))
    node = env.site.nodes.get("VIEWER1")
    assert node.preferred_ts == "rle" and node.commit
    response = post(env, admin, "/staff/nodes/VIEWER1/edit", node_form(preferred_ts="jpeg-2000"))
    assert response.status_code == 400 and "is not one of" in text(response)
    assert env.site.nodes.get("VIEWER1").preferred_ts == "rle"
    api = admin.get("/api/v1/nodes")
    assert api.status_code == 200, "a staff session reads the API"
    listed = {n["ae_title"]: n for n in api.get_json()["nodes"]}
    assert (listed["VIEWER1"]["preferred_ts"], listed["VIEWER1"]["commit"]) == ("rle", True)


def test_nodes_added_before_the_upgrade_keep_commitment_and_stored_syntax(tmp_path) -> None:
    """A database of the previous version: its UI nodes get the config file's defaults (commit on, as stored)."""
    path = tmp_path / "appliance.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, step in enumerate(MIGRATIONS[:-1], start=1):
        conn.execute("BEGIN")
        step(conn)
        conn.execute(f"PRAGMA user_version={number}")
        conn.execute("COMMIT")
    conn.execute("INSERT INTO dicom_nodes (ae_title, host, port, created, updated) VALUES ('OLD', '::1', 104, '', '')")
    conn.close()
    upgraded = Database(path)
    node = NodeRegistry(upgraded, []).get("OLD")
    upgraded.close()
    assert node is not None and node.commit and node.preferred_ts == "" and node.store


def test_config_nodes_are_read_only(env_factory) -> None:
    env = env_factory()
    env.site.nodes.config_nodes["CFG"] = NodeConfig("CFG", "127.0.0.1", 104)
    client = env.client()
    env.login(client)
    page = text(client.get("/staff/nodes"))
    assert "config file" in page and "/staff/nodes/CFG/edit" not in page
    assert client.get("/staff/nodes/CFG/edit").status_code == 403
    assert client.get("/staff/nodes/CFG/delete").status_code == 403
    response = post(env, client, "/staff/nodes/new", node_form(ae_title="CFG"))
    assert response.status_code == 400 and "already exists" in text(response)


def test_echo_online_and_offline(env, admin, node) -> None:
    env.site.nodes.add(NodeConfig(node.aet, HOST, node.port))
    env.site.nodes.add(NodeConfig("CLOSED", HOST, free_port()))
    result = admin.post(f"/api/nodes/{node.aet}/echo", headers={"X-CSRF-Token": env.csrf(admin)}).get_json()
    assert result == {"ae_title": node.aet, "online": True, "reason": "Online", "user": "admin"}
    result = admin.post("/api/nodes/CLOSED/echo", headers={"X-CSRF-Token": env.csrf(admin)}).get_json()
    assert not result["online"] and "connection refused" in result["reason"]
    response = post(env, admin, "/staff/nodes/CLOSED/echo", csrf_page="/staff/nodes")
    assert response.status_code == 302
    assert "CLOSED: connection refused" in text(admin.get("/staff/nodes"))
    assert admin.post("/api/nodes/NOPE/echo", headers={"X-CSRF-Token": env.csrf(admin)}).status_code == 404
    assert len(env.site.audit.entries(action="node.echo")) == 3


# -- administration ---------------------------------------------------------------------------------


def test_settings_page_masks_secrets(env, admin) -> None:
    page = text(admin.get("/staff/settings"))
    for expected in ("[web]", "token_days", "[dicom]", "DISCPACS", "built-in defaults"):
        assert expected in page


def test_logs_page_filters_and_downloads(env, admin) -> None:
    setup_logging("INFO", env.cfg.log_dir)
    try:
        logging.getLogger("appliance.test").info("an info line")
        logging.getLogger("appliance.test").error("an error line")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("appliance.test").exception("with a traceback")
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
    info = text(admin.get("/staff/logs"))
    assert "an info line" in info and "an error line" in info and "ValueError: boom" in info
    errors = text(admin.get("/staff/logs?level=error"))
    assert "an info line" not in errors and "an error line" in errors
    assert admin.get("/staff/logs?level=loud").status_code == 400
    download = admin.get("/staff/logs/download")
    with zipfile.ZipFile(io.BytesIO(download.data)) as zf:
        assert zf.namelist() == ["appliance.log"]


def test_about_page(env, desk) -> None:
    page = text(desk.get("/staff/about"))
    assert "appliance 0.1.0" in page and "pydicom" in page and "Free disk space" in page


def test_user_management(env, admin) -> None:
    response = post(env, admin, "/staff/users", {"name": "nurse", "password": "nurse-password", "role": "frontdesk"})
    assert response.status_code == 302
    nurse = env.site.users.by_name("nurse")
    bad = post(env, admin, "/staff/users", {"name": "nurse", "password": "x", "role": "frontdesk"})
    assert bad.status_code == 400 and "at least 8" in text(bad)
    post(env, admin, f"/staff/users/{nurse.id}/role", {"role": "admin"}, "/staff/users")
    assert env.site.users.get(nurse.id).role == "admin"
    post(env, admin, f"/staff/users/{nurse.id}/password", {"password": "another-pass"}, "/staff/users")
    assert env.site.users.authenticate("nurse", "another-pass")
    short = post(env, admin, f"/staff/users/{nurse.id}/password", {"password": "x"}, "/staff/users")
    assert short.status_code == 302 and "at least 8" in text(admin.get("/staff/users"))
    post(env, admin, f"/staff/users/{nurse.id}/delete", None, "/staff/users")
    assert env.site.users.get(nurse.id) is None
    assert post(env, admin, f"/staff/users/{nurse.id}/delete", None, "/staff/users").status_code == 404
    me = env.site.users.by_name("admin")
    post(env, admin, f"/staff/users/{me.id}/role", {"role": "frontdesk"}, "/staff/users")
    assert "last admin" in text(admin.get("/staff/users"))
    assert post(env, admin, f"/staff/users/{me.id}/fly", None, "/staff/users").status_code == 404


def test_change_own_password(env, desk) -> None:
    def change(current: str, new: str, again: str):
        return post(
            env, desk, "/staff/account", {"current": current, "password": new, "again": again}, "/staff/account"
        )

    assert "current password is wrong" in text(change("nope", "new-password-1", "new-password-1"))
    assert "differ" in text(change(DESK[1], "new-password-1", "new-password-2"))
    assert "at least 8" in text(change(DESK[1], "short", "short"))
    assert change(DESK[1], "new-password-1", "new-password-1").status_code == 302
    assert env.site.users.authenticate("desk", "new-password-1")


def test_errors_are_pages_not_tracebacks(env, admin, monkeypatch) -> None:
    assert admin.get("/staff/nope").status_code == 404
    assert "Back to studies" in text(admin.get("/staff/nope"))
    assert admin.delete("/staff/studies").status_code == 405

    def boom(*args, **kwargs):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(env.site.studies, "counts", boom)
    response = admin.get("/staff/about")
    assert response.status_code == 500 and "secret detail" not in text(response)
    big = admin.post("/staff/login", data={"name": "x" * 400_000})
    assert big.status_code == 413


def test_the_study_access_log_speaks_words_not_event_names(env, desk) -> None:
    """Issue 20, item 11: ``link shown``, not ``token.link``."""
    mr = env.studies["mr"]
    desk.get(f"/staff/studies/{mr}/link")
    page = text(desk.get(f"/staff/studies/{mr}"))
    assert "link shown" in page and "token.link" not in page
