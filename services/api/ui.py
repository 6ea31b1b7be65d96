"""The approval pages: server-rendered HTML (Jinja, autoescaped), no build step.

``/ui/approvals`` lists the runs waiting for a decision; ``/ui/runs/<id>`` shows one
run's plan card, its digest and its ledger, with Approve / Reject buttons. The buttons
call the JSON API (``POST /runs/<id>/approve-plan`` with the digest shown), so the page
holds no authority of its own: an optional API token is sent as a bearer token.
"""

from __future__ import annotations

from flask import Response, render_template

from shared.db.repos.inbox import InboxRepo

from . import reads
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
