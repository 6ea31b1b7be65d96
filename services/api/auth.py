"""Authentication and role checks, before any view runs.

Every endpoint but ``/healthz``, the OpenAPI spec and its viewer (and the UI's sign-in
page) needs a live token.
Reads need ``read``; creating intents and starting runs ``submit``; approving,
rejecting, requesting changes and cancelling ``decide``; retrying a failed run
``operate`` (admins only).

Two ways in: an ``Authorization: Bearer`` header (the JSON API, the CLI), or the web
page's session cookie (an HttpOnly, SameSite=Strict random id; see
``shared.service.ui_sessions``). The cookie authenticates safe (GET) requests and the
UI's own form posts, and each form post must carry the session's CSRF token; the JSON
API's state changes need the header, so a cross-site request can never act for a
signed-in browser. Either way the token is checked live on every request: revoking
it ends its sessions' power at once.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from urllib.parse import quote

from flask import Flask, Response, g, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from shared.errors import Forbidden, Unauthorized
from shared.hashing import sha256_hex
from shared.service.tokens import Permission, Principal, principal_for
from shared.service.ui_sessions import SignedIn, signed_in

from .state import api

SESSION_COOKIE = "kodo_session"
CSRF_FIELD = "csrf_token"
# The spec and its viewer are public: they describe the API, they hold no data.
PUBLIC_ENDPOINTS = frozenset(
    {
        "health.healthz",
        "ui_forms.login_page",
        "ui_forms.login",
        "api-docs.openapi_json",
        "docs.docs_page",
        "docs.docs_asset",
    }
)
# The UI's form posts: a session cookie plus the session's CSRF token, never a header.
FORM_ENDPOINTS = frozenset(
    {
        "ui_forms.approve",
        "ui_forms.reject",
        "ui_forms.request_changes_form",
        "ui_forms.answer_form",
        "ui_forms.budget_form",
        "ui_forms.logout",
    }
)
DECIDE_ENDPOINTS = frozenset(
    {
        "runs.approve_plan",
        "runs.reject_plan",
        "runs.request_changes",
        "runs.answer",
        "runs.set_budget",
        "runs.cancel",
        "ui_forms.approve",
        "ui_forms.reject",
        "ui_forms.request_changes_form",
        "ui_forms.answer_form",
        "ui_forms.budget_form",
    }
)
OPERATE_ENDPOINTS = frozenset({"runs.retry"})
READ_ONLY_POSTS = frozenset({"ui_forms.logout"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def required_permission(endpoint: str, method: str) -> Permission | None:
    """What a request needs; None for the public endpoints."""
    if endpoint in PUBLIC_ENDPOINTS:
        return None
    if method in SAFE_METHODS or endpoint in READ_ONLY_POSTS:
        return Permission.READ
    if endpoint in OPERATE_ENDPOINTS:
        return Permission.OPERATE
    return Permission.DECIDE if endpoint in DECIDE_ENDPOINTS else Permission.SUBMIT


def _header_token() -> str | None:
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("use `Authorization: Bearer <token>`")
    return value.strip()


def _session() -> SignedIn | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    ctx = api()
    with ctx.sessions() as s:
        return signed_in(s, session_id, now=ctx.clock.now())


def _require_csrf(session: SignedIn) -> None:
    presented = request.form.get(CSRF_FIELD, "")
    if not hmac.compare_digest(presented.encode(), session.csrf_token.encode()):
        raise Forbidden(
            "the form's CSRF token is missing or wrong: reload the page and try again",
            details={"rule": ["csrf"]},
        )


def _to_sign_in(after: str) -> BaseResponse:
    """To the sign-in page, then back to ``after`` (a path: never the query string, which
    could carry a secret into a Location header and the logs)."""
    return redirect(f"/ui/login?next={quote(after)}", code=303)


def _check() -> BaseResponse | None:
    if request.endpoint is None:
        return None  # no route: the 404/405 handler answers, revealing nothing
    needed = required_permission(request.endpoint, request.method)
    if needed is None:
        return None
    session: SignedIn | None = None
    principal: Principal | None = None
    if request.endpoint in FORM_ENDPOINTS:
        session = _session()
        if session is None:
            return _to_sign_in(request.path.rsplit("/", 1)[0])  # the page the form was on
        _require_csrf(session)
        principal = session.principal
    else:
        token = _header_token()
        if token is not None:
            with api().single_read() as conn:  # one SELECT: no transaction around it
                principal = principal_for(conn, token)
            if principal is None:
                raise Unauthorized("unknown or revoked token")
        elif request.method in SAFE_METHODS:
            session = _session()
            principal = session.principal if session is not None else None
    if principal is None:
        if request.method in SAFE_METHODS and request.path.startswith("/ui/"):
            return _to_sign_in(request.path)
        raise Unauthorized("a bearer token is required (kodo token create NAME --role ROLE)")
    # Known before the role check: a request its role refuses (403) is a decision the
    # audit line records too, naming who tried (views never run for it).
    g.principal = principal
    if not principal.may(needed):
        raise Forbidden(f"{principal.name} ({principal.role.value}) may not {needed.value}")
    g.ui_session = session
    return None


def current_principal() -> Principal:
    found = g.get("principal")
    if not isinstance(found, Principal):  # pragma: no cover - _check runs first
        raise Unauthorized("not authenticated")
    return found


def credential_still_live(ttl_s: float) -> Callable[[], bool]:
    """A check, for a response that outlives its request (an event stream), that the
    credential this request came with (its bearer token, or its web session) is still
    live: revoking a token or ending a session ends its streams' power too.

    An answer is shared by every stream of the process with the same credential for
    ``ttl_s`` (a thousand watchers of one token cost one read per beat, not a thousand;
    in the bench's think phase a read per stream per beat was about 13 reads per run).
    """
    token = _header_token()
    session_id = None if token is not None else request.cookies.get(SESSION_COOKIE)
    key = ("token", token) if token is not None else ("session", session_id or "")
    key = (key[0], sha256_hex(key[1]))  # the cache never holds a credential itself
    ctx = api()

    def read() -> bool:
        if token is not None:
            with ctx.single_read() as conn:
                return principal_for(conn, token) is not None
        with ctx.sessions() as s:
            return signed_in(s, session_id or "", now=ctx.clock.now()) is not None

    def live() -> bool:
        now = time.monotonic()
        with _LIVENESS_LOCK:
            known = _LIVENESS.get(key)
        if known is not None and now - known[0] < ttl_s:
            return known[1]
        answer = read()
        with _LIVENESS_LOCK:
            if len(_LIVENESS) >= _LIVENESS_MAX:
                _LIVENESS.clear()
            _LIVENESS[key] = (now, answer)
        return answer

    return live


_LIVENESS: dict[tuple[str, str], tuple[float, bool]] = {}
_LIVENESS_LOCK = threading.Lock()
_LIVENESS_MAX = 10_000


def current_session() -> SignedIn | None:
    """The web session this request came with, if it came with one."""
    found = g.get("ui_session")
    return found if isinstance(found, SignedIn) else None


def _challenge(response: Response) -> Response:
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="kodo"'
    return response


def install_auth(app: Flask) -> None:
    app.before_request(_check)
    app.after_request(_challenge)
