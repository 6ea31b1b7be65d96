"""One audit line for every decision a person makes through the API or the web pages.

A single ``after_request`` hook, keyed by the endpoint, writes who (the principal's
name and role) and what (the action, the run or intent id, the plan digest where there
is one, the HTTP status): no route has to remember to log. Attempts that were refused
(a stale digest, a self-approval, a run in the wrong status) are written too, with
their status, since an auditor asks about those as well; so are attempts a principal's
role does not allow (403: a submitter trying to approve). A request without a principal
(401) never reached a decision and writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from shared.service.tokens import Principal

log = structlog.get_logger("kodo.audit")

ACTIONS: Mapping[str, str] = {
    "intents.create_intent": "intent.create",
    "intents.run_intent": "run.start",
    "runs.approve_plan": "plan.approve",
    "runs.reject_plan": "plan.reject",
    "runs.request_changes": "plan.request_changes",
    "runs.answer": "run.answer",
    "runs.set_budget": "run.budget_raise",
    "runs.retry": "run.retry",
    "runs.cancel": "run.cancel",
    "ui_forms.approve": "plan.approve",
    "ui_forms.reject": "plan.reject",
    "ui_forms.request_changes_form": "plan.request_changes",
    "ui_forms.answer_form": "run.answer",
    "ui_forms.budget_form": "run.budget_raise",
}

_DIGEST_KEYS = ("planSha256", "plan_sha256")


def _json_object(found: object) -> Mapping[str, object]:
    return found if isinstance(found, dict) else {}


def _first_text(sources: list[Mapping[str, object]], keys: tuple[str, ...]) -> str | None:
    for source in sources:
        for key in keys:
            value = source.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def _request_inputs() -> tuple[Mapping[str, object], Mapping[str, object]]:
    """The request's JSON body and form, or nothing where they cannot be read (a body
    over the limit, undecodable or absurdly nested JSON): the audit line still says who
    did what and how it ended, from the URL and the answer."""
    try:
        return _json_object(request.get_json(silent=True)), request.form
    except (HTTPException, ValueError, RecursionError):
        return {}, {}


def audit_fields(endpoint: str, response: Response) -> dict[str, object]:
    """What the request decided on, from its URL, its body or form, and its answer."""
    answer = _json_object(response.get_json(silent=True)) if response.is_json else {}
    body, form = _request_inputs()
    view = request.view_args or {}
    fields: dict[str, object] = {
        "action": ACTIONS[endpoint],
        "via": "ui" if endpoint.startswith("ui_forms.") else "api",
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
    }
    if endpoint == "intents.create_intent":
        fields["intent_id"] = _first_text([answer], ("intentId", "intent_id", "id"))
        started = _json_object(answer.get("run"))
        if started:  # ``run: true``: the run started with the intent, in one transaction
            fields["action"] = f"{ACTIONS[endpoint]}+{ACTIONS['intents.run_intent']}"
            fields["run_id"] = _first_text([started], ("runId", "run_id", "id"))
    elif endpoint == "intents.run_intent":
        fields["intent_id"] = view.get("intent_id")
        fields["run_id"] = _first_text([answer], ("runId", "run_id", "id"))
    else:
        fields["run_id"] = view.get("run_id")
        fields["plan_sha256"] = _first_text([answer, body, form], _DIGEST_KEYS)
    return {key: value for key, value in fields.items() if value is not None}


def _audit(response: Response) -> Response:
    endpoint = request.endpoint
    principal = g.get("principal")
    if endpoint is not None and endpoint in ACTIONS and isinstance(principal, Principal):
        log.info(
            "audit",
            principal=principal.name,
            role=principal.role.value,
            outcome="done" if response.status_code < 400 else "refused",
            **audit_fields(endpoint, response),
        )
    return response


def install_audit(app: Flask) -> None:
    """Write an audit line after each decision request (see ACTIONS)."""
    app.after_request(_audit)
