"""Staff sign-in and sign-out."""

from __future__ import annotations

import secrets
import time
from urllib.parse import urlsplit

from flask import abort, current_app, flash, g, redirect, render_template, request, session, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.wrappers import Response

from webui.extensions import client_address, get_context
from webui.security import login_required
from webui.staff import audit, bp


def _safe_next(target: str | None) -> str:
    """Only a path on this site may follow a sign-in (no open redirect)."""
    if not target:
        return url_for("staff.studies")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("staff.studies")
    return target


#: Cookie of a browser where an account signed in before; it keeps that account's sign-in open while others
#: use up the limits of the account or of the address (OWASP's "device cookie").
DEVICE_COOKIE = "appliance_device"
DEVICE_DAYS = 180


def _device_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="staff-device")  # type: ignore[arg-type]


def _trusted_device(user_id: int | None) -> str | None:
    """The id of this browser's device cookie when it was issued to ``user_id``, else None."""
    if user_id is None:
        return None
    try:
        data = _device_serializer().loads(request.cookies.get(DEVICE_COOKIE, ""), max_age=DEVICE_DAYS * 86400)
        return str(data["d"]) if int(data["u"]) == user_id else None
    except (BadSignature, KeyError, TypeError, ValueError):
        return None


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    """Sign in with name and password.

    Failures count per account and per client address (``[web] rate_limit`` per ``rate_window``); a browser
    where the account signed in before counts its own failures only, so others' failures never lock its user
    out.

    :raise 429: too many failed sign-ins for this account or from this address (or from this trusted browser).
    """
    if request.method == "GET":
        if g.user is not None:
            return redirect(url_for("staff.studies"))
        return render_template(
            "staff/login.html", next=request.args.get("next", ""), no_users=not get_context().site.users.all()
        )
    context = get_context()
    limiter = context.login_limiter
    name = request.form.get("name", "")
    known = context.site.users.by_name(name)
    device = _trusted_device(known.id if known else None)
    keys = [f"device:{device}"] if device else [f"user:{name.strip().lower()[:64]}", f"addr:{client_address()}"]
    if any(limiter.blocked(key) for key in keys):
        g.retry_after = max(limiter.retry_after(key) for key in keys)
        audit("staff.login_failed", detail=f"name {name[:64]!r}: rate limited", outcome="failure")
        abort(429, description="Too many failed sign-ins. Please wait a minute.")
    user = context.site.users.authenticate(name, request.form.get("password", ""))
    if user is None:
        for key in keys:
            limiter.fail(key)
        audit("staff.login_failed", detail=f"name {name[:64]!r}", outcome="failure")
        no_users = not context.site.users.all()
        flash("No staff user exists yet." if no_users else "Wrong user name or password.", "error")
        return render_template(
            "staff/login.html",
            next=request.form.get("next", ""),
            name=name,  # type: ignore[return-value]
            no_users=no_users,
        ), 401
    session.clear()
    session.permanent = True
    session["uid"] = user.id
    session["gen"] = user.session_gen
    session["seen"] = time.time()
    session["csrf"] = secrets.token_urlsafe(32)  # a new token per session
    g.user = user
    audit("staff.login")
    response = redirect(_safe_next(request.form.get("next")))
    device = device or secrets.token_urlsafe(16)
    response.set_cookie(
        DEVICE_COOKIE,
        _device_serializer().dumps({"u": user.id, "d": device}),
        max_age=DEVICE_DAYS * 86400,
        httponly=True,
        secure=current_app.config["APPLIANCE_HTTPS"],
        samesite="Strict",
        path="/staff/login",
    )
    return response


@bp.post("/logout")
@login_required
def logout() -> Response:
    """Sign out: every copy of this user's session cookie stops working, here and on other computers."""
    audit("staff.logout")
    get_context().site.users.end_sessions(g.user.id)
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("staff.login"))


@bp.get("/")
@login_required
def home() -> Response:
    """The staff UI opens on the study list."""
    return redirect(url_for("staff.studies"))
