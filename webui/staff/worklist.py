"""Worklist page (items, steps, reset, delete) and the HL7 message log."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from flask import abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from webui import presenters
from webui.extensions import get_site
from webui.security import admin_required, login_required
from webui.staff import audit, bp

STATUSES = ("", "SCHEDULED", "ARRIVED", "READY", "STARTED", "DEPARTED", "COMPLETED", "DISCONTINUED", "CANCELED")
_DATE_RE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")


def _filters() -> tuple[dict[str, str], str]:
    args = {k: request.args.get(k, "").strip() for k in ("date", "modality", "status", "patient")}
    args["status"] = args["status"].upper()
    args["modality"] = args["modality"].upper()[:16]
    date = args["date"].replace("-", "") if len(args["date"]) == 10 and args["date"][4] == "-" else args["date"]
    error = ""
    if args["status"] not in STATUSES:
        error = f"Unknown status; use one of {', '.join(s for s in STATUSES if s)}."
    elif date and not _DATE_RE.match(date):
        error = "The date must be YYYY-MM-DD (or YYYYMMDD, or a range YYYYMMDD-YYYYMMDD)."
    return {**args, "date_value": date}, error


def _back() -> Response:
    """Back to the worklist with the filters the form was posted from."""
    query = urlencode({k: v for k, v in request.args.items() if k in ("date", "modality", "status", "patient")})
    return redirect(url_for("staff.worklist") + (f"?{query}" if query else ""))


@bp.get("/worklist")
@login_required
def worklist() -> Any:
    """Worklist items with their steps, filtered by date, modality, status and patient.

    :raise 400: a bad status or date.
    """
    args, error = _filters()
    items = (
        []
        if error
        else presenters.worklist_items(
            get_site().worklist.items(args["status"], args["patient"], args["date_value"], args["modality"])
        )
    )
    query = {k: args[k] for k in ("date", "modality", "status", "patient") if args[k]}
    return render_template(
        "staff/worklist.html", items=items, args=args, error=error, query=query, statuses=STATUSES
    ), 400 if error else 200


@bp.post("/worklist/steps/<int:step_id>/reset")
@login_required
def worklist_reset(step_id: int) -> Response:
    """Set a step back to SCHEDULED (front desk and admins: a patient who came back).

    :raise 404: no such step.
    """
    get_site().worklist.reset(step_id)
    audit("worklist.reset", detail=f"step {step_id}")
    flash("The step is SCHEDULED again: the modality sees it in its worklist.", "success")
    return _back()


@bp.post("/worklist/steps/<int:step_id>/delete")
@admin_required
def worklist_delete_step(step_id: int) -> Response:
    """Delete one step (admins).

    :raise 404: no such step.
    """
    get_site().worklist.delete_step(step_id)
    audit("worklist.delete_step", detail=f"step {step_id}")
    flash("The step was deleted.", "success")
    return _back()


@bp.post("/worklist/items/<study_uid>/delete")
@admin_required
def worklist_delete_item(study_uid: str) -> Response:
    """Delete an item with all its steps (admins).

    :raise 404: no such item.
    """
    count = get_site().worklist.delete_item(study_uid)
    audit("worklist.delete_item", detail=f"{study_uid}: {count} step(s)")
    flash(f"The item and its {count} step(s) were deleted.", "success")
    return _back()


@bp.post("/worklist/purge")
@admin_required
def worklist_purge() -> Response:
    """Delete every COMPLETED, DISCONTINUED and CANCELED step (admins)."""
    count = get_site().worklist.purge()
    audit("worklist.purge", detail=f"{count} step(s)")
    flash(f"{count} completed, discontinued or cancelled step(s) deleted.", "success")
    return redirect(url_for("staff.worklist"))


@bp.get("/hl7")
@admin_required
def hl7() -> str:
    """The newest HL7 messages received and the ACKs sent (``?ack=AA|AE|AR``).

    :raise 400: unknown ACK code.
    """
    ack = request.args.get("ack", "").upper()
    if ack not in ("", "AA", "AE", "AR"):
        abort(400, description="The ACK code must be AA, AE or AR.")
    site = get_site()
    return render_template(
        "staff/hl7.html",
        messages=site.worklist.hl7_messages(200, ack),
        ack=ack,
        retention_days=site.config.hl7.log_retention_days,
    )
