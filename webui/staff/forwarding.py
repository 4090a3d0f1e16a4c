"""Staff pages about forwarding to the regional PACS: the queue page, and what the study list shows of it.

The queue lives in the appliance database (:class:`~appliance.forwarding.queue.ForwardQueue`); the running
worker picks up a retry or a restart at its next look at the queue (within a second).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from flask import flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from appliance.forwarding.queue import STATES, ForwardQueue
from appliance.site.catalog import StudyPage, StudyQuery
from webui.extensions import get_site
from webui.security import admin_required, login_required
from webui.staff import audit, bp


def _queue() -> ForwardQueue:
    return ForwardQueue(get_site().app.db)


def _when(stamp: float | None) -> str:
    return "" if stamp is None else dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")


@bp.get("/forwarding")
@login_required
def forwarding() -> str:
    """The forwarding queue: instances and series per state, the oldest waiting, the last error; admin buttons."""
    status = _queue().status()
    waited = None if status.oldest_waiting is None else (time.time() - status.oldest_waiting) / 60
    return render_template("staff/forwarding.html", cfg=get_site().config.forwarding, status=status, states=STATES,
                           oldest=_when(status.oldest_waiting), waited=waited, next_try=_when(status.last_error_at))


@bp.post("/forwarding/retry")
@admin_required
def forwarding_retry() -> Response:
    """Try every failed instance now."""
    count = _queue().retry_failed()
    audit("forwarding retry", detail=f"{count} instance(s)")
    flash(f"{count} failed instance(s) will be tried again at once.", "success")
    return redirect(url_for("staff.forwarding"))


@bp.post("/forwarding/restart")
@admin_required
def forwarding_restart() -> Response:
    """Queue every stored instance again (the regional server gets everything anew)."""
    count = _queue().restart()
    audit("forwarding restart", detail=f"{count} instance(s)")
    flash(f"{count} instance(s) queued to be sent again.", "success")
    return redirect(url_for("staff.forwarding"))


def _wildcard(value: str) -> str:
    """The study list's matching (from the start; a leading * anywhere) as a DICOM wildcard value."""
    value = value.strip()
    return "" if not value else value if value.endswith("*") else value + "*"


def study_list_extras(q: StudyQuery, page: StudyPage | None) -> dict[str, Any]:
    """What the study list shows of forwarding: each listed study's state, and with the extended search the
    studies only the regional server holds (first page only) with a warning when it did not answer."""
    if page is None:
        return {"forward_states": {}, "regional_rows": [], "regional_warning": ""}
    site = get_site()
    states = _queue().study_states(r["study_uid"] for r in page.rows)
    search = site.app.extended_search
    rows: list[dict[str, Any]] = []
    warning = ""
    if search is not None and page.page == 1:
        dates = f"{q.date_from}-{q.date_to}" if q.date_from or q.date_to else ""
        criteria = {"PatientName": _wildcard(q.name.upper()), "PatientID": _wildcard(q.patient_id),
                    "AccessionNumber": _wildcard(q.accession), "ModalitiesInStudy": q.modality.strip().upper(),
                    "StudyDate": dates, "PatientBirthDate": q.birth_date}
        rows, warning = search.studies(criteria, lambda uid: site.app.index.holds("STUDY", uid))
    return {"forward_states": states, "regional_rows": rows, "regional_warning": warning}
