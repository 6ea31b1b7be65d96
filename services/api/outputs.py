"""What a run produced: its plan, its provider calls, its artifacts."""

from __future__ import annotations

from flask import Blueprint, Response
from flask.typing import ResponseReturnValue

from . import reads, render
from .schemas import ArtifactQuery, ArtifactQuerySchema, parse_query
from .state import api

bp = Blueprint("outputs", __name__)


@bp.get("/runs/<kid:run_id>/plan")
def read_plan(run_id: str) -> ResponseReturnValue:
    with api().sessions() as s:
        view = reads.plan_of(s, run_id)
        return {
            "runId": view.run.id,
            "planSha256": view.run.plan_sha256,
            "plan": view.plan,
            "approval": render.approval(view.approval),
        }


@bp.get("/runs/<kid:run_id>/calls")
def list_calls(run_id: str) -> ResponseReturnValue:
    with api().sessions() as s:
        return {"runId": run_id, "calls": [render.call(c) for c in reads.calls_of(s, run_id)]}


@bp.get("/runs/<kid:run_id>/artifacts")
def list_artifacts(run_id: str) -> ResponseReturnValue:
    with api().sessions() as s:
        return [render.artifact(a) for a in reads.artifacts_of(s, run_id)]


@bp.get("/runs/<kid:run_id>/artifacts/<artifact:name>")
def read_artifact(run_id: str, name: str) -> ResponseReturnValue:
    """The raw bytes under their own media type; ``?step=`` picks among same-named ones."""
    query = parse_query(ArtifactQuerySchema(), ArtifactQuery)
    with api().sessions() as s:
        found = reads.artifact_named(s, run_id, name, query.step)
        return Response(
            found.content,
            mimetype=found.media_type,
            headers={"X-Content-SHA256": found.sha256, "X-Content-Type-Options": "nosniff"},
        )
