"""What a run produced: its plan, its provider calls, its artifacts."""

from __future__ import annotations

from typing import Any

from flask import Response

from shared.db.models import Artifact

from . import reads
from .openapi import Routes
from .responses import ArtifactOutSchema, CallsSchema, PlanOutSchema, RevisionsSchema
from .schemas import ArtifactQuery, ArtifactQuerySchema
from .state import api

routes = Routes("outputs", __name__, description="A run's plan, provider calls and artifacts")


@routes.route("/runs/<kid:run_id>/plan", "GET")
@routes.response(200, PlanOutSchema())
@routes.errors(404, 500)
def read_plan(run_id: str) -> reads.PlanView:
    """The plan card CompileST stored, its digest, and the decision on it if any."""
    with api().single_read() as conn:  # one SELECT: no transaction around it
        return reads.plan_of(conn, run_id)


@routes.route("/runs/<kid:run_id>/plans", "GET")
@routes.response(200, RevisionsSchema())
@routes.errors(404, 500)
def list_plans(run_id: str) -> reads.RevisionsView:
    """Every plan revision of the run, oldest first, each with its digest and the human
    decision on it (``changes_requested`` carries the reviewer's comment)."""
    ctx = api()
    with ctx.sessions() as s:
        return reads.plan_revisions(s, run_id, max_revisions=ctx.settings.max_revisions)


@routes.route("/runs/<kid:run_id>/calls", "GET")
@routes.response(200, CallsSchema())
@routes.errors(404)
def list_calls(run_id: str) -> dict[str, Any]:
    """The run's ledger rows (without request and response bodies)."""
    with api().sessions() as s:
        return {"run_id": run_id, "calls": reads.calls_of(s, run_id)}


@routes.route("/runs/<kid:run_id>/artifacts", "GET")
@routes.response(200, ArtifactOutSchema(many=True))
@routes.errors(404)
def list_artifacts(run_id: str) -> list[Artifact]:
    with api().sessions() as s:
        return reads.artifacts_of(s, run_id)


@routes.route("/runs/<kid:run_id>/artifacts/<artifact:name>", "GET")
@routes.arguments(ArtifactQuerySchema(), location="query")
@routes.response(
    200,
    content_type="application/octet-stream",
    description="the raw bytes under their own media type; X-Content-SHA256 is their digest",
)
@routes.errors(400, 404, 409)
def read_artifact(query: ArtifactQuery, run_id: str, name: str) -> Response:
    """The raw bytes under their own media type; ``?step=`` picks among same-named ones."""
    with api().sessions() as s:
        found = reads.artifact_named(s, run_id, name, query.step)
        return Response(
            found.content,
            mimetype=found.media_type,
            headers={"X-Content-SHA256": found.sha256, "X-Content-Type-Options": "nosniff"},
        )
