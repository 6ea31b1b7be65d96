"""The approval pages: server-rendered HTML (Jinja, autoescaped), no build step.

``/ui/approvals`` lists the runs waiting for a decision; ``/ui/runs/<id>`` shows one
run's plan card, its digest and its ledger, with Approve / Reject buttons. The buttons
call the JSON API (``POST /runs/<id>/approve-plan`` with the digest shown), so the page
holds no authority of its own: an optional API token is sent as a bearer token.
"""

from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from shared.db.repos.inbox import InboxRepo
from shared.service.tokens import authenticate

from . import reads
from .auth import COOKIE
from .openapi import Routes
from .state import api

routes = Routes("ui", __name__, description="Server-rendered approval pages (HTML)")

HTML = "text/html; charset=utf-8"


def _page(template: str, **context: object) -> Response:
    return Response(render_template(template, **context), content_type=HTML)


@routes.route("/ui/approvals", "GET")
@routes.response(200, content_type="text/html", description="runs waiting for approval")
def approvals_page() -> Response:
    with api().sessions() as s:
        waiting = InboxRepo(s).waiting_for_approval()
        return _page("approvals.html", waiting=waiting)


@routes.route("/ui/runs/<kid:run_id>", "GET")
@routes.response(200, content_type="text/html", description="a run's plan card and ledger")
@routes.errors(404)
def run_page(run_id: str) -> Response:
    with api().sessions() as s:
        return _page("run.html", page=reads.run_page(s, run_id))


login_bp = Blueprint("ui_login", __name__)
"""The sign-in page: plain Flask (a form post, not JSON), outside the OpenAPI spec."""


def _safe_next(raw: str | None) -> str:
    """Only same-site UI paths: never an open redirect."""
    return raw if raw and raw.startswith("/ui/") and "//" not in raw else "/ui/approvals"


@login_bp.get("/ui/login")
def login_page() -> Response:
    return _page("login.html", next=_safe_next(request.args.get("next")), error=None)


@login_bp.post("/ui/login")
def login() -> BaseResponse:
    token = (request.form.get("token") or "").strip()
    target = _safe_next(request.form.get("next"))
    with api().sessions() as s:
        principal = authenticate(s, token) if token else None
    if principal is None:
        page = _page("login.html", next=target, error="Unknown or revoked token.")
        page.status_code = 401
        return page
    response = redirect(target, code=303)
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="Strict", secure=request.is_secure, path="/"
    )
    return response
