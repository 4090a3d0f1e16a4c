"""The HTTP API for integration, JSON under ``/api/v1`` (described by ``/api/v1/openapi.json``).

Studies, disc jobs, robots, worklist, patient links, nodes and health, on the same :class:`Site` calls as the staff
UI. Callers are those of DICOMweb (:mod:`webui.credentials`: API key, master cookie, staff session; a staff session
must send its CSRF token in ``X-CSRF-Token`` to change anything). Reading needs any staff role; deleting studies,
worklist items and changing nodes needs ``admin``. Every call is audited. Errors are RFC 9457 problem details.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import socket
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from appliance import __version__
from appliance.errors import (
    ApplianceError,
    InvalidTransition,
    InvalidValue,
    NotFound,
    PublishError,
    WorklistError,
)
from webui import presenters
from webui.api.openapi import OPENAPI
from webui.credentials import Principal, Refused, audit, authenticate
from webui.extensions import get_site
from webui.problem import problem
from webui.security import check_csrf

LOGGER = logging.getLogger(__name__)

bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")


@bp.errorhandler(Refused)
def _refused(exc: Refused) -> Response:
    response = problem(exc.status, exc.reason)
    if exc.retry_after:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException) -> Response:
    custom = exc.description if exc.description != type(exc).description else ""
    return problem(exc.code or 500, custom or (exc.name or "error").lower())


@bp.errorhandler(ApplianceError)
def _appliance(exc: ApplianceError) -> Response:
    if isinstance(exc, NotFound):
        return problem(404, str(exc) or "not found")
    if isinstance(exc, InvalidValue | WorklistError):
        return problem(400, str(exc))
    if isinstance(exc, InvalidTransition | PublishError):
        return problem(409, str(exc))
    LOGGER.exception("API %s %s failed", request.method, request.path)
    return problem(500, "the request failed; the log has the reason")


def _caller(admin: bool = False) -> Principal:
    principal = authenticate()
    if principal.kind == "patient":
        raise Refused(403, "a patient token gives access to DICOMweb only")
    if principal.kind == "staff" and request.method not in ("GET", "HEAD", "OPTIONS"):
        check_csrf()  # a signed-in browser must prove the request comes from our pages
    if admin and not principal.is_admin:
        raise Refused(403, "this needs the admin role")
    return principal


def _body() -> dict[str, Any]:
    if not request.data:
        return {}
    if request.mimetype != "application/json":
        raise Refused(415, "send the request body as application/json")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidValue("the request body must be a JSON object")
    return data


def _changed(action: str, study_uid: str = "", detail: str = "") -> None:
    audit("api.change", study_uid=study_uid, detail=f"{request.method} {request.path} {action} {detail}".strip())


def _read(study_uid: str = "") -> None:
    audit("api.read", study_uid=study_uid, detail=f"{request.method} {request.path}")


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of this API (no credentials needed)."""
    return jsonify(OPENAPI)


# -- health ----------------------------------------------------------------------------------------


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@bp.get("/health")
def health() -> Any:
    """Services up, storage free, robots, queue depths: for monitoring."""
    _caller()
    site = get_site()
    cfg = site.config
    services: dict[str, Any] = {"web": {"port": cfg.web.port, "up": True}}
    for name, port in (
        ("dicom", cfg.dicom.port),
        ("dicom_tls", cfg.dicom.tls_port),
        ("hl7", cfg.hl7.port),
        ("dicomweb", cfg.dicomweb.port),
    ):
        if port:
            services[name] = {"port": port, "up": _listening(port)}
    queues = site.discs.queue_depths()
    robots = site.discs.robot_report()
    free = site.studies.free_space()
    limit = cfg.dicom.free_space_limit_mb * 1024 * 1024
    # A storage whose disk or share is not mounted: its images cannot be read until it is back.
    storages = [
        {"number": s.number, "path": str(s.root), "available": s.available, "problem": s.problem}
        for s in site.app.store_area.all()
    ]
    ok = all(s["up"] for s in services.values()) and free > limit and all(s["available"] for s in storages)
    _read()
    return {
        "status": "ok" if ok else "degraded",
        "version": __version__,
        "services": services,
        "storage": {"free_bytes": free, "limit_bytes": limit, "counts": site.studies.counts(), "storages": storages},
        "robots": robots,
        "queues": {**queues, "thumbnails": site.pictures.prerender.pending},
    }


# -- studies ---------------------------------------------------------------------------------------


@bp.get("/studies")
def studies() -> Any:
    """Search studies: ``name``, ``pid``, ``acc``, ``modality``, ``period``/``from``/``to``, ``birth``, ``page``."""
    _caller()
    from webui.staff.studies import _query_from_args

    q, _, error = _query_from_args()
    if error:
        raise InvalidValue(error)
    page = get_site().catalog.search(q)
    _read()
    return {"total": page.total, "page": page.page, "pages": page.pages, "studies": page.rows}


@bp.get("/studies/<study_uid>")
def study(study_uid: str) -> Any:
    """One study with its series and patient link state."""
    _caller()
    site = get_site()
    info = dict(site.studies.study(study_uid))
    info["series"] = [dict(s) for s in site.catalog.series(study_uid)]
    token = site.tokens.get(study_uid)
    info["patient_link"] = _link_state(token, site) if token else None
    _read(study_uid)
    return _plain(info)


@bp.delete("/studies/<study_uid>")
def delete_study(study_uid: str) -> Any:
    """Delete a study (files, index, patient link): admin only."""
    _caller(admin=True)
    count = get_site().studies.delete(study_uid)
    _changed("study.delete", study_uid, f"{count} instance(s)")
    return {"deleted_instances": count}


# -- patient links ---------------------------------------------------------------------------------


def _link_state(token: Any, site: Any) -> dict[str, Any]:
    return {"valid_until": token.valid_until.isoformat(), "state": token.state(site.links.today())}


@bp.post("/studies/<study_uid>/link")
def create_link(study_uid: str) -> Any:
    """The study's patient link (made if it has none): ``{"link", "valid_until", "state"}``."""
    _caller()
    site = get_site()
    site.tokens.ensure(study_uid, site.studies.study(study_uid)["study_date"])
    link = site.links.link(study_uid)
    _changed("token.link", study_uid)
    return {"link": link, **_link_state(site.tokens.get(study_uid), site)}


@bp.post("/studies/<study_uid>/link/<action>")
def link_action(study_uid: str, action: str) -> Any:
    """``extend`` (body ``{"until": "YYYY-MM-DD"}``), ``revoke`` or ``regenerate`` the patient link."""
    _caller()
    site = get_site()
    site.tokens.ensure(study_uid, site.studies.study(study_uid)["study_date"])
    body = _body()
    if action == "extend":
        try:
            until = dt.date.fromisoformat(str(body.get("until", "")).strip())
        except ValueError:
            raise InvalidValue("'until' must be a date (YYYY-MM-DD)") from None
        info = site.tokens.extend(study_uid, until)
    elif action == "revoke":
        info = site.tokens.revoke(study_uid)
    elif action == "regenerate":
        info = site.tokens.regenerate(study_uid)
    else:
        raise NotFound(f"unknown link action {action!r}: extend, revoke or regenerate")
    _changed(f"token.{action}", study_uid, str(body.get("until", "")))
    out = _link_state(info, site)
    if action == "regenerate":
        out["link"] = site.links.link(study_uid)
    return out


@bp.get("/studies/<study_uid>/link/slip.pdf")
def link_slip(study_uid: str) -> Response:
    """The patient's token slip (PDF); ``?paper=A4|Letter|receipt80``."""
    _caller()
    paper = request.args.get("paper") or None
    if paper is not None and paper not in ("A4", "Letter", "receipt80"):
        raise InvalidValue("paper must be A4, Letter or receipt80")
    pdf = get_site().links.token_slip(study_uid, paper)
    _changed("token.slip", study_uid, paper or "")
    return Response(pdf, mimetype="application/pdf")


# -- disc jobs and robots --------------------------------------------------------------------------


@bp.get("/jobs")
def jobs() -> Any:
    """The newest disc jobs (``?limit=``, at most 1000)."""
    _caller()
    limit = request.args.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise InvalidValue("limit must be 1-1000")
    _read()
    return {"jobs": presenters.job_rows(get_site().discs.job_rows(int(limit)))}


@bp.post("/jobs")
def create_job() -> Any:
    """Burn a study: body ``{"study_uid", "robot"?, "copies"?}``; 201 with the job."""
    principal = _caller()
    body = _body()
    study_uid = body.get("study_uid")
    if not isinstance(study_uid, str) or not study_uid:
        raise InvalidValue("'study_uid' is required")
    copies = body.get("copies")
    if copies is not None and (not isinstance(copies, int) or isinstance(copies, bool)):
        raise InvalidValue("'copies' must be a whole number")
    robot = body.get("robot") or ""
    if not isinstance(robot, str):
        raise InvalidValue("'robot' must be a robot name")
    job = get_site().discs.burn(study_uid, robot, copies, actor=principal.actor)
    _changed("job.create", study_uid, f"job {job.id}")
    return _plain(dataclasses.asdict(job)), 201


@bp.post("/jobs/<int:job_id>/<action>")
def job_action(job_id: int, action: str) -> Any:
    """``cancel``, ``retry``, ``reburn`` or ``reprint`` a job (409 when its state does not allow it)."""
    principal = _caller()
    job = get_site().discs.job_action(job_id, action, actor=principal.actor)
    _changed(f"job.{action}", "", f"job {job_id} -> {job.id}")
    return _plain(dataclasses.asdict(job))


@bp.get("/robots")
def robots() -> Any:
    """Every robot with its bridge status."""
    _caller()
    _read()
    return {"robots": get_site().discs.robot_report()}


# -- worklist --------------------------------------------------------------------------------------


@bp.get("/worklist")
def worklist() -> Any:
    """Worklist items with their steps: ``?status=&patient=&date=&modality=``."""
    _caller()
    args = request.args
    _read()
    items = get_site().worklist.items(
        args.get("status", ""), args.get("patient", ""), args.get("date", ""), args.get("modality", "")
    )
    return {"items": _plain(presenters.worklist_items(items))}


@bp.post("/worklist")
def create_worklist_item() -> Any:
    """Create an item directly: DICOM keywords as keys, ``"steps": [{...}]`` its scheduled procedure steps; 201."""
    _caller()
    body = _body()
    steps = body.pop("steps", None)
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
        raise InvalidValue("'steps' must be a non-empty list of scheduled procedure steps (objects)")
    site = get_site()
    from appliance.worklist.store import Order, PatientRef, SpsStatus, StepOrder

    patient_id = body.pop("PatientID", "")
    if not isinstance(patient_id, str) or not patient_id:
        raise InvalidValue("'PatientID' is required")
    issuer = str(body.pop("IssuerOfPatientID", "") or "")
    patient_attrs = {k: v for k, v in body.items() if k.startswith("Patient")}
    attrs = {k: v for k, v in body.items() if k not in patient_attrs and k != "StudyInstanceUID"}
    # What a RIS would send and a direct order may leave out: the accession number as requested procedure ID.
    attrs.setdefault("RequestedProcedureID", str(attrs.get("AccessionNumber") or "RP1"))
    step_orders = []
    for number, step in enumerate(steps, start=1):
        step = dict(step)
        status = str(step.pop("ScheduledProcedureStepStatus", "") or "SCHEDULED").upper()
        if status not in SpsStatus.__members__:
            raise InvalidValue(f"unknown ScheduledProcedureStepStatus {status!r}")
        sps_id = str(step.pop("ScheduledProcedureStepID", "") or f"SPS{number}")
        step_orders.append(StepOrder(sps_id, SpsStatus(status), step))
    # The HL7 order path: validated, a Study Instance UID made when none is given, all steps or none.
    order = Order(
        str(body.get("StudyInstanceUID") or ""),
        PatientRef(patient_id, issuer),
        {"PatientID": patient_id, **patient_attrs},
        attrs,
        tuple(step_orders),
        charset="ISO_IR 192",
        source="api",
    )
    result = site.worklist.apply_order(order)
    keys = result.created + result.updated
    _changed("worklist.add", "", ", ".join(str(k) for k in keys))
    return {
        "created": [dataclasses.asdict(k) for k in result.created],
        "updated": [dataclasses.asdict(k) for k in result.updated],
    }, 201


@bp.delete("/worklist/<study_uid>")
def delete_worklist_item(study_uid: str) -> Any:
    """Delete every step of a worklist item (admin)."""
    _caller(admin=True)
    count = get_site().worklist.delete_item(study_uid)
    _changed("worklist.delete", study_uid, f"{count} step(s)")
    return {"deleted_steps": count}


@bp.post("/worklist/steps/<int:step_id>/reset")
def reset_worklist_step(step_id: int) -> Any:
    """Set a step back to SCHEDULED."""
    _caller()
    count = get_site().worklist.reset(step_id)
    _changed("worklist.reset", "", f"step {step_id}")
    return {"reset_steps": count}


# -- nodes -----------------------------------------------------------------------------------------


@bp.get("/nodes")
def nodes() -> Any:
    """The known DICOM nodes and where each is defined (config file or staff UI)."""
    _caller()
    _read()
    return {"nodes": [{**dataclasses.asdict(k.node), "source": k.source} for k in get_site().nodes.all()]}


@bp.post("/nodes/<ae_title>/echo")
def echo(ae_title: str) -> Any:
    """C-ECHO a known node: ``{"ae_title", "online", "reason"}``."""
    _caller()
    online, reason = get_site().admin.echo(ae_title)
    _changed("node.echo", "", f"{ae_title}: {reason}")
    return {"ae_title": ae_title, "online": online, "reason": reason}


def _plain(value: Any) -> Any:
    """Values JSON can carry (enums, dates, paths as text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
