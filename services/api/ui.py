"""The approval pages: server-rendered HTML (Jinja, autoescaped), no build step.

``/ui/runs`` lists every run (filtered by status, submitter and repository; the old
``/ui/approvals`` redirects to its waiting ones); ``/ui/runs/<id>`` is the review: the
plan card and its digest with Approve / Reject buttons, the decision and its comment,
the diff, the verification command and its output, diagnostics, a step timeline, the
ledger and every artifact with its sha256. The page follows the run over SSE.

Signing in (``POST /ui/login`` with a token) starts a server-side session: the
browser's cookie holds a random session id, never the token. The buttons are forms
posting to ``/ui/runs/<id>/approve|reject`` with the digest shown and the session's
CSRF token; ``POST /ui/logout`` ends the session. The sign-in form itself carries a
CSRF token bound to a short-lived cookie, so no other site can sign a browser in.

Everything an agent or a submitter wrote is shown through :func:`visible` (the
``shown`` and ``shown_block`` filters, and Jinja's ``finalize`` for every other
expression): control characters, escape sequences and bidi overrides appear as
visible escapes, on top of HTML autoescaping.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import asdict
from datetime import UTC, datetime
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, redirect, render_template, request
from markupsafe import Markup, escape
from werkzeug.wrappers import Response as BaseResponse

from shared.db.repos.listings import RunFilter
from shared.domain.budget import usd_to_micro
from shared.domain.display import lookalike_name, shown_name_text, visible
from shared.domain.run_machine import RunStatus
from shared.domain.step_contract import step_contract_version
from shared.domain.storable import UNSTORABLE
from shared.errors import InvalidInput, KodoError
from shared.model_in_use import describe_ids, is_stand_in_id
from shared.service.runs import (
    answer_question,
    approve_plan,
    reject_plan,
    request_changes,
    set_budget,
)
from shared.service.tokens import Permission
from shared.service.ui_sessions import sign_in, sign_out

from . import reads, run_review
from .auth import CSRF_FIELD, SESSION_COOKIE, current_principal, current_session
from .openapi import Routes
from .schemas import BUDGET_TOKENS_MAX, BUDGET_USD_MAX
from .state import api

routes = Routes("ui", __name__, description="Server-rendered approval pages (HTML)")

HTML = "text/html; charset=utf-8"
LOGIN_CSRF_COOKIE = "kodo_login_csrf"
LOGIN_FORM_TTL_S = 3600
LEGACY_COOKIE = "kodo_token"  # held a raw token before sessions: always cleared


def _page(template: str, status: int = 200, **context: object) -> Response:
    # The header names the model the agents are configured to run on (OC_PROVIDER_ID/
    # OC_MODEL_ID, as the workers send it), and says plainly when it is the stand-in;
    # whether the daemon offers it is `kodo doctor`'s check, not a page render's.
    settings = api().settings
    model = describe_ids(settings.oc_provider_id, settings.oc_model_id)
    stand_in = is_stand_in_id(settings.oc_provider_id)
    body = render_template(
        template, signed_in=current_session(), model_in_use=model, stand_in=stand_in, **context
    )
    return Response(body, status=status, content_type=HTML)


RUNS_PER_PAGE = 50
STATUSES = tuple(status.value for status in RunStatus)


@routes.route("/ui/approvals", "GET")
@routes.response(303, description="to /ui/runs?status=waiting_input (the runs page)")
def approvals_page() -> BaseResponse:
    return redirect(f"/ui/runs?status={RunStatus.WAITING_INPUT.value}", code=303)


def _filter_value(name: str) -> str | None:
    raw = (request.args.get(name) or "").strip()
    return raw or None


@routes.route("/ui/runs", "GET")
@routes.response(200, content_type="text/html", description="every run, newest first, filtered")
def runs_page() -> Response:
    """Every run with its id, submitter, cost so far and age; ``?status=``,
    ``?submitter=``, ``?repo=`` filter it and ``?cursor=`` pages on."""
    filters = RunFilter(
        status=_filter_value("status"),
        submitter=_filter_value("submitter"),
        repo=_filter_value("repo"),
    )
    cursor = _filter_value("cursor")
    ctx = api()

    def shown(status: int, **context: object) -> Response:
        now = ctx.clock.now()
        return _page("runs.html", status, filters=filters, statuses=STATUSES, now=now, **context)

    try:
        if filters.status is not None and filters.status not in STATUSES:
            raise InvalidInput(f"there is no run status {filters.status!r}")
        if any(UNSTORABLE.search(v or "") for v in (filters.submitter, filters.repo, cursor)):
            raise InvalidInput("a filter holds a NUL character or a lone surrogate")
        with ctx.sessions() as s:
            listing = reads.list_runs(s, filters, limit=RUNS_PER_PAGE, cursor=cursor)
    except KodoError as exc:
        return shown(exc.http_status, listing=None, error=exc.message)
    more = None
    if listing.next_cursor is not None:
        kept = {k: v for k, v in asdict(filters).items() if v is not None}
        more = urlencode({**kept, "cursor": listing.next_cursor})
    return shown(200, listing=listing, more=more, paged=cursor is not None)


def _run_page(run_id: str, *, error: str | None = None, status: int = 200) -> Response:
    principal = current_principal()
    with api().sessions() as s:
        return _page(
            "run.html",
            status,
            page=reads.run_page(s, run_id, max_revisions=api().settings.max_revisions),
            revision_diff_chars=reads.REVISION_DIFF_CHARS,
            review=run_review.review_of(s, run_id),
            split=request.args.get("diff") == "split",
            error=error,
            may_decide=principal.may(Permission.DECIDE),
            code_contract=step_contract_version(),
        )


@routes.route("/ui/runs/<kid:run_id>", "GET")
@routes.response(200, content_type="text/html", description="a run's plan card and ledger")
@routes.errors(404)
def run_page(run_id: str) -> Response:
    return _run_page(run_id)


forms_bp = Blueprint("ui_forms", __name__)
"""The UI's form posts (and the sign-in page): plain Flask, outside the OpenAPI spec."""


def _safe_next(raw: str | None) -> str:
    """Only same-site UI paths: never an open redirect, never a control character (a CR
    or LF could not be sent in the Location header: the sign-in would end in a 500)."""
    ok = (
        raw
        and raw.startswith("/ui/")
        and "//" not in raw
        and "\\" not in raw
        and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw)
    )
    return raw if ok and raw is not None else "/ui/runs"


def _login_page(target: str, error: str | None, status: int) -> Response:
    """The sign-in form with a fresh CSRF token, bound to this browser by a cookie."""
    csrf = secrets.token_urlsafe(32)
    page = _page("login.html", status, next=target, error=error, csrf_token=csrf)
    page.set_cookie(
        LOGIN_CSRF_COOKIE,
        csrf,
        max_age=LOGIN_FORM_TTL_S,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/ui/login",
    )
    return page


@forms_bp.get("/ui/login")
def login_page() -> Response:
    return _login_page(_safe_next(request.args.get("next")), None, 200)


@forms_bp.post("/ui/login")
def login() -> BaseResponse:
    target = _safe_next(request.form.get("next"))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    presented = request.form.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        return _login_page(target, "The sign-in form expired: please sign in again.", 403)
    token = (request.form.get("token") or "").strip()
    ctx = api()
    with ctx.uow() as uow:
        started = (
            sign_in(uow, token, now=ctx.clock.now(), ttl_s=ctx.settings.ui_session_ttl_s)
            if token
            else None
        )
        earlier = request.cookies.get(SESSION_COOKIE)
        if started is not None and earlier:
            sign_out(uow, earlier, now=ctx.clock.now())  # one browser, one session
    if started is None:
        return _login_page(target, "Unknown or revoked token.", 401)
    session_id, _ = started
    response = redirect(target, code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=ctx.settings.ui_session_ttl_s,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/ui/login")
    response.delete_cookie(LEGACY_COOKIE, path="/")
    return response


@forms_bp.post("/ui/logout")
def logout() -> BaseResponse:
    ctx = api()
    with ctx.uow() as uow:
        sign_out(uow, request.cookies.get(SESSION_COOKIE, ""), now=ctx.clock.now())
    response = redirect("/ui/login", code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
    response.delete_cookie(LEGACY_COOKIE, path="/")
    return response


def _decide(run_id: str, *, approve: bool) -> BaseResponse:
    """Record the signed-in approver's decision on the digest the page showed."""
    ctx = api()
    digest = (request.form.get("plan_sha256") or "").strip()
    try:
        if not digest:
            raise InvalidInput("the form carries no plan digest: reload the page")
        approver = current_principal().name
        with ctx.uow() as uow:
            if approve:
                approve_plan(
                    uow,
                    run_id,
                    approver=approver,
                    now=ctx.clock.now(),
                    plan_sha256=digest,
                    allow_self_approval=ctx.settings.allow_self_approval,
                )
            else:
                reject_plan(uow, run_id, approver=approver, now=ctx.clock.now(), plan_sha256=digest)
    except KodoError as exc:
        return _run_page(run_id, error=exc.message, status=exc.http_status)
    return redirect(f"/ui/runs/{run_id}", code=303)


@forms_bp.post("/ui/runs/<kid:run_id>/request-changes")
def request_changes_form(run_id: str) -> BaseResponse:
    """Send the plan the page showed back to CompileST with the form's comment."""
    ctx = api()
    digest = (request.form.get("plan_sha256") or "").strip()
    try:
        if not digest:
            raise InvalidInput("the form carries no plan digest: reload the page")
        with ctx.uow() as uow:
            request_changes(
                uow,
                run_id,
                approver=current_principal().name,
                comment=request.form.get("comment"),
                now=ctx.clock.now(),
                max_revisions=ctx.settings.max_revisions,
                lease_s=ctx.settings.redispatch_after_s,
                plan_sha256=digest,
            )
    except KodoError as exc:
        return _run_page(run_id, error=exc.message, status=exc.http_status)
    return redirect(f"/ui/runs/{run_id}", code=303)


@forms_bp.post("/ui/runs/<kid:run_id>/answer")
def answer_form(run_id: str) -> BaseResponse:
    """Answer DecideST's question from the page."""
    ctx = api()
    try:
        with ctx.uow() as uow:
            answer_question(
                uow,
                run_id,
                approver=current_principal().name,
                answer=request.form.get("comment"),
                now=ctx.clock.now(),
                lease_s=ctx.settings.redispatch_after_s,
                question_sha256=request.form.get("question_sha256"),  # the page's question
            )
    except KodoError as exc:
        return _run_page(run_id, error=exc.message, status=exc.http_status)
    return redirect(f"/ui/runs/{run_id}", code=303)


@forms_bp.post("/ui/runs/<kid:run_id>/budget")
def budget_form(run_id: str) -> BaseResponse:
    """Raise the run's budget from the page (an empty field leaves that limit)."""
    ctx = api()
    settings = ctx.settings
    try:
        usd = _amount(request.form.get("budget_usd"), "budget_usd", float, BUDGET_USD_MAX)
        tokens = _amount(request.form.get("budget_tokens"), "budget_tokens", int, BUDGET_TOKENS_MAX)
        if usd is None and tokens is None:
            raise InvalidInput("name a new USD budget, a new token budget or both")
        with ctx.uow() as uow:
            set_budget(
                uow,
                run_id,
                approver=current_principal().name,
                usd_micro=None if usd is None else usd_to_micro(float(usd)),
                tokens=None if tokens is None else int(tokens),
                estimate=settings.call_estimate(),
                now=ctx.clock.now(),
                lease_s=settings.redispatch_after_s,
            )
    except KodoError as exc:
        return _run_page(run_id, error=exc.message, status=exc.http_status)
    return redirect(f"/ui/runs/{run_id}", code=303)


def _amount(
    raw: str | None, name: str, kind: type[int] | type[float], most: float
) -> int | float | None:
    """A form's number (empty: not given); anything else is a 400 naming the field. The
    range is the JSON API's (a larger amount would overflow the database's column)."""
    if raw is None or not raw.strip():
        return None
    try:
        value = kind(raw.strip())
    except ValueError as exc:
        raise InvalidInput(f"{name} must be a number", details={name: ["not a number"]}) from exc
    if not 0 <= value <= most:  # NaN fails this too
        raise InvalidInput(
            f"{name} must be between 0 and {most:g}", details={name: ["out of range"]}
        )
    return value


@forms_bp.post("/ui/runs/<kid:run_id>/approve")
def approve(run_id: str) -> BaseResponse:
    return _decide(run_id, approve=True)


@forms_bp.post("/ui/runs/<kid:run_id>/reject")
def reject(run_id: str) -> BaseResponse:
    return _decide(run_id, approve=False)


def _shown(value: object) -> Markup:
    """One line of untrusted text: every control, escape and bidi character escaped, and
    HTML-escaped here (as Markup, so ``finalize`` does not read it all again)."""
    return escape(visible(value))


def _shown_path(value: object) -> Markup:
    """A path as ``_shown`` draws it, but one that may be drawn like another (a no-break
    space, a decomposed letter) as JSON in ASCII (red-team helper-106)."""
    if isinstance(value, str) and lookalike_name(value):
        return escape(shown_name_text(value))
    return escape(visible(value))


def _shown_block(value: object) -> Markup:
    """Untrusted multi-line text: newlines and tabs kept, everything else as ``_shown``."""
    return escape(visible(value, multiline=True))


def _utc(value: datetime) -> datetime:
    """Stored times are aware (timestamptz); a naive one is UTC, never local."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_text(value: datetime) -> str:
    """UTC to the second, as a title or a fallback reads it."""
    return _utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def _when(value: datetime | None) -> Markup:
    """A ``<time>`` the page's script rewrites in the browser's local time; without
    script it reads as UTC to the second (never microseconds)."""
    if value is None:
        return Markup("\u2013")
    at = _utc(value)
    return Markup('<time datetime="{}">{}</time>').format(
        at.strftime("%Y-%m-%dT%H:%M:%SZ"), _utc_text(at)
    )


def _age(value: datetime, now: datetime) -> str:
    """How long ago, in the largest unit that is at least 1 (``45s``, ``12m``, ``3h``, ``2d``)."""
    seconds = max(0, int((_utc(now) - _utc(value)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _duration(ms: int | None) -> str:
    if ms is None:
        return "\u2013"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000} min {ms % 60_000 // 1000} s"


def _finalize(value: object) -> object:
    """Every ``{{ expression }}`` is shown safely, filtered or not (Markup is ours)."""
    return value if isinstance(value, Markup) else visible(value)


def install_ui(app: Flask) -> None:
    """The form routes, and the filters every page renders untrusted text through."""
    app.register_blueprint(forms_bp)
    app.jinja_env.filters["shown"] = _shown
    app.jinja_env.filters["shown_block"] = _shown_block
    app.jinja_env.filters["shown_path"] = _shown_path
    app.jinja_env.filters["when"] = _when
    app.jinja_env.filters["utc"] = _utc_text
    app.jinja_env.filters["duration"] = _duration
    app.jinja_env.globals["age"] = _age
    app.jinja_env.finalize = _finalize
