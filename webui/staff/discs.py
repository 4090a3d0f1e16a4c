"""Disc publishing pages: burn a study, the burn queue with its job actions and label preview, the robots."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, send_file, url_for
from werkzeug.wrappers import Response

from appliance.errors import InvalidValue, PublishError
from webui import presenters
from webui.extensions import get_site
from webui.security import login_required
from webui.staff import audit, bp


@bp.post("/studies/<study_uid>/burn")
@login_required
def burn(study_uid: str) -> Response:
    """Queue a disc job for a study (robot and copies from the form), as ``appliance burn``.

    :raise 404: the study is not stored.
    :raise 400: unknown robot or copies out of 1-99.
    """
    copies = request.form.get("copies", "").strip()
    if copies and not copies.isdigit():
        raise InvalidValue("copies must be a number from 1 to 99")
    job = get_site().discs.burn(study_uid, request.form.get("robot", ""), int(copies) if copies else None, g.user.name)
    audit("disc.burn", study_uid, detail=f"job {job.id}, robot {job.robot}, {job.copies} copies")
    flash(f"Disc job {job.id} queued on {job.robot} ({job.copies} cop{'y' if job.copies == 1 else 'ies'}).", "success")
    return redirect(url_for("staff.study", study_uid=study_uid, job=job.id))


@bp.get("/jobs")
@login_required
def jobs() -> str:
    """The burn queue: every job with its state and progress, refreshed by staff.js from ``/api/jobs``."""
    return render_template("staff/jobs.html", jobs=presenters.job_rows(get_site().discs.job_rows()))


@bp.post("/jobs/<int:job_id>/<action>")
@login_required
def job_action(job_id: int, action: str) -> Response:
    """Retry, cancel, reburn or reprint a job; a state that does not allow it gives a clear message.

    :raise 404: unknown job or action.
    """
    try:
        job = get_site().discs.job_action(job_id, action, g.user.name)
    except PublishError as exc:  # wrong state, or the robot refused to cancel
        audit(f"disc.{action}", detail=f"job {job_id}: {exc}", outcome="failure")
        flash(f"Job {job_id}: {exc}.", "error")
        return redirect(url_for("staff.jobs"))
    audit(f"disc.{action}", detail=f"job {job_id}" + (f" -> job {job.id}" if job.id != job_id else ""))
    text = {
        "retry": f"Job {job_id} is queued again.",
        "cancel": f"Job {job_id} is cancelled.",
        "reburn": f"Job {job.id} queued: job {job_id} burned again.",
        "reprint": f"Job {job.id} queued: job {job_id} again with new labels.",
    }[action]
    flash(text, "success")
    return redirect(url_for("staff.jobs"))


@bp.get("/jobs/<int:job_id>/label.pdf")
@login_required
def job_label(job_id: int) -> Any:
    """The label PDF of a job's disc (``?disc=2``; default the first).

    :raise 404: no such job, or its label is not staged (any more).
    """
    disc = request.args.get("disc", "1")
    path = get_site().discs.job_label(job_id, int(disc) if disc.isdigit() else 1)
    return send_file(path, mimetype="application/pdf", download_name=f"job-{job_id}-label.pdf")


@bp.get("/robots")
@login_required
def robots() -> str:
    """Each robot's bridge status, ink and media levels, drives and errors, set-up warnings, and the USB detection."""
    site = get_site()
    warnings = {name: list(robot.setup_warnings()) for name, robot in site.discs.robots.items()}
    return render_template(
        "staff/robots.html", robots=site.discs.robot_report(), usb=site.discs.usb_summary(), warnings=warnings
    )
