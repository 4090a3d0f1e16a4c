"""Storages, maintenance tasks and the e-mail test button (appliance.site.upkeep)."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from appliance.errors import InvalidValue
from appliance.site.upkeep import UpkeepView
from webui.extensions import get_site
from webui.security import admin_required, login_required
from webui.staff import audit, bp


def _view() -> UpkeepView:
    return get_site().upkeep


@bp.route("/storages", methods=["GET", "POST"])
@login_required
def storages() -> Any:
    """List storages; admins add one (POST path, limit_mb)."""
    view = _view()
    error = ""
    if request.method == "POST":
        if not g.user.is_admin:
            abort(403)
        try:
            number = view.add_storage(request.form.get("path", ""), request.form.get("limit_mb", "2048"))
            audit("storage.add", detail=f"storage {number}: {request.form.get('path', '')}")
            flash(f"Storage {number} added.", "success")
            return redirect(url_for("staff.storages"))
        except InvalidValue as exc:
            error = str(exc)
    return render_template(
        "staff/storages.html", storages=view.storages(), error=error, form=request.form
    ), 400 if error else 200


@bp.post("/storages/<int:number>/<action>")
@admin_required
def storage_action(number: int, action: str) -> Response:
    """Enable or disable a storage for new files (admins)."""
    if action not in ("enable", "disable"):
        flash("Unknown action.", "error")
        return redirect(url_for("staff.storages"))
    try:
        _view().set_enabled(number, action == "enable")
        audit(f"storage.{action}", detail=f"storage {number}")
        flash(f"Storage {number} {'takes' if action == 'enable' else 'takes no'} new files.", "success")
    except InvalidValue as exc:
        flash(str(exc), "error")
    return redirect(url_for("staff.storages"))


@bp.get("/tasks")
@login_required
def tasks() -> str:
    """The weekly windows of each task kind, what runs, what ran, progress and last error."""
    view = _view()
    return render_template("staff/tasks.html", kinds=view.kinds(), days=view.days)


@bp.route("/email", methods=["GET", "POST"])
@admin_required
def email_settings() -> Any:
    """The e-mail settings (password masked), recent alerts, and the "send test mail" button (POST)."""
    view = _view()
    if request.method == "POST":
        error = view.send_test_mail()
        audit("email.test", detail=error or "sent", outcome="failure" if error else "success")
        if error:
            flash(f"Test mail not sent: {error}", "error")
        else:
            flash("Test mail sent.", "success")
        return redirect(url_for("staff.email_settings"))
    cfg = get_site().config.email
    return render_template("staff/email.html", cfg=cfg, enabled=view.mail_enabled(), mails=view.recent_mails())
