"""Staff pages about studies: search, study page with series, viewer, downloads, deletion, patient links."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Response, abort, flash, g, redirect, render_template, request, send_file, url_for
from werkzeug.wrappers import Response as BaseResponse

from appliance.errors import InvalidValue
from appliance.site.catalog import PERIODS, SORTS, StudyQuery, parse_date, period_range
from webui.extensions import get_site
from webui.patient import image_response, jpeg
from webui.security import admin_required, login_required
from webui.staff import audit, bp
from webui.staff.forwarding import study_list_extras

MODALITIES = ("", "CT", "MR", "US", "CR", "DX", "MG", "NM", "PT", "XA", "RF", "OT", "SR", "DOC")


def _query_from_args() -> tuple[StudyQuery, dict[str, str], str]:
    """The search form's values, the query they make, and an error message for bad input ('' if none)."""
    args = {
        k: request.args.get(k, "").strip()
        for k in ("name", "pid", "acc", "modality", "period", "date", "from", "to", "birth", "sort", "dir", "page")
    }
    args["period"] = args["period"] or "any"
    args["sort"] = args["sort"] if args["sort"] in SORTS else "date"
    args["dir"] = "asc" if args["dir"] == "asc" else "desc"
    q = StudyQuery(
        name=args["name"],
        patient_id=args["pid"],
        accession=args["acc"],
        modality=args["modality"][:16],
        sort=args["sort"],
        descending=args["dir"] == "desc",
        page=int(args["page"]) if args["page"].isdigit() else 1,
    )
    error = ""
    try:
        if args["period"] not in PERIODS:
            raise InvalidValue(f"unknown date period {args['period']!r}")
        q.date_from, q.date_to = period_range(
            args["period"], get_site().links.today(), args["date"], args["from"], args["to"]
        )
        if args["birth"]:
            q.birth_date = parse_date(args["birth"], "birth date")
    except InvalidValue as exc:
        error = str(exc)
    return q, args, error


@bp.get("/studies")
@login_required
def studies() -> Any:
    """Search studies by name, patient ID, accession, modality, study date and birth date; sortable, paginated."""
    q, args, error = _query_from_args()
    page = get_site().catalog.search(q) if not error else None
    status = 400 if error else 200
    # Links (sorting, pages) carry only what was typed, so they stay short and readable.
    query = {k: v for k, v in args.items() if v and k != "page" and (k, v) not in (("period", "any"),)}
    return render_template(
        "staff/studies.html",
        page=page,
        args=args,
        query=query,
        error=error,
        periods=PERIODS,
        modalities=MODALITIES,
        **study_list_extras(q, page),
    ), status


@bp.get("/studies/<study_uid>")
@login_required
def study(study_uid: str) -> str:
    """One study: patient, series with thumbnails and counts, patient link, access log, actions.

    :raise 404: the study is not stored.
    """
    site = get_site()
    study = site.studies.study(study_uid)
    accesses = site.audit.entries(study_uid=study_uid, limit=50)  # first: it commits queued access counts
    token = site.tokens.get(study_uid)
    return render_template(
        "staff/study.html",
        study=study,
        series=site.catalog.series(study_uid),
        token=token,
        token_state=token.state(site.links.today()) if token else "none",
        accesses=accesses,
        today=site.links.today(),
        robot_names=site.discs.robot_names(),
        default_copies=site.config.burn.copies,
        queued_job=request.args.get("job", "") if request.args.get("job", "").isdigit() else "",
        default_until=site.tokens.valid_until(dt.date.today().strftime("%Y%m%d")),
        token_days=site.config.web.token_days,
    )


@bp.get("/thumb/<series_uid>.jpg")
@login_required
def thumbnail(series_uid: str) -> Response:
    """Thumbnail of a series.

    :raise 404: the series is not stored.
    """
    return jpeg(get_site().pictures.series_thumbnail(series_uid))


@bp.get("/image/<sop_uid>.jpg")
@login_required
def image(sop_uid: str) -> Response:
    """A viewer picture of an instance (``?wc=&ww=&size=``).

    :raise 404: the instance is not stored.
    """
    return image_response(get_site(), sop_uid, None)


@bp.get("/series/<series_uid>")
@login_required
def viewer(series_uid: str) -> str:
    """The image viewer on a series.

    :raise 404: the series is not stored.
    """
    site = get_site()
    series = site.studies.series(series_uid)
    study = site.studies.study(series["study_uid"])
    instances = [i["sop_uid"] for i in site.catalog.instances(series_uid)]
    return render_template(
        "staff/viewer.html",
        study=study,
        series=series,
        instances=instances,
        all_series=site.catalog.series(study["study_uid"]),
    )


@bp.get("/studies/<study_uid>/download/<kind>.zip")
@bp.get("/studies/<study_uid>/series/<series_uid>/download/<kind>.zip")
@login_required
def download(study_uid: str, kind: str, series_uid: str | None = None) -> Response:
    """A study or series as a ``dicom`` (file-set with DICOMDIR) or ``jpeg`` zip.

    :raise 404: unknown study, series or kind.
    :raise 503: too many downloads are being prepared.
    """
    handle, name = get_site().studies.download(kind, study_uid, series_uid)
    audit(
        "series.download" if series_uid else "study.download",
        study_uid,
        detail=f"{kind} zip" + (f" of series {series_uid}" if series_uid else ""),
    )
    return send_file(handle, mimetype="application/zip", as_attachment=True, download_name=name)


@bp.route("/studies/<study_uid>/delete", methods=["GET", "POST"])
@bp.route("/studies/<study_uid>/series/<series_uid>/delete", methods=["GET", "POST"])
@admin_required
def delete(study_uid: str, series_uid: str | None = None) -> Any:
    """Ask to confirm, then delete a study or one series (admins only).

    :raise 404: the study or series is not stored.
    """
    site = get_site()
    study = site.studies.study(study_uid)
    series = site.studies.series(series_uid, study_uid) if series_uid else None
    if request.method == "GET":
        return render_template("staff/confirm_delete.html", study=study, series=series)
    if request.form.get("confirm") != "yes":
        flash("Nothing was deleted: tick the box to confirm.", "error")
        return redirect(request.path)
    count = site.studies.delete(study_uid, series_uid)
    audit(
        "series.delete" if series_uid else "study.delete",
        study_uid,
        detail=f"{count} instance(s)" + (f" of series {series_uid}" if series_uid else ""),
    )
    flash(f"Deleted {count} image(s).", "success")
    if series_uid and site.studies.find(study_uid) is not None:
        return redirect(url_for("staff.study", study_uid=study_uid))
    return redirect(url_for("staff.studies"))


# -- patient link -----------------------------------------------------------------------------------


@bp.post("/studies/<study_uid>/token/<action>")
@login_required
def token_action(study_uid: str, action: str) -> BaseResponse:
    """Revoke, extend or regenerate a study's patient link.

    :raise 404: unknown study or action.
    :raise 400: a bad date for ``extend``.
    """
    site = get_site()
    site.studies.study(study_uid)
    site.tokens.ensure(study_uid, site.studies.study(study_uid)["study_date"])
    if action == "revoke":
        site.tokens.revoke(study_uid)
        flash("The patient link no longer works. Use “New link” to give the patient another one.", "success")
    elif action == "extend":
        try:
            until = dt.date.fromisoformat(request.form.get("until", "").strip())
        except ValueError:
            raise InvalidValue("the new end date must be a date (YYYY-MM-DD)") from None
        info = site.tokens.extend(study_uid, until)
        flash(f"The patient link now works until {info.valid_until.isoformat()}.", "success")
    elif action == "regenerate":
        info = site.tokens.regenerate(study_uid)
        flash(
            f"A new patient link was made (valid until {info.valid_until.isoformat()}); the old one no "
            "longer works. Print a new slip for the patient.",
            "success",
        )
    else:
        abort(404)
    audit(f"token.{action}", study_uid, detail=request.form.get("until", ""))
    return redirect(url_for("staff.study", study_uid=study_uid) + "#link")


@bp.get("/studies/<study_uid>/slip.pdf")
@login_required
def slip(study_uid: str) -> Response:
    """The patient's token slip as a PDF to print (``?paper=A4|Letter|receipt80``).

    :raise 404: the study is not stored.
    :raise 400: unknown paper.
    """
    paper = request.args.get("paper") or None
    if paper is not None and paper not in ("A4", "Letter", "receipt80"):
        abort(400, description="The paper must be A4, Letter or receipt80.")
    pdf = get_site().links.token_slip(study_uid, paper)
    audit("token.slip", study_uid, detail=paper or "")
    response = Response(pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = "inline; filename=token-slip.pdf"
    return response


@bp.get("/studies/<study_uid>/link")
@login_required
def link(study_uid: str) -> str:
    """Show the patient link (to read it out or copy it) with its QR code on the slip.

    :raise 404: the study is not stored.
    """
    site = get_site()
    study = site.studies.study(study_uid)
    url = site.links.link(study_uid)
    audit("token.link", study_uid)
    return render_template("staff/link.html", study=study, link=url, token=site.tokens.get(study_uid), user=g.user)
