"""The front-desk staff UI under ``/staff``: login, studies, patient links, nodes, settings, logs, users.

Every request loads the signed-in user afresh (a deleted user or a changed role takes effect at once), ends
the session after ``[web] session_minutes`` without a request, and checks the CSRF token of every POST. The
session cookie is signed but kept by the browser, so it also carries the user's session generation: sign-out,
a password change, a role change and disabling the account bump it in the database, and a cookie copied
before no longer opens a session.
"""

from __future__ import annotations

import time

from flask import Blueprint, current_app, flash, g, redirect, request, session, url_for
from werkzeug.wrappers import Response

from webui.extensions import client_address, get_site, user_agent
from webui.security import check_csrf

bp = Blueprint("staff", __name__, url_prefix="/staff")


@bp.before_request
def load_user() -> Response | None:
    """Put the signed-in user in ``g.user``, end idle sessions, check CSRF on POST."""
    g.user = None
    uid = session.get("uid")
    if uid is not None:
        idle = time.time() - float(session.get("seen", 0))
        user = get_site().users.get(int(uid))
        revoked = user is None or user.disabled or session.get("gen") != user.session_gen
        if revoked or idle > current_app.config["STAFF_SESSION_SECONDS"]:
            session.clear()
            if not revoked:
                flash("You were signed out after a period without activity. Please sign in again.", "info")
            if request.endpoint != "staff.login":
                return redirect(url_for("staff.login", next=request.path))
        else:
            g.user = user
            session["seen"] = time.time()
    check_csrf()
    return None


def audit(action: str, study_uid: str = "", detail: str = "", outcome: str = "success") -> None:
    """Record a staff action in the audit log."""
    user = g.get("user")
    get_site().audit.record(
        action,
        actor=user.name if user else "",
        address=client_address(),
        user_agent=user_agent(),
        study_uid=study_uid,
        detail=detail,
        outcome=outcome,
    )


@bp.context_processor
def certificate_warnings() -> dict[str, list[str]]:
    """Certificate expiry warnings for the admins' banner on every staff page."""
    user = g.get("user")
    return {"cert_warnings": get_site().admin.cert_warnings() if user is not None and user.is_admin else []}


from webui.staff import admin, auth, discs, forwarding, nodes, studies, upkeep, worklist  # noqa: E402,F401  (routes register on import)
