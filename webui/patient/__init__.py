"""The patient token site: ``/token?<token>`` opens one study for a limited time.

The token leaves the address bar at once: ``/token`` checks it, sets a short-lived cookie (HttpOnly,
SameSite=Strict, Secure on HTTPS) that names the token's row, and answers 303 to ``/study``. (When the link was
clicked on another site, the browser holds the Strict cookie back on that redirect; ``/study`` then reloads
itself once, which is a same-site navigation.) Every later
request checks that the token is still valid (not expired, revoked or regenerated) and that the session was
not ended ("Leave" deletes its server-side row, so a copy of the cookie stops working too). Unknown, malformed,
expired and revoked tokens get the same "not found or expired" page, and failed attempts count against the
client address (``[web] rate_limit`` per ``rate_window`` seconds, then 429 for further wrong links; a valid
link is never refused).
"""

from __future__ import annotations

import functools
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, request, send_file, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from appliance.site.imaging import Window
from appliance.site.service import Site
from appliance.site.tokens import TokenInfo, hash_token
from webui.extensions import client_address, get_context, get_site, user_agent

bp = Blueprint("patient", __name__)

COOKIE = "appliance_patient"


@functools.lru_cache(maxsize=4)
def _serializer_for(secret_key: str | bytes) -> URLSafeTimedSerializer:
    # Made once per key: building one costs about as much as checking a cookie with it.
    return URLSafeTimedSerializer(secret_key, salt="patient-session")


def _serializer() -> URLSafeTimedSerializer:
    return _serializer_for(current_app.secret_key)


def _audit(action: str, info: TokenInfo | None, detail: str = "", outcome: str = "success") -> None:
    get_site().audit.record(
        action,
        actor="patient",
        address=client_address(),
        user_agent=user_agent(),
        study_uid=info.study_uid if info else "",
        token_id=info.id if info else None,
        detail=detail,
        outcome=outcome,
    )


def _token_from_query() -> str:
    """The token of ``/token?<token>`` (``/token?token=<token>`` is accepted too)."""
    raw = request.query_string.decode("ascii", "replace")
    if raw.startswith("token="):
        raw = raw[6:]
    return raw.split("&", 1)[0].rstrip("=").strip()


def get_token() -> TokenInfo:
    """The token of this patient session (pictures need no more: their look-up is limited to its study).

    :raise 404: no session cookie, or its token is unknown, expired, revoked or regenerated (one answer for all).
    """
    cookie = request.cookies.get(COOKIE, "")
    site = get_site()
    try:
        data = _serializer().loads(cookie, max_age=current_app.config["PATIENT_SESSION_SECONDS"])
        token_id = int(data["t"])
        # The row is the server's half of the session: "Leave" deleted it, whatever copies of the cookie exist.
        info = (
            site.tokens.is_usable(token_id, str(data["h"]))
            if site.patient_sessions.token_of(str(data["s"])) == token_id
            else None
        )
    except (BadSignature, KeyError, TypeError, ValueError):
        info = None
    if info is None:
        abort(404)
    return info


def get_study_for_token() -> tuple[TokenInfo, dict[str, Any]]:
    """The token and study of this patient session.

    :raise 404: no session cookie, or its token is unknown, expired, revoked or regenerated (one answer for all).
    """
    info = get_token()
    study = get_site().studies.find(info.study_uid)
    if study is None:
        abort(404)
    return info, study


@bp.get("/")
def index() -> str:
    """Landing page: patients are told to open their link; staff find the sign-in."""
    return render_template("patient/index.html")


@bp.get("/robots.txt")
def robots() -> Response:
    """Keep search engines out of everything."""
    return Response("User-agent: *\nDisallow: /\n", mimetype="text/plain")


@bp.get("/token")
def token() -> Any:
    """Exchange the token of the link for a patient session cookie and send the browser to ``/study``.

    :raise 404: the token is unknown, malformed, expired or revoked.
    :raise 429: this client address failed too often within the rate window.
    """
    context = get_context()
    address = client_address()
    raw = _token_from_query()
    # A valid link always opens, whatever other clients behind the same address (a hospital NAT, a proxy) tried:
    # the limit only turns further wrong links into 429. (A token has 384 bits: the limit is not what stops
    # guessing, it keeps a flood of wrong links short.)
    info = context.site.tokens.resolve(raw)
    if info is None:
        limiter = context.link_limiter
        if limiter.blocked(address):
            g.retry_after = limiter.retry_after(address)
            _audit("token.rate_limited", None, outcome="failure")
            abort(
                429,
                description="Too many wrong links were tried from this device. Please wait a minute and "
                "open the link again.",
            )
        limiter.fail(address)
        # Never log the token: a hash prefix is enough to match a complaint to a link.
        _audit("token.failed", None, detail=f"hash {hash_token(raw)[:8]}" if raw else "no token", outcome="failure")
        abort(404)
    context.site.tokens.touch(info.id)
    _audit("token.open", info)
    response = redirect(url_for("patient.study"), code=303)
    seconds = current_app.config["PATIENT_SESSION_SECONDS"]
    session_id = context.site.patient_sessions.open(info.id, seconds)
    response.set_cookie(
        COOKIE,
        _serializer().dumps({"t": info.id, "h": info.hash_prefix, "s": session_id}),
        max_age=current_app.config["PATIENT_SESSION_SECONDS"],
        httponly=True,
        secure=current_app.config["APPLIANCE_HTTPS"],
        samesite="Strict",
        path="/",
    )
    return response


@bp.get("/study")
def study() -> Any:
    """The patient's study: who, when, what, series thumbnails, viewer links and downloads."""
    if (
        COOKIE not in request.cookies
        and request.headers.get("Sec-Fetch-Site") == "cross-site"
        and "r" not in request.args
    ):
        # A link clicked on another site (webmail, chat): browsers withhold the SameSite=Strict cookie on the
        # redirect that follows such a navigation. One reload started by this page is same-site and has it.
        return render_template("patient/opening.html")
    info, study = get_study_for_token()
    site = get_site()
    _audit("study.view", info)
    return render_template(
        "patient/study.html", study=study, token=info, series=site.catalog.series(study["study_uid"])
    )


@bp.get("/study/series/<series_uid>")
def viewer(series_uid: str) -> str:
    """The image viewer on one series of the patient's study.

    :raise 404: the series is not in this patient's study.
    """
    info, study = get_study_for_token()
    site = get_site()
    series = site.studies.series(series_uid, info.study_uid)
    instances = [i["sop_uid"] for i in site.catalog.instances(series_uid)]
    return render_template(
        "patient/viewer.html",
        study=study,
        series=series,
        instances=instances,
        all_series=site.catalog.series(info.study_uid),
        token=info,
    )


def parse_window() -> Window | None:
    """The ``wc``/``ww`` query parameters as a window, None when absent.

    :raise 400: they are not numbers, or the width is below 1.
    """
    wc, ww = request.args.get("wc"), request.args.get("ww")
    if wc is None and ww is None:
        return None
    try:
        window = Window(float(wc or ""), float(ww or ""))
    except ValueError:
        abort(400, description="The window centre and width must be numbers.")
    if not window.width >= 1 or abs(window.center) > 1e7 or window.width > 1e7:
        abort(400, description="The window width must be at least 1.")
    return window


def parse_size(default: int) -> int:
    """The ``size`` query parameter (64-2048 pixels).

    :raise 400: it is not a whole number.
    """
    raw = request.args.get("size")
    if raw is None:
        return default
    if not raw.isdigit():
        abort(400, description="The size must be a whole number of pixels.")
    return max(64, min(int(raw), 2048))


def jpeg(data: bytes) -> Response:
    """A JPEG response (``no-store`` is added by the header hook)."""
    return Response(data, mimetype="image/jpeg")


def image_response(site: Site, sop_uid: str, study_uid: str | None) -> Response:
    """The viewer picture of an instance, with the window used in ``X-Window`` (``centre/width``)."""
    data, window = site.pictures.view_image(sop_uid, study_uid, parse_window(), parse_size(1024))
    response = jpeg(data)
    if window is not None:
        response.headers["X-Window"] = f"{window.center:g}/{window.width:g}"
    return response


@bp.get("/study/thumb/<series_uid>.jpg")
def thumbnail(series_uid: str) -> Response:
    """Thumbnail of a series of the patient's study.

    :raise 404: the series is not in this patient's study.
    """
    return jpeg(get_site().pictures.series_thumbnail(series_uid, get_token().study_uid))


@bp.get("/study/image/<sop_uid>.jpg")
def image(sop_uid: str) -> Response:
    """One image of the patient's study for the viewer (``?wc=&ww=&size=``).

    :raise 404: the instance is not in this patient's study.
    :raise 400: bad window or size.
    """
    return image_response(get_site(), sop_uid, get_token().study_uid)


@bp.get("/study/download/<kind>.zip")
def download(kind: str) -> Response:
    """The study as a zip: ``dicom`` (file-set with DICOMDIR) or ``jpeg``; needs ``consent=yes``.

    :raise 400: the download was not confirmed.
    :raise 404: unknown kind, or no valid patient session.
    :raise 503: too many downloads are being prepared.
    """
    info, _ = get_study_for_token()
    if kind not in ("dicom", "jpeg"):
        abort(404)
    if request.args.get("consent") != "yes":
        abort(400, description="Please tick the box to confirm that you want to download your images.")
    handle, name = get_site().studies.download(kind, info.study_uid)
    _audit("study.download", info, detail=f"{kind} zip")
    return send_file(handle, mimetype="application/zip", as_attachment=True, download_name=name)


@bp.get("/leave")
def leave() -> Response:
    """End the patient session for good (the link on the slip still works until it expires)."""
    try:
        data = _serializer().loads(request.cookies.get(COOKIE, ""))
        get_site().patient_sessions.end(str(data["s"]))
    except (BadSignature, KeyError, TypeError, ValueError):
        pass  # no session, or not ours: nothing to end
    response = Response(render_template("patient/left.html"))
    response.delete_cookie(
        COOKIE, path="/", secure=current_app.config["APPLIANCE_HTTPS"], httponly=True, samesite="Strict"
    )
    return response
