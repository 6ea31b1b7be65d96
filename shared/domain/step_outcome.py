"""What a step hands back to its runner: its outcome and the artifacts it made (pure).

The runner (services/worker/steps/base.py) passes it to the service layer
(:mod:`shared.service.steps`), which records it and moves the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shared.domain.capping import MAX_CUTS_LISTED, cap_json
from shared.domain.vocab import ArtifactKind

PLAN_ARTIFACT = "plan.json"
"""CompileST's plan card: its bytes are what the approval digest is taken over."""
DIAGNOSTIC_MAX_BYTES = 256 * 1024
ERROR_MAX_CHARS = 4000


class RuleRefusal(Exception):
    """An error that names the rule it enforces. A step that ends on one fails closed with
    the rule in its diagnostic, like any refusal the step itself makes."""

    rule: str


@dataclass(frozen=True)
class ArtifactOut:
    kind: ArtifactKind
    name: str
    content: bytes
    media_type: str

    @classmethod
    def json(cls, kind: ArtifactKind, name: str, value: object) -> ArtifactOut:
        body = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).encode()
        return cls(kind, name, body + b"\n", "application/json")

    @classmethod
    def signed_json(cls, kind: ArtifactKind, name: str, body: bytes) -> ArtifactOut:
        """A JSON artifact whose bytes are the ones a digest was taken over (from
        ``canonical_bytes``): stored verbatim, never re-serialised or pretty-printed."""
        return cls(kind, name, body, "application/json")


@dataclass
class StepOutcome:
    ok: bool
    output: dict[str, Any] = field(default_factory=dict)
    artifacts: list[ArtifactOut] = field(default_factory=list)
    error: str | None = None
    plan_sha256: str | None = None
    workspace: tuple[str, str] | None = None  # (branch, worktree path)
    # ExecuteST's command ran and failed (not a refusal): the run may go back for a repair.
    verification_failed: bool = False
    # The step's next call would have passed the run's budget (not sent): the run waits.
    budget_stop: bool = False

    @classmethod
    def failed(cls, error: str, diagnostic: dict[str, Any]) -> StepOutcome:
        """A terminal failure always carries a diagnostic.json artifact, capped in size.

        Its fields quote agent-written text; past DIAGNOSTIC_MAX_BYTES the largest are
        cut and ``truncated`` says which (the error itself is kept to ERROR_MAX_CHARS).
        """
        if len(error) > ERROR_MAX_CHARS:
            error = f"{error[:ERROR_MAX_CHARS]}... [cut: {len(error)} characters in all]"
        body, cuts = cap_json({"error": error, **diagnostic}, DIAGNOSTIC_MAX_BYTES)
        if cuts:
            body = {
                **body,
                "error": body.get("error", error),
                "truncated": {
                    "rule": f"diagnostic.json is capped at {DIAGNOSTIC_MAX_BYTES} bytes",
                    "cuts": [c.to_json() for c in cuts[:MAX_CUTS_LISTED]],
                    "more_cuts": max(0, len(cuts) - MAX_CUTS_LISTED),
                },
            }
        return cls(
            ok=False,
            error=error,
            artifacts=[ArtifactOut.json(ArtifactKind.DIAGNOSTIC, "diagnostic.json", body)],
        )
