"""JSON API under ``/api``: health, study search, node echo, burn queue and robots for the staff pages' scripts."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, g, request

from appliance import __version__
from appliance.names import display_name
from appliance.units import human_size
from webui import presenters
from webui.extensions import get_site
from webui.security import login_required

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.before_request
def load_user() -> None:
    """Use the staff session (same cookie as ``/staff``); CSRF is checked on POST as there."""
    from webui.staff import load_user as staff_load_user

    if staff_load_user() is not None:  # the session timed out: scripts get 401, not a login page
        abort(401)


@bp.get("/health")
def health() -> dict[str, Any]:
    """``{"status": "ok", "version": ...}`` for monitoring; no login."""
    return {"status": "ok", "version": __version__}


@bp.get("/studies")
@login_required
def studies() -> dict[str, Any]:
    """The staff study search as JSON (same parameters as ``/staff/studies``).

    :raise 400: bad search values.
    """
    from webui.staff.studies import _query_from_args

    q, _, error = _query_from_args()
    if error:
        return {"error": "Bad request", "message": error}, 400  # type: ignore[return-value]
    page = get_site().catalog.search(q)
    return {"total": page.total, "page": page.page, "pages": page.pages, "studies": page.rows}


@bp.post("/nodes/<ae_title>/echo")
@login_required
def echo(ae_title: str) -> dict[str, Any]:
    """C-ECHO a known node: ``{"ae_title", "online", "reason"}``.

    :raise 404: unknown node.
    """
    from webui.staff import audit

    online, reason = get_site().admin.echo(ae_title)
    audit("node.echo", detail=f"{ae_title}: {reason}", outcome="success" if online else "failure")
    return {"ae_title": ae_title, "online": online, "reason": reason, "user": g.user.name}


@bp.get("/whoami")
@login_required
def whoami() -> dict[str, Any]:
    """The signed-in user (scripts check their session with it)."""
    return {"name": g.user.name, "role": g.user.role, "path": request.path}


@bp.get("/jobs")
@login_required
def jobs() -> dict[str, Any]:
    """The burn queue for its page's live refresh: ``{"jobs": [...]}`` (see ``Discs.job_rows``).

    Each row also carries ``patient_name_text`` and ``size_text``, shown as the server-drawn page shows them
    (one name rule, one size formatter; the page's script does not format them again).
    """
    return {
        "jobs": [
            dict(row, patient_name_text=display_name(row["patient_name"]), size_text=human_size(row["size"]))
            for row in presenters.job_rows(get_site().discs.job_rows())
        ]
    }


@bp.get("/robots")
@login_required
def robots() -> dict[str, Any]:
    """Every robot's bridge status for the robots page's live refresh: ``{"robots": [...]}``."""
    return {"robots": get_site().discs.robot_report()}
