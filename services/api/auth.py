"""Bearer-token authentication and role checks, before any view runs.

Every endpoint but ``/healthz`` (and the UI's sign-in page) needs a live token.
Reads need ``read``; creating intents and starting runs ``submit``; approving,
rejecting and cancelling ``decide``. Safe (GET) requests may also carry the token
in the UI's HttpOnly, SameSite=Strict cookie; a state change needs the header, so
a cross-site form can never act for a signed-in browser.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Flask, Response, g, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from shared.errors import Forbidden, Unauthorized
from shared.service.tokens import Permission, Principal, authenticate

from .state import api

COOKIE = "kodo_token"
PUBLIC_ENDPOINTS = frozenset({"health.healthz", "ui_login.login_page", "ui_login.login"})
DECIDE_ENDPOINTS = frozenset({"runs.approve_plan", "runs.reject_plan", "runs.cancel"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def required_permission(endpoint: str, method: str) -> Permission | None:
    """What a request needs; None for the public endpoints."""
    if endpoint in PUBLIC_ENDPOINTS:
        return None
    if method in SAFE_METHODS:
        return Permission.READ
    return Permission.DECIDE if endpoint in DECIDE_ENDPOINTS else Permission.SUBMIT


def _presented_token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("use `Authorization: Bearer <token>`")
        return value.strip()
    if request.method in SAFE_METHODS:
        return request.cookies.get(COOKIE)
    return None


def _check() -> BaseResponse | None:
    if request.endpoint is None:
        return None  # no route: the 404/405 handler answers, revealing nothing
    needed = required_permission(request.endpoint, request.method)
    if needed is None:
        return None
    token = _presented_token()
    if token is None and request.method in SAFE_METHODS and request.path.startswith("/ui/"):
        return redirect(f"/ui/login?next={quote(request.full_path.rstrip('?'))}", code=303)
    if token is None:
        raise Unauthorized("a bearer token is required (kodo token create NAME --role ROLE)")
    with api().sessions() as s:
        principal = authenticate(s, token)
    if principal is None:
        raise Unauthorized("unknown or revoked token")
    if not principal.may(needed):
        raise Forbidden(f"{principal.name} ({principal.role.value}) may not {needed.value}")
    g.principal = principal
    return None


def current_principal() -> Principal:
    found = g.get("principal")
    if not isinstance(found, Principal):  # pragma: no cover - _check runs first
        raise Unauthorized("not authenticated")
    return found


def _challenge(response: Response) -> Response:
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="kodo"'
    return response


def install_auth(app: Flask) -> None:
    app.before_request(_check)
    app.after_request(_challenge)
