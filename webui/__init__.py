"""The web site: patient token pages and the front-desk staff UI, one Flask app (docs/web.md).

Build it with :func:`create_app`; ``appliance serve`` hands it to :class:`webui.server.WebServer`. Blueprints:
``patient`` (``/token``, ``/study``...), ``staff`` (``/staff/...``, login required) and ``api`` (``/api/...``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, g, make_response, render_template, request
from werkzeug.exceptions import HTTPException

from appliance import __version__
from appliance.config import Config, parse_config
from appliance.core import Appliance
from appliance.errors import ApplianceError, InvalidValue, NotFound
from appliance.names import display_name
from appliance.site.export import Busy
from appliance.site.service import Site
from appliance.site.tokens import load_or_create_key
from appliance.units import human_size
from webui.extensions import WebContext, get_site
from webui.security import RateLimiter, StaffSessionInterface, csrf_token, set_headers

LOGGER = logging.getLogger(__name__)

_TITLES = {
    400: "Bad request",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    413: "Too large",
    429: "Too many attempts",
    500: "Something went wrong",
    503: "Busy",
}


#: Audit actions in the words of the staff pages (the raw names stay in the database and its filters).
_ACTION_WORDS = {
    "token.open": "link opened",
    "token.failed": "wrong link",
    "token.rate_limited": "too many wrong links",
    "token.revoke": "link revoked",
    "token.extend": "link end date set",
    "token.regenerate": "new link made",
    "token.slip": "slip printed",
    "token.link": "link shown",
    "study.view": "study viewed",
    "study.download": "study downloaded",
    "series.download": "series downloaded",
    "study.delete": "study deleted",
    "series.delete": "series deleted",
    "dicomweb.retrieve": "retrieved (DICOMweb)",
    "dicomweb.search": "searched (DICOMweb)",
    "dicomweb.store": "stored (DICOMweb)",
    "access.refused": "access refused",
}


def format_action(value: str) -> str:
    """An audit action as staff read it (``token.link`` -> ``link shown``); unknown ones as they are."""
    return _ACTION_WORDS.get(value, value.replace(".", " ").replace("_", " "))


def format_da(value: str) -> str:
    """A DICOM date as ``YYYY-MM-DD`` (shown as sent when it is not a date)."""
    text = (value or "").strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def format_time(value: str) -> str:
    """An ISO UTC time stamp of ours in local time, to the minute."""
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return value or ""
    return when.astimezone().strftime("%Y-%m-%d %H:%M")


def create_app(
    config: Config | None = None,
    appliance: Appliance | None = None,
    overrides: Mapping[str, Any] | None = None,
    site: Site | None = None,
) -> Flask:
    """Build the web app.

    Parameters
    ----------
    config : Config, optional
        The appliance configuration; default: that of ``appliance``, else the built-in defaults.
    appliance : Appliance, optional
        The running core; made from ``config`` when not given.
    overrides : mapping, optional
        Flask settings to apply last (tests set ``TESTING``).
    site : Site, optional
        The web core as the composition root wired it (robots, publishing, C-ECHO:
        :func:`appliance.cli.web.build_site`); default: a bare one over ``appliance``, with no robots and no echo.

    Returns
    -------
    Flask
        The app, with the ``patient``, ``staff`` and ``api`` blueprints.
    """
    if site is not None:
        appliance = site.app
    elif appliance is None:
        appliance = Appliance(config or parse_config({}))
    cfg = appliance.config
    if site is None:
        site = Site(appliance)
    web = cfg.web
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=load_or_create_key(cfg.data_dir / "secrets" / "web.key"),
        SESSION_COOKIE_NAME="appliance_staff",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=web.https,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(minutes=web.session_minutes),
        MAX_CONTENT_LENGTH=256 * 1024,
        APPLIANCE_HTTPS=web.https,
        PATIENT_SESSION_SECONDS=web.patient_session_minutes * 60,
        STAFF_SESSION_SECONDS=web.session_minutes * 60,
    )
    if overrides:
        app.config.update(overrides)
    app.session_interface = StaffSessionInterface()
    app.extensions["appliance"] = WebContext(
        site, RateLimiter(web.rate_limit, web.rate_window), RateLimiter(web.rate_limit, web.rate_window)
    )

    from webui.api import bp as api_bp
    from webui.api.v1 import bp as api_v1_bp
    from webui.patient import bp as patient_bp
    from webui.staff import bp as staff_bp

    app.register_blueprint(patient_bp)
    app.register_blueprint(staff_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(api_v1_bp)
    app.after_request(set_headers)
    app.jinja_env.filters.update(
        pn=display_name, da=format_da, size=human_size, localtime=format_time, action=format_action
    )
    app.jinja_env.globals.update(csrf_token=csrf_token, version=__version__)

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"institution": cfg.institution or "Imaging department", "current_user": g.get("user")}

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        # Our own descriptions are written for the reader; werkzeug's defaults are not shown.
        custom = exc.description if exc.description != type(exc).description else ""
        return _error_page(exc.code or 500, custom or "")

    @app.errorhandler(ApplianceError)
    def _appliance_error(exc: ApplianceError) -> Any:
        if isinstance(exc, NotFound):
            return _error_page(404, "")
        if isinstance(exc, Busy):
            return _error_page(503, str(exc))
        if isinstance(exc, InvalidValue):
            return _error_page(400, str(exc))
        LOGGER.exception("web request %s %s failed", request.method, request.path)
        return _error_page(500, "")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        # The protocol guard: any failure becomes a plain 500 page and a log entry, never a traceback.
        LOGGER.exception("web request %s %s failed", request.method, request.path)
        return _error_page(500, "")

    return app


def _error_page(code: int, message: str) -> Any:
    """The error page of the audience of the request: neutral for patients, with navigation for staff."""
    # Unrouted paths have no blueprint: their prefix tells the audience.
    audience = request.blueprint or request.path.strip("/").split("/", 1)[0]
    if audience == "api":
        return {"error": _TITLES.get(code, "Error"), "message": message}, code
    template = "staff/error.html" if audience == "staff" else "patient/error.html"
    if code == 404 and audience != "staff":
        template = "patient/not_found.html"
    # People get words, not an HTTP reason phrase (issue 20, item 11: a patient saw "Bad request").
    title = {400: "That did not work"}.get(code) or _TITLES.get(code, "Error")
    body = render_template(template, code=code, title=title, message=message)
    response = make_response(body, code)
    if code == 429 and g.get("retry_after"):
        response.headers["Retry-After"] = str(g.retry_after)
    return response


__all__ = ["create_app", "get_site"]
