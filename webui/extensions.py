"""Access to the core from a request: the :class:`~appliance.site.service.Site` and the per-process helpers."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, request

from appliance.site.service import Site
from webui.security import RateLimiter


@dataclass
class WebContext:
    """What ``create_app`` attaches to the Flask app (``app.extensions["appliance"]``)."""

    site: Site
    #: Wrong patient links, per client address.
    link_limiter: RateLimiter
    #: Failed staff sign-ins, per account, per address and per trusted device (keys ``user:``, ``addr:``,
    #: ``device:``); separate from the links' so that neither purpose can use up the other's allowance.
    login_limiter: RateLimiter


def get_context() -> WebContext:
    """The web context of the current app."""
    context: WebContext = current_app.extensions["appliance"]
    return context


def get_site() -> Site:
    """The core's web facade for the current app."""
    return get_context().site


def client_address() -> str:
    """The client's address as the WSGI server saw it (no proxy headers are trusted)."""
    return request.remote_addr or ""


def user_agent() -> str:
    """The client's User-Agent header, cut to 200 characters."""
    return (request.headers.get("User-Agent") or "")[:200]
