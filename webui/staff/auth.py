"""Staff sign-in and sign-out."""

from __future__ import annotations

import secrets
import time
from urllib.parse import urlsplit

from flask import abort, flash, g, redirect, render_template, request, session, url_for
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


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    """Sign in with name and password; failures count against the client address.

    :raise 429: too many failed sign-ins from this address.
    """
    if request.method == "GET":
        if g.user is not None:
            return redirect(url_for("staff.studies"))
        return render_template("staff/login.html", next=request.args.get("next", ""))
    context = get_context()
    address = client_address()
    if context.limiter.blocked(address):
        g.retry_after = context.limiter.retry_after(address)
        audit("staff.login_failed", detail="rate limited", outcome="failure")
        abort(429, description="Too many failed sign-ins from this computer. Please wait a minute.")
    name = request.form.get("name", "")
    user = context.site.users.authenticate(name, request.form.get("password", ""))
    if user is None:
        context.limiter.fail(address)
        audit("staff.login_failed", detail=f"name {name[:64]!r}", outcome="failure")
        flash("Wrong user name or password.", "error")
        return render_template("staff/login.html", next=request.form.get("next", ""), name=name), 401  # type: ignore[return-value]
    session.clear()
    session.permanent = True
    session["uid"] = user.id
    session["gen"] = user.session_gen
    session["seen"] = time.time()
    session["csrf"] = secrets.token_urlsafe(32)  # a new token per session
    g.user = user
    audit("staff.login")
    return redirect(_safe_next(request.form.get("next")))


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
