"""DICOMweb (PS3.18) on its own port: QIDO-RS, WADO-RS, STOW-RS under ``/dicom-web`` and WADO-URI at ``/wado``.

A thin layer: each view checks the caller (:mod:`webui.credentials`), parses the request, calls
:class:`appliance.site.dicomweb.DicomWeb` once and writes the answer; every access is audited. Errors are RFC 9457
problem details. What is and is not supported is listed in docs/dicomweb.md (the conformance statement).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import mmap
import os
import stat
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request, stream_with_context
from pydicom.uid import UID, ExplicitVRLittleEndian
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from appliance import codecs
from appliance.errors import ApplianceError, CodecError, InvalidValue, NotFound
from appliance.site.dicomweb import StowResult, check_uid, parse_search
from appliance.site.imaging import Window
from appliance.site.service import Site
from appliance.site.tokens import load_or_create_key
from webui.credentials import Principal, Refused, audit, authenticate
from webui.dicomweb import multipart
from webui.dicomweb.xml import to_xml
from webui.extensions import WebContext, get_site
from webui.problem import problem
from webui.security import RateLimiter, StaffSessionInterface
from webui.server import SEND_PARTS, FilePart, SendParts

LOGGER = logging.getLogger(__name__)

bp = Blueprint("dicomweb", __name__)
PREFIX = "/dicom-web"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
#: Media types of frames per transfer syntax (PS3.18 Table 8.7.3-5), and the default syntax of each type.
FRAME_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
FRAME_DEFAULT = {
    "application/octet-stream": str(ExplicitVRLittleEndian),
    "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
}
_NATIVE_TS = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}


def create_dicomweb_app(site: Site, overrides: Mapping[str, Any] | None = None) -> Flask:
    """The DICOMweb app on the same core, users and patient tokens as the web site.

    Parameters
    ----------
    site : Site
        The web site's core facade (shared with the web app: one audit writer, one token table).
    overrides : mapping, optional
        Flask settings to apply last (tests set ``TESTING``).

    Returns
    -------
    Flask
        The app: ``/dicom-web/...`` and ``/wado``.
    """
    cfg = site.config
    web = cfg.web
    app = Flask(__name__)
    app.config.update(
        # The web site's key: its staff session and patient cookies are read here too.
        SECRET_KEY=load_or_create_key(cfg.data_dir / "secrets" / "web.key"),
        SESSION_COOKIE_NAME="appliance_staff",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        MAX_CONTENT_LENGTH=cfg.dicomweb.max_upload_mb * 1024 * 1024,
        STAFF_SESSION_SECONDS=web.session_minutes * 60,
        PATIENT_SESSION_SECONDS=web.patient_session_minutes * 60,
        APPLIANCE_HTTPS=bool(cfg.tls.cert),
    )
    if overrides:
        app.config.update(overrides)
    app.session_interface = StaffSessionInterface()
    app.extensions["appliance"] = WebContext(
        site, RateLimiter(web.rate_limit, web.rate_window), RateLimiter(web.rate_limit, web.rate_window)
    )
    app.register_blueprint(bp)
    app.after_request(_headers)

    @app.errorhandler(Refused)
    def _refused(exc: Refused) -> Response:
        response = problem(exc.status, exc.reason)
        if exc.retry_after:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        custom = exc.description if exc.description != type(exc).description else ""
        if exc.code == 413:
            custom = f"the request body is larger than [dicomweb] max_upload_mb ({cfg.dicomweb.max_upload_mb} MB)"
        return problem(exc.code or 500, custom or (exc.name or "error").lower())

    @app.errorhandler(ApplianceError)
    def _appliance(exc: ApplianceError) -> Response:
        if isinstance(exc, NotFound):
            return problem(404, str(exc) or "not found")
        if isinstance(exc, InvalidValue):
            return problem(400, str(exc))
        if isinstance(exc, CodecError):
            return problem(406, str(exc))
        LOGGER.exception("DICOMweb %s %s failed", request.method, request.path)
        return problem(500, "the request failed; the log has the reason")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        LOGGER.exception("DICOMweb %s %s failed", request.method, request.path)
        return problem(500, "the request failed; the log has the reason")

    return app


def _headers(response: Response) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Cache-Control", "no-store")
    origin = request.headers.get("Origin")
    if origin and _same_host(origin):
        # The patient viewer and staff pages of the web site (same host, other port) may read the answers.
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Accept, Content-Type"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Vary"] = "Origin"
    if current_app.config.get("APPLIANCE_HTTPS"):
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    return response


def _same_host(origin: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(origin).hostname or ""
    return host == (request.host.rsplit(":", 1)[0].strip("[]") if request.host else "")


def base_url() -> str:
    """``scheme://host:port/dicom-web`` of this request (RetrieveURLs and BulkDataURIs start with it).

    Some clients (dicomweb-client among them) send a Host header without the port: the port the request came
    in on is added then, so that the URLs work.
    """
    host = request.host
    port = str(request.environ.get("SERVER_PORT", ""))
    default = "443" if request.scheme == "https" else "80"
    if not host.rsplit("]", 1)[-1].count(":") and port and port != default:
        host = f"{host}:{port}"
    return f"{request.scheme}://{host}{PREFIX}"


def _study_allowed(principal: Principal, study_uid: str) -> None:
    if not principal.may_read(study_uid):
        # A patient learns nothing about other studies: the same answer as for one that is not stored.
        raise NotFound(f"no study {study_uid} is stored here")


# -- QIDO-RS ---------------------------------------------------------------------------------------


def _search_format() -> str:
    """``json`` or ``xml`` from the Accept header (406 for anything else)."""
    for media in multipart.parse_accept(request.headers.get("Accept")):
        kind = media.media_type
        if kind in ("*/*", "application/*", "application/json", DICOM_JSON):
            return "json"
        if kind == DICOM_XML or (kind == "multipart/related" and media.get("type") == DICOM_XML):
            return "xml"
    raise HTTPException(response=problem(406, f'searches answer {DICOM_JSON} or multipart/related; type="{DICOM_XML}"'))


def _search(resource: str, study: str | None = None, series: str | None = None) -> Response:
    principal = authenticate()
    if not principal.may_search and (study is None or not principal.may_read(study)):
        raise Refused(403, "a patient token may search only within its own study (/studies/{study}/...)")
    fmt = _search_format()
    search = parse_search(
        resource, request.args.items(multi=True), get_site().config.dicomweb.max_results, study, series
    )
    answers = list(get_site().dicomweb.search(search, base_url()))
    audit(
        "dicomweb.search",
        study_uid=study or "",
        detail=f"{request.path}?{request.query_string.decode('latin-1', 'replace')}: {len(answers)} match(es)",
    )
    if fmt == "xml":
        boundary = multipart.new_boundary()
        body = multipart.write(((DICOM_XML, to_xml(a)) for a in answers), boundary)
        response = Response(b"".join(body), content_type=f'multipart/related; type="{DICOM_XML}"; boundary={boundary}')
    else:
        response = Response(json.dumps(answers, separators=(",", ":")), mimetype=DICOM_JSON)
    if "fuzzymatching" in search.ignored:
        response.headers["Warning"] = (
            '299 appliance "The fuzzymatching parameter is not supported. Only literal matching has been performed."'
        )
    return response


@bp.get(f"{PREFIX}/studies")
def search_studies() -> Response:
    """QIDO-RS: studies."""
    return _search("studies")


@bp.get(f"{PREFIX}/series")
def search_all_series() -> Response:
    """QIDO-RS: series of any study."""
    return _search("series")


@bp.get(f"{PREFIX}/instances")
def search_all_instances() -> Response:
    """QIDO-RS: instances of any study."""
    return _search("instances")


@bp.get(f"{PREFIX}/studies/<study>/series")
def search_series(study: str) -> Response:
    """QIDO-RS: series of a study."""
    return _search("series", study)


@bp.get(f"{PREFIX}/studies/<study>/instances")
def search_study_instances(study: str) -> Response:
    """QIDO-RS: instances of a study."""
    return _search("instances", study)


@bp.get(f"{PREFIX}/studies/<study>/series/<series>/instances")
def search_instances(study: str, series: str) -> Response:
    """QIDO-RS: instances of a series."""
    return _search("instances", study, series)


# -- WADO-RS: instances ------------------------------------------------------------------------------


def _instance_syntax() -> str | None:
    """The transfer syntax asked for instances: a UID, or None for "as stored" (``transfer-syntax=*``).

    :raise 406: no acceptable media type.
    """
    for media in multipart.parse_accept(request.headers.get("Accept")):
        kind = media.media_type
        if kind in ("*/*", "multipart/*"):
            return str(ExplicitVRLittleEndian)
        if kind == "multipart/related" and media.get("type", "application/dicom") in ("application/dicom", "*/*"):
            ts = media.get("transfer-syntax", str(ExplicitVRLittleEndian))
            if ts == "*":
                return None
            check_uid(ts, "transfer-syntax")
            if not UID(ts).is_transfer_syntax:
                raise HTTPException(response=problem(406, f"transfer-syntax {ts} is not a transfer syntax"))
            return ts
    raise HTTPException(
        response=problem(
            406, 'instances are sent as multipart/related; type="application/dicom"[; transfer-syntax=UID or *]'
        )
    )


def _retrieve(study: str, series: str | None = None, sop: str | None = None) -> Response:
    principal = authenticate()
    _study_allowed(principal, study)
    target = _instance_syntax()
    site = get_site()
    instances = site.dicomweb.instances(study, series, sop)
    if target is not None:
        refused = [i for i in instances if not codecs.can_convert(i.transfer_syntax, target)]
        if refused:
            raise HTTPException(
                response=problem(
                    406,
                    f"{len(refused)} instance(s) cannot be sent in {UID(target).name} (stored in "
                    f"{UID(refused[0].transfer_syntax).name}); ask for transfer-syntax=* to get them as stored",
                )
            )
    audit("dicomweb.retrieve", study_uid=study, detail=f"{request.path}: {len(instances)} instance(s)")
    boundary = multipart.new_boundary()
    dicomweb = site.dicomweb

    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    if target is None:
        # As stored: every part's size is known from the index, so the length is sent and no chunked encoding
        # is needed. A file that changed size since it was indexed ends the response early (the client sees a
        # short body rather than a wrong one).
        types = [(f"application/dicom; transfer-syntax={i.transfer_syntax}", i.size) for i in instances]
        send: SendParts | None = request.environ.get(SEND_PARTS)
        if send is not None:
            # Under our server the files go from the page cache to the socket (os.sendfile), one at a time.
            body: list[bytes | FilePart] = []
            for instance, (ctype, size) in zip(instances, types, strict=True):
                body += [
                    multipart.part_head(ctype, size, boundary),
                    FilePart(str(dicomweb.path(instance)), size),
                    b"\r\n",
                ]
            body.append(multipart.closing(boundary))

            def files() -> Iterator[bytes]:
                send(body)
                yield from ()

            response = Response(files(), content_type=content_type)
            response.headers["Content-Length"] = str(multipart.body_length(types, boundary))
            return response

        def stored() -> Iterator[bytes]:
            for instance, (ctype, size) in zip(instances, types, strict=True):
                data = dicomweb.read(instance)
                if len(data) != size:
                    LOGGER.error(
                        "WADO-RS: %s is %d bytes on disk, %d in the index: response ended",
                        instance.sop_uid,
                        len(data),
                        size,
                    )
                    raise CodecError(f"stored file of {instance.sop_uid} changed size")
                yield multipart.part_head(ctype, size, boundary) + data + b"\r\n"
            yield multipart.closing(boundary)

        response = Response(stream_with_context(stored()), content_type=content_type)
        response.headers["Content-Length"] = str(multipart.body_length(types, boundary))
        return response

    def parts() -> Iterator[tuple[str, bytes]]:
        for instance in instances:
            try:
                syntax, data = dicomweb.part10(instance, target)
            except CodecError as exc:
                # The status line is sent: the instance is left out and the log says why.
                LOGGER.error("WADO-RS: instance %s left out: %s", instance.sop_uid, exc)
                continue
            yield f"application/dicom; transfer-syntax={syntax}", data

    return Response(stream_with_context(multipart.write(parts(), boundary)), content_type=content_type)


@bp.get(f"{PREFIX}/studies/<study>")
def retrieve_study(study: str) -> Response:
    """WADO-RS: every instance of a study."""
    return _retrieve(study)


@bp.get(f"{PREFIX}/studies/<study>/series/<series>")
def retrieve_series(study: str, series: str) -> Response:
    """WADO-RS: every instance of a series."""
    return _retrieve(study, series)


@bp.get(f"{PREFIX}/studies/<study>/series/<series>/instances/<sop>")
def retrieve_instance(study: str, series: str, sop: str) -> Response:
    """WADO-RS: one instance."""
    return _retrieve(study, series, sop)


# -- WADO-RS: metadata -----------------------------------------------------------------------------


def _metadata(study: str, series: str | None = None, sop: str | None = None) -> Response:
    principal = authenticate()
    _study_allowed(principal, study)
    fmt = _search_format()
    site = get_site()
    instances = site.dicomweb.instances(study, series, sop)
    base = base_url()
    answers = [site.dicomweb.metadata(i, base) for i in instances]
    audit("dicomweb.metadata", study_uid=study, detail=f"{request.path}: {len(answers)} instance(s)")
    if fmt == "xml":
        boundary = multipart.new_boundary()
        return Response(
            b"".join(multipart.write(((DICOM_XML, to_xml(a)) for a in answers), boundary)),
            content_type=f'multipart/related; type="{DICOM_XML}"; boundary={boundary}',
        )
    return Response(json.dumps(answers, separators=(",", ":")), mimetype=DICOM_JSON)


@bp.get(f"{PREFIX}/studies/<study>/metadata")
def study_metadata(study: str) -> Response:
    """WADO-RS: metadata of every instance of a study."""
    return _metadata(study)


@bp.get(f"{PREFIX}/studies/<study>/series/<series>/metadata")
def series_metadata(study: str, series: str) -> Response:
    """WADO-RS: metadata of every instance of a series."""
    return _metadata(study, series)


@bp.get(f"{PREFIX}/studies/<study>/series/<series>/instances/<sop>/metadata")
def instance_metadata(study: str, series: str, sop: str) -> Response:
    """WADO-RS: metadata of one instance."""
    return _metadata(study, series, sop)


# -- WADO-RS: frames and bulk data -----------------------------------------------------------------


def _frame_syntax(stored: str) -> str | None:
    """The syntax asked for frames (None: as stored).

    :raise 406: no acceptable media type.
    """
    for media in multipart.parse_accept(request.headers.get("Accept")):
        kind = media.media_type
        if kind in ("*/*", "multipart/*"):
            return None if stored not in _NATIVE_TS else str(ExplicitVRLittleEndian)
        if kind != "multipart/related":
            continue
        part = media.get("type", "application/octet-stream")
        ts = media.get("transfer-syntax", "")
        if ts == "*":
            return None
        if part in ("*/*", "image/*"):
            return ts or (None if stored not in _NATIVE_TS else str(ExplicitVRLittleEndian))
        if part not in FRAME_DEFAULT:
            continue
        ts = ts or FRAME_DEFAULT[part]
        check_uid(ts, "transfer-syntax")
        if part == "application/octet-stream" and ts not in _NATIVE_TS:
            continue
        if part != "application/octet-stream" and FRAME_MEDIA.get(ts) != part:
            continue
        return ts
    raise HTTPException(
        response=problem(
            406,
            "frames are sent as multipart/related; type=application/octet-stream "
            "(native), image/jpeg, image/jls, image/jp2 or image/dicom-rle, with "
            "an optional transfer-syntax (UID or *)",
        )
    )


def _frame_numbers(text: str) -> list[int]:
    numbers = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise InvalidValue(f"frame numbers are whole numbers from 1, separated by commas; not {part[:20]!r}")
        numbers.append(int(part))
    if len(numbers) > 10000:
        raise InvalidValue("at most 10000 frames per request")
    return numbers


@bp.get(f"{PREFIX}/studies/<study>/series/<series>/instances/<sop>/frames/<frame_list>")
def frames(study: str, series: str, sop: str, frame_list: str) -> Response:
    """WADO-RS: frames of one instance, as stored or in the syntax asked for."""
    principal = authenticate()
    _study_allowed(principal, study)
    numbers = _frame_numbers(frame_list)
    site = get_site()
    instance = site.dicomweb.instances(study, series, sop)[0]
    target = _frame_syntax(instance.transfer_syntax)
    if target is not None and not codecs.can_convert(instance.transfer_syntax, target):
        raise HTTPException(
            response=problem(
                406, f"the frames cannot be sent in {UID(target).name} (stored in {UID(instance.transfer_syntax).name})"
            )
        )
    try:
        syntax, data = site.dicomweb.frames(instance, numbers, target)
    except CodecError as exc:
        status = 404 if "out of range" in str(exc) or "no pixel data" in str(exc) else 406
        raise HTTPException(response=problem(status, str(exc))) from None
    audit("dicomweb.frames", study_uid=study, detail=f"{request.path}")
    media = FRAME_MEDIA.get(syntax, "application/octet-stream")
    boundary = multipart.new_boundary()
    body = b"".join(multipart.write(((f"{media}; transfer-syntax={syntax}", f) for f in data), boundary))
    return Response(body, content_type=f'multipart/related; type="{media}"; boundary={boundary}')


@bp.get(f"{PREFIX}/studies/<study>/series/<series>/instances/<sop>/bulkdata/<tag>")
def bulkdata(study: str, series: str, sop: str, tag: str) -> Response:
    """WADO-RS: a bulk data value named by a BulkDataURI of the metadata (pixel data: every frame)."""
    principal = authenticate()
    _study_allowed(principal, study)
    site = get_site()
    instance = site.dicomweb.instances(study, series, sop)[0]
    boundary = multipart.new_boundary()
    if tag.upper() == "7FE00010":
        data = site.dicomweb.read(instance)
        try:
            count = _frame_count(data, instance.transfer_syntax)
            syntax, values = codecs.frames(data, range(1, count + 1))
        except CodecError as exc:
            raise HTTPException(response=problem(404, str(exc))) from None
        media = FRAME_MEDIA.get(syntax, "application/octet-stream")
        parts = [(f"{media}; transfer-syntax={syntax}", v) for v in values]
    else:
        media = "application/octet-stream"
        parts = [(media, site.dicomweb.bulkdata(instance, tag))]
    audit("dicomweb.bulkdata", study_uid=study, detail=request.path)
    body = b"".join(multipart.write(parts, boundary))
    return Response(body, content_type=f'multipart/related; type="{media}"; boundary={boundary}')


def _frame_count(data: bytes, syntax: str) -> int:
    try:
        ds = codecs.as_dataset(memoryview(data)[codecs.dataset_offset(data) :], syntax)
        return int(ds.get("NumberOfFrames") or 1)
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError(f"stored file cannot be parsed: {exc}") from exc


# -- rendered and thumbnails -----------------------------------------------------------------------


def _window(center: str | None, width: str | None) -> Window | None:
    if center is None and width is None:
        return None
    try:
        window = Window(float(center or ""), float(width or ""))
    except ValueError:
        raise InvalidValue("the window needs a centre and a width, as numbers") from None
    if window.width <= 0:
        raise InvalidValue("the window width must be above 0")
    return window


def _image_format() -> str:
    for media in multipart.parse_accept(request.headers.get("Accept")):
        if media.media_type in ("*/*", "image/*", "image/jpeg"):
            return "jpeg"
        if media.media_type == "image/png":
            return "png"
    raise HTTPException(response=problem(406, "rendered images are image/jpeg or image/png"))


def _size(viewport: str | None, default: int) -> int:
    if not viewport:
        return default
    try:
        sizes = [int(v) for v in viewport.split(",")[:2] if v.strip()]
    except ValueError:
        raise InvalidValue("viewport is width,height in pixels") from None
    if not sizes or min(sizes) < 1:
        raise InvalidValue("viewport is width,height in pixels")
    return max(16, min(max(sizes), 4096))


def _rendered(study: str, series: str, sop: str, frame: int, thumbnail: bool = False) -> Response:
    principal = authenticate()
    _study_allowed(principal, study)
    fmt = _image_format()
    if "window" in request.args:
        values = request.args["window"].split(",")
        window = _window(values[0], values[1] if len(values) > 1 else None)
    else:
        window = None
    size = _size(request.args.get("viewport"), 128 if thumbnail else 4096)
    site = get_site()
    instance = site.dicomweb.instances(study, series, sop)[0]
    data = site.dicomweb.rendered(instance, frame, window, size, fmt)
    audit("dicomweb.rendered", study_uid=study, detail=request.path)
    return Response(data, mimetype=f"image/{fmt}")


@bp.get(f"{PREFIX}/studies/<study>/series/<series>/instances/<sop>/rendered")
def instance_rendered(study: str, series: str, sop: str) -> Response:
    """WADO-RS: an instance's first frame as JPEG or PNG (``window=center,width``, ``viewport=w,h``)."""
    return _rendered(study, series, sop, 1)


@bp.get(f"{PREFIX}/studies/<study>/series/<series>/instances/<sop>/frames/<int:frame>/rendered")
def frame_rendered(study: str, series: str, sop: str, frame: int) -> Response:
    """WADO-RS: one frame as JPEG or PNG."""
    return _rendered(study, series, sop, frame)


@bp.get(f"{PREFIX}/studies/<study>/series/<series>/instances/<sop>/thumbnail")
def instance_thumbnail(study: str, series: str, sop: str) -> Response:
    """WADO-RS: a small picture of an instance."""
    return _rendered(study, series, sop, 1, thumbnail=True)


@bp.get(f"{PREFIX}/studies/<study>/series/<series>/thumbnail")
def series_thumbnail(study: str, series: str) -> Response:
    """WADO-RS: the series' thumbnail of the web site (its middle instance)."""
    principal = authenticate()
    _study_allowed(principal, study)
    _image_format()
    check_uid(study, "Study Instance UID")
    check_uid(series, "Series Instance UID")
    data = get_site().pictures.series_thumbnail(series, study)
    audit("dicomweb.rendered", study_uid=study, detail=request.path)
    return Response(data, mimetype="image/jpeg")


@bp.get(f"{PREFIX}/studies/<study>/thumbnail")
def study_thumbnail(study: str) -> Response:
    """WADO-RS: the thumbnail of the study's first series."""
    principal = authenticate()
    _study_allowed(principal, study)
    _image_format()
    first = get_site().dicomweb.instances(study)[0]
    data = get_site().pictures.series_thumbnail(first.series_uid, study)
    audit("dicomweb.rendered", study_uid=study, detail=request.path)
    return Response(data, mimetype="image/jpeg")


# -- STOW-RS ---------------------------------------------------------------------------------------


def _stow(study: str | None) -> Response:
    principal = authenticate()
    if not principal.may_store:
        raise Refused(403, "a patient token cannot store instances")
    if study is not None:
        check_uid(study, "Study Instance UID")
    content = multipart.parse_media_type(request.headers.get("Content-Type", ""))
    if content.media_type != "multipart/related":
        raise HTTPException(
            response=problem(
                415,
                'STOW-RS takes multipart/related; type="application/dicom" '
                f"(not {content.media_type or 'no Content-Type'})",
            )
        )
    if content.get("type", "application/dicom") != "application/dicom":
        raise HTTPException(
            response=problem(
                415,
                f'only Part 10 files are stored (type="application/dicom"); '
                f"type={content.get('type')!r} is not supported",
            )
        )
    fmt = _search_format()
    body = _request_body()
    try:
        result = _store_parts(body, content.get("boundary"), study)
    finally:
        if isinstance(body, mmap.mmap):
            with contextlib.suppress(BufferError):  # a view still held: unmapped when it is collected
                body.close()
    for failure in result.failed:
        LOGGER.info("STOW-RS from %s: %s", g.principal.actor, failure.text)
    audit(
        "dicomweb.store",
        study_uid=study or next((s.study_uid for s in result.stored), ""),
        detail=f"{len(result.stored)} stored, {len(result.failed)} failed"
        + (f": {result.failed[0].text}" if result.failed else ""),
        outcome="success" if not result.failed else "failure",
    )
    answer = result.response(base_url(), study)
    if fmt == "xml":
        return Response(to_xml(answer), status=result.status, mimetype=DICOM_XML)
    return Response(json.dumps(answer), status=result.status, mimetype=DICOM_JSON)


def _request_body() -> bytes | mmap.mmap:
    """The request body: mapped from the file the server spooled it to (no copy of a 50 MB body in memory), or
    read.

    waitress writes a large body to a temporary file as it arrives; its ``wsgi.input`` is that file.

    :raise 413: a body over ``[dicomweb] max_upload_mb``.
    """
    length = request.content_length
    limit = request.max_content_length
    if length is not None and limit is not None and length > limit:
        raise RequestEntityTooLarge()
    stream = request.environ.get("wsgi.input")
    if length and stream is not None:
        try:
            info = os.fstat(stream.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size == length:
                return mmap.mmap(stream.fileno(), length, prot=mmap.PROT_READ)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            pass  # not a file (a small body in memory, a test client's stream): read it
    return request.get_data(cache=False)


def _store_parts(body: bytes | mmap.mmap, boundary: str, study: str | None) -> StowResult:
    """Parse a STOW-RS body and store its parts (the parts are views of ``body``, released on return)."""
    try:
        parts = multipart.parse(body, boundary)
    except multipart.MultipartError as exc:
        audit("dicomweb.store", study_uid=study or "", detail=f"malformed body: {exc}", outcome="failure")
        raise InvalidValue(f"malformed multipart body: {exc}") from None
    if not parts:
        raise InvalidValue("the multipart body has no parts")
    bodies: list[bytes | memoryview] = []
    for headers, data in parts:
        kind = multipart.parse_media_type(headers.get("content-type", "application/dicom")).media_type
        # A part of another type is stored as nothing: reported as not a DICOM file.
        bodies.append(data if kind == "application/dicom" else b"")
    try:
        return get_site().dicomweb.store(bodies, study, base_url(), "DICOMWEB")
    finally:
        for _, view in parts:
            view.release()


@bp.post(f"{PREFIX}/studies")
def stow() -> Response:
    """STOW-RS: store Part 10 files."""
    return _stow(None)


@bp.post(f"{PREFIX}/studies/<study>")
def stow_study(study: str) -> Response:
    """STOW-RS: store Part 10 files of one study (instances of other studies are refused)."""
    return _stow(study)


# -- WADO-URI --------------------------------------------------------------------------------------


@bp.get("/wado")
@bp.get(f"{PREFIX}/wado")
def wado_uri() -> Response:
    """WADO-URI (PS3.18 9): one instance as DICOM, JPEG or PNG.

    Parameters: ``requestType=WADO``, ``studyUID``, ``seriesUID``, ``objectUID``; optional ``contentType``
    (``application/dicom``, ``image/jpeg`` (default), ``image/png``), ``transferSyntax``, ``frameNumber``,
    ``windowCenter``/``windowWidth``, ``rows``/``columns``.
    """
    principal = authenticate()
    args = request.args
    if args.get("requestType") != "WADO":
        raise InvalidValue("requestType must be WADO")
    missing = [k for k in ("studyUID", "seriesUID", "objectUID") if not args.get(k)]
    if missing:
        raise InvalidValue(f"missing {', '.join(missing)}")
    study, series, sop = args["studyUID"], args["seriesUID"], args["objectUID"]
    _study_allowed(principal, study)
    site = get_site()
    instance = site.dicomweb.instances(study, series, sop)[0]
    content = args.get("contentType", "image/jpeg").split(",")[0].strip()
    if content == "application/dicom":
        target = args.get("transferSyntax") or None
        if target is not None:
            check_uid(target, "transferSyntax")
            if not codecs.can_convert(instance.transfer_syntax, target):
                raise HTTPException(response=problem(406, f"the instance cannot be sent in {UID(target).name}"))
        _, data = site.dicomweb.part10(instance, target)
        audit("dicomweb.wado", study_uid=study, detail=f"WADO-URI {sop} as DICOM")
        return Response(
            data, mimetype="application/dicom", headers={"Content-Disposition": f'attachment; filename="{sop}.dcm"'}
        )
    if content not in ("image/jpeg", "image/png"):
        raise HTTPException(
            response=problem(
                406, f"contentType {content!r} is not supported: application/dicom, image/jpeg or image/png"
            )
        )
    frame = args.get("frameNumber", "1")
    if not frame.isdigit() or int(frame) < 1:
        raise InvalidValue("frameNumber is a whole number from 1")
    window = _window(args.get("windowCenter"), args.get("windowWidth"))
    size = 4096
    for key in ("rows", "columns"):
        if args.get(key):
            if not args[key].isdigit() or int(args[key]) < 1:
                raise InvalidValue(f"{key} is a whole number of pixels")
            size = min(size, int(args[key]))
    data = site.dicomweb.rendered(instance, int(frame), window, size, content.split("/")[1])
    audit("dicomweb.wado", study_uid=study, detail=f"WADO-URI {sop} as {content}")
    return Response(data, mimetype=content)
