"""Who is calling DICOMweb or the JSON API: API key, master cookie, staff session or patient token.

Checked in this order, and the first credential present decides (a wrong one is refused, never skipped):

1. ``Authorization: Bearer <secret>``: an API key (``apk_...``, see :mod:`appliance.site.apikeys`), else a
   patient token (read access to its own study only);
2. the cookie ``master_cookie``: accepted only from the hosts of ``[api] master_cookie_hosts`` (any host when
   the list is empty);
3. the staff session cookie of the web site (same users and roles; idle sessions end as on the staff pages);
4. the patient session cookie of the token site (read access to its study only).

Failed secrets count against the client address like wrong patient links (``[web] rate_limit``), and every
refusal is audited.
"""

from __future__ import annotations

import functools
import socket
import time
from dataclasses import dataclass

from flask import current_app, g, request, session
from werkzeug.exceptions import HTTPException

from appliance.site.apikeys import KEY_PREFIX
from webui.extensions import client_address, get_context, get_site, user_agent

MASTER_COOKIE = "master_cookie"


class Refused(Exception):
    """A request without usable credentials: the HTTP status and why (shown to the client)."""

    def __init__(self, status: int, reason: str, retry_after: int = 0) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class Principal:
    """The caller of a request."""

    kind: str  # staff | apikey | master | patient
    name: str
    role: str  # admin | frontdesk | patient
    study_uid: str = ""
    token_id: int | None = None

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        return {"staff": self.name, "apikey": f"apikey:{self.name}", "master": "master-cookie", "patient": "patient"}[
            self.kind
        ]

    def may_read(self, study_uid: str) -> bool:
        """Whether the caller may see this study (a patient only their own)."""
        return self.kind != "patient" or study_uid == self.study_uid

    @property
    def may_search(self) -> bool:
        """Whether the caller may search across studies (everyone but patients)."""
        return self.kind != "patient"

    @property
    def may_store(self) -> bool:
        """Whether the caller may store (STOW-RS): staff roles, keys and the master cookie, not patients."""
        return self.kind != "patient"

    @property
    def is_admin(self) -> bool:
        """Whether the caller holds the admin role."""
        return self.role == "admin"


@functools.lru_cache(maxsize=64)
def _addresses(host: str, stamp: int) -> frozenset[str]:
    """The addresses of a configured host (resolved at most once a minute: ``stamp``)."""
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None))
    except OSError:
        return frozenset({host})


def master_host_allowed(address: str) -> bool:
    """Whether ``address`` is among ``[api] master_cookie_hosts`` (always, when the list is empty)."""
    hosts = get_site().config.api.master_cookie_hosts
    if not hosts:
        return True
    stamp = int(time.monotonic() // 60)
    return any(address == host or address in _addresses(host, stamp) for host in hosts)


def _fail(reason: str, status: int = 401, detail: str = "") -> Refused:
    context = get_context()
    address = client_address()
    context.link_limiter.fail(address)
    audit("access.refused", detail=detail or reason, outcome="failure")
    return Refused(status, reason)


def authenticate() -> Principal:
    """The caller of this request (kept in ``g.principal``).

    Raises
    ------
    Refused
        401 without credentials or with a wrong, expired or revoked one; 403 for the master cookie from a host
        not allowed; 429 when this address failed too often.
    """
    cached = g.get("principal")
    if cached is not None:
        return cached
    context = get_context()
    site = context.site
    address = client_address()
    authorization = request.headers.get("Authorization", "")
    master = request.cookies.get(MASTER_COOKIE)
    if (authorization or master) and context.link_limiter.blocked(address):
        retry = context.link_limiter.retry_after(address)
        audit("access.refused", detail="rate limited", outcome="failure")
        raise Refused(429, "too many failed credentials from this address; try again later", retry)
    principal: Principal | None = None
    if authorization:
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise _fail("the Authorization header must be 'Bearer <API key or patient token>'")
        if secret.startswith(KEY_PREFIX):
            check = site.apikeys.check(secret)
            if check.key is None:
                raise _fail("the API key is not known")
            if check.refusal:
                raise _fail(f"the API key {check.key.name!r} is {check.refusal}", detail=check.key.name)
            principal = Principal("apikey", check.key.name, check.key.role)
            _note_use(check.key.id)
        else:
            info = site.tokens.resolve(secret)
            if info is None:
                raise _fail("the bearer token is not a valid API key or patient token (unknown, expired or revoked)")
            principal = Principal("patient", "patient", "patient", info.study_uid, info.id)
    elif master is not None:
        check = site.apikeys.check(master, kind="master")
        if check.key is None or check.refusal:
            raise _fail("the master cookie is not valid (unknown or replaced)")
        if not master_host_allowed(address):
            raise _fail(
                f"the master cookie is not accepted from {address}: the host is not in [api] master_cookie_hosts",
                status=403,
            )
        principal = Principal("master", "master-cookie", "admin")
    else:
        principal = _staff() or _patient()
    if principal is None:
        raise Refused(
            401,
            "credentials are required: a staff session, an API key or patient token "
            "(Authorization: Bearer), or the master cookie",
        )
    g.principal = principal
    return principal


_LAST_USE: dict[int, float] = {}


def _note_use(key_id: int) -> None:
    """Record when a key was last used, at most once a minute per key (through the audit writer's batches)."""
    now = time.monotonic()
    if now - _LAST_USE.get(key_id, -120.0) < 60:
        return
    _LAST_USE[key_id] = now
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    get_site().writer.submit("UPDATE api_keys SET last_used = ? WHERE id = ?", (stamp, key_id))


def _staff() -> Principal | None:
    uid = session.get("uid")
    if uid is None:
        return None
    idle = time.time() - float(session.get("seen", 0))
    if idle > current_app.config["STAFF_SESSION_SECONDS"]:
        return None
    try:
        user = get_site().users.get(int(uid))
    except (TypeError, ValueError):
        return None
    # As on the staff pages: a signed-out, disabled or re-passworded user's copied cookie is dead.
    if user is None or user.disabled or session.get("gen") != user.session_gen:
        return None
    return Principal("staff", user.name, user.role)


def _patient() -> Principal | None:
    from webui.patient import COOKIE, get_token

    if not request.cookies.get(COOKIE):
        return None
    try:
        info = get_token()
    except HTTPException:
        return None
    return Principal("patient", "patient", "patient", info.study_uid, info.id)


def audit(action: str, study_uid: str = "", detail: str = "", outcome: str = "success") -> None:
    """Record one DICOMweb or API access in the audit log, as patient-link accesses are."""
    principal: Principal | None = g.get("principal")
    get_site().audit.record(
        action,
        actor=principal.actor if principal else "",
        address=client_address(),
        user_agent=user_agent(),
        study_uid=study_uid,
        token_id=principal.token_id if principal else None,
        detail=detail,
        outcome=outcome,
    )
