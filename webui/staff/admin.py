"""Administration: settings (read-only), logs, about, users, own password."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

from flask import abort, flash, g, redirect, render_template, request, send_file, session, url_for
from werkzeug.wrappers import Response

from appliance import __version__
from appliance.config import LOG_LEVELS
from appliance.errors import InvalidValue
from appliance.site.users import ROLES
from webui import presenters
from webui.extensions import get_site
from webui.security import admin_required, login_required
from webui.staff import audit, bp


@bp.get("/settings")
@admin_required
def settings() -> str:
    """The effective configuration, secrets masked."""
    site = get_site()
    sections = presenters.settings_sections(site.admin.settings())
    return render_template(
        "staff/settings.html",
        sections=sections,
        source=site.config.source,
        nodes=site.nodes.all(),
        amqp=site.admin.amqp_state(),
    )


@bp.get("/logs")
@admin_required
def logs() -> Any:
    """The newest log records at a level or above (``?level=WARNING&limit=500``).

    :raise 400: unknown level.
    """
    level = request.args.get("level", "INFO").upper()
    if level not in LOG_LEVELS:
        abort(400, description=f"Unknown level; use one of {', '.join(LOG_LEVELS)}.")
    limit = request.args.get("limit", "500")
    records = get_site().admin.log_records(level, max(10, min(int(limit), 5000)) if limit.isdigit() else 500)
    return render_template("staff/logs.html", records=records, level=level, levels=LOG_LEVELS)


@bp.get("/logs/download")
@admin_required
def logs_download() -> Response:
    """Every log file in one zip."""
    audit("logs.download")
    return send_file(
        get_site().admin.logs_zip(), mimetype="application/zip", as_attachment=True, download_name="appliance-logs.zip"
    )


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


@bp.get("/about")
@login_required
def about() -> str:
    """Version, components, what is stored and the free disk space."""
    site = get_site()
    components = [("appliance", __version__), ("Python", platform.python_version())] + [
        (name, _version(name)) for name in ("pydicom", "pynetdicom", "flask", "waitress", "pillow", "numpy")
    ]
    return render_template(
        "staff/about.html",
        components=components,
        counts=site.studies.counts(),
        free=site.studies.free_space(),
        data_dir=site.config.data_dir.resolve(),
    )


@bp.route("/users", methods=["GET", "POST"])
@admin_required
def users() -> Any:
    """List users and add one (admins)."""
    site = get_site()
    error = ""
    if request.method == "POST":
        try:
            user = site.users.add(
                request.form.get("name", ""), request.form.get("password", ""), request.form.get("role", "")
            )
            audit("user.add", detail=f"{user.name} ({user.role})")
            flash(f"User {user.name} added.", "success")
            return redirect(url_for("staff.users"))
        except InvalidValue as exc:
            error = str(exc)
    return render_template(
        "staff/users.html", users=site.users.all(), roles=ROLES, error=error, form=request.form
    ), 400 if error else 200


@bp.post("/users/<int:user_id>/<action>")
@admin_required
def user_action(user_id: int, action: str) -> Response:
    """Delete, disable or enable a user, set a role or a new password (admins).

    :raise 404: unknown user or action.
    """
    site = get_site()
    user = site.users.get(user_id)
    if user is None:
        abort(404)
    try:
        if action == "delete":
            site.users.delete(user_id)
            flash(f"User {user.name} deleted.", "success")
        elif action == "role":
            site.users.set_role(user_id, request.form.get("role", ""))
            flash(f"{user.name} is now {request.form.get('role')}.", "success")
        elif action in ("disable", "enable"):
            site.users.set_disabled(user_id, action == "disable")
            flash(f"User {user.name} {action}d.", "success")
        elif action == "password":
            site.users.set_password(user_id, request.form.get("password", ""))
            flash(f"Password of {user.name} changed.", "success")
        else:
            abort(404)
        audit(f"user.{action}", detail=user.name)
    except InvalidValue as exc:
        flash(str(exc), "error")
    return redirect(url_for("staff.users"))


@bp.route("/account", methods=["GET", "POST"])
@login_required
def account() -> Any:
    """Change one's own password (the current one is asked for)."""
    error = ""
    if request.method == "POST":
        site = get_site()
        if site.users.authenticate(g.user.name, request.form.get("current", "")) is None:
            error = "The current password is wrong."
        elif request.form.get("password") != request.form.get("again"):
            error = "The two new passwords differ."
        else:
            try:
                site.users.set_password(g.user.id, request.form.get("password", ""))
                # Sessions elsewhere ended with the change; this one carries on with the new generation.
                session["gen"] = site.users.get(g.user.id).session_gen  # type: ignore[union-attr]
                audit("user.password", detail=g.user.name)
                flash("Your password was changed.", "success")
                return redirect(url_for("staff.studies"))
            except InvalidValue as exc:
                error = str(exc)
    return render_template("staff/account.html", error=error), 400 if error else 200
