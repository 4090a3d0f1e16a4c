"""Security plumbing shared by the blueprints: response headers, CSRF, staff login, rate limiting.

Headers follow the token-site checklist of ``specs/hl7-mwl.md`` (c): a strict Content-Security-Policy
(everything from this server, no inline script), no framing, no referrer (the token must not leak through a
Referer header), ``no-store`` on every dynamic response, ``noindex``, and HSTS when served over HTTPS.
"""

from __future__ import annotations

import functools
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Flask, Response, abort, current_app, g, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

F = TypeVar("F", bound=Callable[..., Any])

CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; object-src 'none';"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def set_headers(response: Response) -> Response:
    """Add the security headers to every response (an ``after_request`` hook)."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Robots-Tag"] = "noindex, nofollow"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.endpoint != "static":
        headers["Cache-Control"] = "no-store"
        headers["Pragma"] = "no-cache"
    if current_app.config.get("APPLIANCE_HTTPS"):
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return response


# -- staff session ---------------------------------------------------------------------------------


class StaffSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with its signing serializer made once per key instead of per request.

    Flask opens the session on every request, patient pages and pictures included, and building the serializer
    was a few percent of the server's time under load. The cookie itself is unchanged.
    """

    def __init__(self) -> None:
        self._cached: tuple[tuple[Any, ...], URLSafeTimedSerializer | None] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        """The serializer of the app's current keys (a new one when a key changes)."""
        keys = (app.secret_key, *(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = self._cached
        if cached is None or cached[0] != keys:
            cached = (keys, super().get_signing_serializer(app))
            self._cached = cached  # one assignment: threads see the old pair or the new one
        return cached[1]


# -- CSRF ------------------------------------------------------------------------------------------


def csrf_token() -> str:
    """This session's CSRF token (made on first use); templates put it in every form."""
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return str(token)


def check_csrf() -> None:
    """Refuse a state-changing request without this session's CSRF token (form field or header).

    :raise 400: the token is missing or wrong.
    """
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf") or ""
    if not expected or not hmac.compare_digest(str(sent), str(expected)):
        abort(400, description="The form has expired or was not sent from this site. Please try again.")


# -- staff login -----------------------------------------------------------------------------------


def login_required(view: F) -> F:
    """Send visitors without a staff session to the login page."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.get("user") is None:
            if request.blueprint == "api":
                abort(401)
            return redirect(url_for("staff.login", next=request.full_path if request.query_string else request.path))
        return view(*args, **kwargs)

    return cast(F, wrapped)


def admin_required(view: F) -> F:
    """Allow only users with the admin role (after :func:`login_required`).

    :raise 403: the user is not an admin.
    """

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        user = g.get("user")
        if user is None:
            return login_required(view)(*args, **kwargs)
        if not user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return cast(F, wrapped)


# -- rate limiting ---------------------------------------------------------------------------------


class RateLimiter:
    """Failed attempts per client address in a sliding window (kept in memory, per process).

    Parameters
    ----------
    limit : int
        Failures allowed within ``window`` seconds; the next attempt is refused until the oldest one ages out.
    window : float
        The window, in seconds.
    clock : callable, optional
        Monotonic seconds (tests pass their own).
    """

    _MAX_ADDRESSES = 10_000

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.get(address)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
        return failures

    def blocked(self, address: str) -> bool:
        """Whether ``address`` has used up its failures for now."""
        with self._lock:
            return len(self._recent(address, self.clock())) >= self.limit

    def retry_after(self, address: str) -> int:
        """Seconds until ``address`` may try again (0 when it may now)."""
        with self._lock:
            now = self.clock()
            failures = self._recent(address, now)
            if len(failures) < self.limit:
                return 0
            return max(1, int(failures[0] + self.window - now + 0.999))

    def fail(self, address: str) -> None:
        """Count a failed attempt from ``address``."""
        with self._lock:
            now = self.clock()
            self._recent(address, now)
            if address not in self._failures and len(self._failures) >= self._MAX_ADDRESSES:
                # Under a flood of addresses keep memory bounded: forget the oldest tenth.
                for stale in list(self._failures)[: self._MAX_ADDRESSES // 10]:
                    del self._failures[stale]
            self._failures.setdefault(address, deque()).append(now)
