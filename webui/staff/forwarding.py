"""Staff pages about forwarding to the regional PACS: the queue page, and what the study list shows of it.

The core's side is :class:`~appliance.site.forwarding.Forwarding`; the running worker picks up a retry or a
restart at its next look at the queue (within a second).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from flask import flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from appliance.forwarding.queue import STATES
from appliance.site.catalog import StudyPage, StudyQuery
from webui.extensions import get_site
from webui.security import admin_required, login_required
from webui.staff import audit, bp


def _when(stamp: float | None) -> str:
    return "" if stamp is None else dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")


@bp.get("/forwarding")
@login_required
def forwarding() -> str:
    """The forwarding queue: instances and series per state, the oldest waiting, the last error; admin buttons."""
    status = get_site().forwarding.status()
    waited = None if status.oldest_waiting is None else (time.time() - status.oldest_waiting) / 60
    return render_template(
        "staff/forwarding.html",
        cfg=get_site().config.forwarding,
        status=status,
        states=STATES,
        oldest=_when(status.oldest_waiting),
        waited=waited,
        next_try=_when(status.last_error_at),
    )


@bp.post("/forwarding/retry")
@admin_required
def forwarding_retry() -> Response:
    """Try every failed instance now."""
    count = get_site().forwarding.retry_failed()
    audit("forwarding retry", detail=f"{count} instance(s)")
    flash(f"{count} failed instance(s) will be tried again at once.", "success")
    return redirect(url_for("staff.forwarding"))


@bp.post("/forwarding/restart")
@admin_required
def forwarding_restart() -> Response:
    """Queue every stored instance again (the regional server gets everything anew)."""
    count = get_site().forwarding.restart()
    audit("forwarding restart", detail=f"{count} instance(s)")
    flash(f"{count} instance(s) queued to be sent again.", "success")
    return redirect(url_for("staff.forwarding"))


def study_list_extras(q: StudyQuery, page: StudyPage | None) -> dict[str, Any]:
    """What the study list shows of forwarding: each listed study's state, and with the extended search the
    studies only the regional server holds (first page only) with a warning when it did not answer."""
    if page is None:
        return {"forward_states": {}, "regional_rows": [], "regional_warning": ""}
    forwarding = get_site().forwarding
    states = forwarding.study_states(r["study_uid"] for r in page.rows)
    rows: list[dict[str, Any]] = []
    warning = ""
    if page.page == 1:
        rows, warning = forwarding.regional_studies(q) or ([], "")
    return {"forward_states": states, "regional_rows": rows, "regional_warning": warning}
