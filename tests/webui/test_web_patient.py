"""The patient token site through the Flask test client: every route and error path."""

from __future__ import annotations

import io
import zipfile
from http.cookies import SimpleCookie

import pytest
from pydicom import dcmread

from appliance.site.tokens import hash_token

NEUTRAL = "Please open the link to your images"


def open_link(client, token: str):
    return client.get("/token?" + token)


def cookie_attrs(response) -> dict[str, str]:
    header = response.headers["Set-Cookie"]
    parsed = SimpleCookie()
    parsed.load(header)
    morsel = parsed["appliance_patient"]
    return {
        "value": morsel.value,
        "httponly": str(morsel["httponly"]),
        "samesite": morsel["samesite"],
        "max-age": morsel["max-age"],
        "path": morsel["path"],
        "secure": str(morsel["secure"]),
    }


def test_link_is_exchanged_for_a_cookie_and_a_clean_url(env, client) -> None:
    response = open_link(client, env.token("ct"))
    assert response.status_code == 303
    assert response.headers["Location"] == "/study"  # the token leaves the address bar
    attrs = cookie_attrs(response)
    assert attrs["httponly"] == "True" and attrs["samesite"] == "Strict" and attrs["path"] == "/"
    assert attrs["max-age"] == str(env.cfg.web.patient_session_minutes * 60)
    assert env.token("ct") not in response.headers["Set-Cookie"]
    page = client.get("/study")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    for expected in ("St. Example Hospital", "SMITH, ANNA", "CT THORAX", "6 in 2 series", "Available until"):
        assert expected in text
    assert "token" not in text.lower().split("</head>")[1] or env.token("ct") not in text


def test_token_query_forms(env, client) -> None:
    assert client.get("/token?token=" + env.token("ct")).status_code == 303
    assert client.get("/token?" + env.token("ct") + "&utm=x").status_code == 303


def test_security_headers_on_every_page(env, client) -> None:
    for path in ("/", "/token?" + env.token("ct"), "/study", "/token?nope", "/robots.txt"):
        response = client.get(path)
        headers = response.headers
        assert headers["Cache-Control"] == "no-store", path
        assert headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Robots-Tag"].startswith("noindex")
        assert "Strict-Transport-Security" not in headers  # plain HTTP here
    assert client.get("/robots.txt").get_data(as_text=True) == "User-agent: *\nDisallow: /\n"


@pytest.mark.parametrize("kind", ["unknown", "malformed", "empty", "expired", "revoked", "long"])
def test_same_neutral_page_for_every_bad_token(env, client, kind: str) -> None:
    if kind == "revoked":
        env.site.tokens.revoke(env.studies["mr"])
    token = {
        "unknown": "A" * 64,
        "malformed": "../../etc/passwd",
        "empty": "",
        "expired": env.token("expired"),
        "revoked": env.token("mr"),
        "long": "B" * 5000,
    }[kind]
    response = open_link(client, token)
    assert response.status_code == 404
    text = response.get_data(as_text=True)
    assert NEUTRAL in text
    assert "OLD" not in text and "JONES" not in text and "expired on" not in text
    assert "Set-Cookie" not in response.headers
    reference = open_link(env.client(), "C" * 64).get_data(as_text=True)
    assert text == reference  # nothing tells an expired link from one that never existed


def test_failed_attempts_are_rate_limited_per_address(env) -> None:
    client = env.client()
    for _ in range(env.cfg.web.rate_limit):
        assert open_link(client, "Z" * 64).status_code == 404
    blocked = open_link(client, "Y" * 64)  # further wrong links wait now
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    assert "Too many" in blocked.get_data(as_text=True)
    assert open_link(client, env.token("ct")).status_code == 303  # a valid link is never refused (issue 15)
    other = env.flask.test_client()
    response = other.get("/token?" + env.token("ct"), environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert response.status_code == 303  # another address is not affected
    actions = [e.action for e in env.site.audit.entries()]
    assert actions.count("token.failed") == env.cfg.web.rate_limit and "token.rate_limited" in actions


def test_failures_are_audited_without_the_token(env, client) -> None:
    open_link(client, "Q" * 64)
    entry = env.site.audit.entries(action="token.failed")[0]
    assert entry.outcome == "failure" and entry.detail == f"hash {hash_token('Q' * 64)[:8]}"
    assert "Q" * 64 not in repr(env.site.audit.entries())


def test_pages_without_session_are_neutral(env, client) -> None:
    series = env.site.catalog.series(env.studies["ct"])[0]["series_uid"]
    sop = env.site.catalog.instances(series)[0]["sop_uid"]
    for path in (
        "/study",
        f"/study/series/{series}",
        f"/study/thumb/{series}.jpg",
        f"/study/image/{sop}.jpg",
        "/study/download/dicom.zip?consent=yes",
    ):
        response = client.get(path)
        assert response.status_code == 404 and NEUTRAL in response.get_data(as_text=True), path
    client.set_cookie("appliance_patient", "forged.value.here")
    assert client.get("/study").status_code == 404


def test_viewer_thumbnails_and_images(env, client) -> None:
    open_link(client, env.token("ct"))
    series = env.site.catalog.series(env.studies["ct"])
    first = series[0]["series_uid"]
    page = client.get(f"/study/series/{first}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="viewer-data"' in text and "Image 1 of 3" in text
    sops = [i["sop_uid"] for i in env.site.catalog.instances(first)]
    assert all(s in text for s in sops)
    thumb = client.get(f"/study/thumb/{first}.jpg")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg" and thumb.data[:2] == b"\xff\xd8"
    image = client.get(f"/study/image/{sops[0]}.jpg")
    assert image.status_code == 200 and image.headers["X-Window"] == "40/400"
    windowed = client.get(f"/study/image/{sops[0]}.jpg?wc=-600&ww=1500&size=64")
    assert windowed.headers["X-Window"] == "-600/1500" and windowed.data != image.data


@pytest.mark.parametrize(
    "query", ["wc=abc&ww=10", "wc=10", "wc=1&ww=0", "wc=1&ww=-5", "size=big", "wc=nan&ww=nan", "wc=1e300&ww=5"]
)
def test_bad_viewer_parameters(env, client, query: str) -> None:
    open_link(client, env.token("ct"))
    series = env.site.catalog.series(env.studies["ct"])[0]["series_uid"]
    sop = env.site.catalog.instances(series)[0]["sop_uid"]
    response = client.get(f"/study/image/{sop}.jpg?{query}")
    assert response.status_code == 400
    assert "Traceback" not in response.get_data(as_text=True)


def test_other_studies_stay_closed(env, client) -> None:
    open_link(client, env.token("ct"))
    other = env.site.catalog.series(env.studies["mr"])[0]["series_uid"]
    other_sop = env.site.catalog.instances(other)[0]["sop_uid"]
    for path in (
        f"/study/series/{other}",
        f"/study/thumb/{other}.jpg",
        f"/study/image/{other_sop}.jpg",
        "/study/series/1.2.3",
        "/study/image/nonsense.jpg",
    ):
        assert client.get(path).status_code == 404, path


def test_downloads_need_consent_and_hold_a_fileset(env, client) -> None:
    open_link(client, env.token("ct"))
    refused = client.get("/study/download/dicom.zip")
    assert refused.status_code == 400 and "tick the box" in refused.get_data(as_text=True)
    assert client.get("/study/download/iso.zip?consent=yes").status_code == 404
    response = client.get("/study/download/dicom.zip?consent=yes")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert "SMITH" not in response.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(response.data)) as zf:
        assert "DICOMDIR" in zf.namelist() and "README.TXT" in zf.namelist()
        dicomdir = dcmread(io.BytesIO(zf.read("DICOMDIR")))
        assert len([r for r in dicomdir.DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"]) == 6
    jpeg = client.get("/study/download/jpeg.zip?consent=yes")
    with zipfile.ZipFile(io.BytesIO(jpeg.data)) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".jpg")]) == 6
    details = [e.detail for e in env.site.audit.entries(action="study.download")]
    assert details == ["jpeg zip", "dicom zip"]


def test_every_access_is_audited(env, client) -> None:
    open_link(client, env.token("mr"))
    client.get("/study", headers={"User-Agent": "TestBrowser/1.0"})
    entries = env.site.audit.entries(study_uid=env.studies["mr"])
    assert [e.action for e in entries] == ["study.view", "token.open"]
    assert entries[0].user_agent == "TestBrowser/1.0" and entries[0].address == "127.0.0.1"
    assert entries[0].actor == "patient" and entries[0].token_id == env.site.tokens.get(env.studies["mr"]).id
    assert env.site.tokens.get(env.studies["mr"]).accesses == 1


def test_session_ends_when_the_link_is_revoked_or_regenerated(env, client) -> None:
    open_link(client, env.token("ct"))
    assert client.get("/study").status_code == 200
    env.site.tokens.regenerate(env.studies["ct"])
    assert client.get("/study").status_code == 404
    open_link(client, env.token("ct"))
    assert client.get("/study").status_code == 200
    env.site.tokens.revoke(env.studies["ct"])
    assert client.get("/study").status_code == 404


def test_session_cookie_expires(env, client) -> None:
    open_link(client, env.token("ct"))
    env.flask.config["PATIENT_SESSION_SECONDS"] = -1
    assert client.get("/study").status_code == 404


def test_leave_ends_the_session(env, client) -> None:
    open_link(client, env.token("ct"))
    response = client.get("/leave")
    assert response.status_code == 200 and "You have left" in response.get_data(as_text=True)
    after = client.get("/study")
    # The link still works: the page after Leave must not say it expired (issue 20, item 11).
    assert after.status_code == 404 and "expired" not in after.get_data(as_text=True).lower()
    assert "open that link again" in after.get_data(as_text=True)


def test_deleted_study_closes_its_link(env, client) -> None:
    token = env.token("mr")
    open_link(client, token)
    env.site.studies.delete(env.studies["mr"])
    assert client.get("/study").status_code == 404
    assert open_link(env.client(), token).status_code == 404


def test_landing_page_and_unknown_paths(env, client) -> None:
    assert "open the link printed on the slip" in client.get("/").get_data(as_text=True)
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and NEUTRAL in missing.get_data(as_text=True)
    assert client.post("/token").status_code == 405


def test_internal_errors_are_a_plain_page(env, client, monkeypatch) -> None:
    open_link(client, env.token("ct"))

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(env.site.catalog, "series", boom)
    response = client.get("/study")
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert "Something went wrong" in text and "disk on fire" not in text and "Traceback" not in text


def test_busy_zip_builder_answers_503(env, client, monkeypatch) -> None:
    from appliance.site.export import Busy

    open_link(client, env.token("ct"))

    def busy(*args, **kwargs):
        raise Busy("too many downloads are being prepared at the moment")

    monkeypatch.setattr(env.site.studies, "download", busy)
    response = client.get("/study/download/dicom.zip?consent=yes")
    assert response.status_code == 503 and "too many downloads" in response.get_data(as_text=True)


def test_https_sets_secure_cookie_and_hsts(env_factory) -> None:
    env = env_factory(https=True)
    client = env.client()
    response = client.get("/token?" + env.token("ct"), base_url="https://localhost")
    assert cookie_attrs(response)["secure"] == "True"
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_cross_site_arrival_reloads_once(env, client) -> None:
    """After a link clicked on another site the browser withholds the Strict cookie once: /study reloads itself."""
    hop = client.get("/study", headers={"Sec-Fetch-Site": "cross-site"})
    assert hop.status_code == 200
    assert '<meta http-equiv="refresh" content="0;url=/study?r=1">' in hop.get_data(as_text=True)
    assert client.get("/study?r=1", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 404
    assert client.get("/study", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 404
    open_link(client, env.token("ct"))
    assert client.get("/study?r=1").status_code == 200


def test_audit_rows_survive_close(env, client) -> None:
    open_link(client, env.token("ct"))
    env.site.close()  # commits what the background writer still holds
    count = env.app.db.conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'token.open'").fetchone()[0]
    assert count == 1


def test_a_patient_never_sees_an_http_reason_phrase(env) -> None:
    """Issue 20, item 11: a broken request shows words a patient understands, not "Bad request"."""
    from webui import _error_page

    with env.flask.test_request_context("/study"):
        body = _error_page(400, "").get_data(as_text=True)
    assert "That did not work" in body and "Bad request" not in body
