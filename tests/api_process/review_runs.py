"""Runs as the run page reviews them, stored as the worker stores them: a plan card, the
approval with its comment, ApplyPatchST's patch, ExecuteST's command and its capped
output, a failed step's diagnostic.json, step checkpoints with an ended round, and the
ledger's calls. One shape per page state, and a hostile one whose diff and command
output carry escapes, bidi overrides and markup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from shared.db.models import Run, StepRound, StepRun
from shared.db.repos.steps import ArtifactRepo
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind
from shared.hashing import sha256_hex
from tests.factories import IntentFactory, OpenCodeCallFactory, PlanApprovalFactory, RunFactory

STARTED = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
BASE_COMMIT = "3f9c2d0b8e6a4f1c9d7e5b3a1f0e2d4c6b8a0f1e"
SUBMITTER = "sam"
APPROVER = "alice"
COMMENT = "Approved: keep multiply next to add."
VERIFY_ARGV = ["python", "-m", "pytest", "-q", "tests/test_calc.py"]
PLAN: dict[str, Any] = {
    "design": "Add multiply(a, b) to calc.py, next to add, with a test.",
    "files": [
        {"path": "calc.py", "change": "modify", "why": "add multiply"},
        {"path": "tests/test_calc.py", "change": "create", "why": "test multiply"},
    ],
    "risks": ["none"],
    "tests": ["test_multiply"],
}
PATCH = """diff --git a/calc.py b/calc.py
index 3b18e51..c2d1f0a 100644
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,6 @@
 def add(a, b):
     return a + b
+
+
+def multiply(a, b):
+    return a * b
diff --git a/tests/test_calc.py b/tests/test_calc.py
new file mode 100644
index 0000000..8d1e2f3
--- /dev/null
+++ b/tests/test_calc.py
@@ -0,0 +1,5 @@
+from calc import multiply
+
+
+def test_multiply():
+    assert multiply(3, 4) == 12  # "twelve"
"""
PASSED_OUTPUT = ".   [100%]\n1 passed in 0.01s\n"
FAILED_OUTPUT = (
    "F                                                                        [100%]\n"
    "E       assert 11 == 12\n"
    "1 failed in 0.02s\n"
)
FAILED_ERROR = "verification exited 1: python -m pytest -q tests/test_calc.py"

# The attacker's diff and command output: a terminal escape that clears the screen, an
# OSC 8 hyperlink, a right-to-left override that reverses a path, and HTML markup.
RLO = "\u202e"
HOSTILE_MARKUP = '<img src=x onerror="document.title=1"><script>alert(1)</script>'
HOSTILE_PATCH = f"""diff --git a/calc.py b/calc.py
index 3b18e51..c2d1f0a 100644
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,4 @@
 def add(a, b):
     return a + b
+# {HOSTILE_MARKUP}
+KEY = "\x1b[2J\x1b]8;;http://evil.example/\x1b\\\\click\x1b]8;;\x1b\\\\ {RLO}sye_khs.{RLO}"
"""
HOSTILE_OUTPUT = (
    f"\x1b[2J\x1b[H1 passed {HOSTILE_MARKUP}\n\x1b]0;kodo: all good\x07done {RLO}txt.terces\n"
)
HOSTILE_VISIBLE = ("\\x1b[2J", "\\x1b]8;;http://evil.example/", "\\u202e", "\\x1b]0;", "\\x07")


@dataclass(frozen=True)
class Stored:
    run: Run
    patch_sha256: str | None = None
    output_sha256: str | None = None


def _at(seconds: float) -> datetime:
    return STARTED + timedelta(seconds=seconds)


def _artifact(
    db: Session, run: Run, step: StepId, kind: ArtifactKind, name: str, body: bytes, media: str
) -> str:
    return ArtifactRepo(db).put(run.id, step, kind=kind, name=name, content=body, media_type=media)


def _step(db: Session, run: Run, step: StepId, start: float, ms: int | None, **fields: Any) -> None:
    row = StepRun(
        run_id=run.id,
        step_id=step.value,
        status=fields.pop("status", "succeeded"),
        deliveries=fields.pop("deliveries", 1),
        started_at=_at(start),
        finished_at=None if ms is None else _at(start + ms / 1000),
        duration_ms=ms,
        **fields,
    )
    db.add(row)


def _approved_run(db: Session, status: str, **traits: Any) -> Run:
    plan = json.dumps(PLAN).encode()
    run: Run = RunFactory(
        intent=IntentFactory(
            goal="Add a multiply function to calc.py with a test",
            submitted_by=SUBMITTER,
            base_commit=BASE_COMMIT,
            created_at=STARTED,
        ),
        status=status,
        last_step="ExecuteST",
        next_action="none",
        plan_sha256=sha256_hex(plan),
        created_at=STARTED,
        spent_usd_micro=49_000,  # what the ledger's calls below settled
        spent_tokens=4_900,
        **traits,
    )
    _artifact(
        db, run, StepId.COMPILE, ArtifactKind.PLAN_CARD, "plan.json", plan, "application/json"
    )
    PlanApprovalFactory(
        run=run,
        plan_sha256=run.plan_sha256,
        approver=APPROVER,
        comment=COMMENT,
        decided_at=_at(30),
        approved_at=_at(30),
    )
    _step(db, run, StepId.COMPILE, 0, 2500)
    OpenCodeCallFactory(
        run=run,
        step_id="CompileST",
        attempt=1,
        agent="plan",
        usage={"total_tokens": 1200, "cost_usd": 0.012},
        duration_ms=2400,
    )
    _step(db, run, StepId.APPLY_PATCH, 31, 4100)
    OpenCodeCallFactory(
        run=run,
        step_id="ApplyPatchST",
        attempt=1,
        agent="build",
        usage={"total_tokens": 3400, "cost_usd": 0.034},
        duration_ms=4000,
    )
    _step(db, run, StepId.DECIDE, 36, 900)
    OpenCodeCallFactory(
        run=run,
        step_id="DecideST",
        attempt=1,
        agent="plan",
        usage={"total_tokens": 300, "cost_usd": 0.003},
        duration_ms=800,
    )
    return run


def store_succeeded_run(db: Session) -> Stored:
    """Approved with a comment, patched, verified (exit 0): the whole review."""
    run = _approved_run(db, "succeeded", finished_at=_at(40))
    patch = _artifact(
        db, run, StepId.APPLY_PATCH, ArtifactKind.PATCH, "patch.diff", PATCH.encode(), "text/x-diff"
    )
    output = _artifact(
        db,
        run,
        StepId.EXECUTE,
        ArtifactKind.COMMAND_OUTPUT,
        "command-output.txt",
        PASSED_OUTPUT.encode(),
        "text/plain; charset=utf-8",
    )
    _step(
        db,
        run,
        StepId.EXECUTE,
        37,
        1800,
        output={
            "argv": VERIFY_ARGV,
            "exit_code": 0,
            "timed_out": False,
            "truncated": False,
            "output_bytes": len(PASSED_OUTPUT.encode()),
        },
    )
    db.commit()
    return Stored(run, patch, output)


def store_failed_run(db: Session) -> Stored:
    """Verification failed twice (one repair round in between): the diagnostic shows."""
    run = _approved_run(db, "failed", error=FAILED_ERROR, finished_at=_at(60))
    patch = _artifact(
        db, run, StepId.APPLY_PATCH, ArtifactKind.PATCH, "patch.diff", PATCH.encode(), "text/x-diff"
    )
    first = {
        "argv": VERIFY_ARGV,
        "exit_code": 1,
        "timed_out": False,
        "truncated": False,
        "output_bytes": len(FAILED_OUTPUT.encode()),
    }
    _artifact(
        db,
        run,
        StepId.EXECUTE,
        ArtifactKind.COMMAND_OUTPUT,
        "command-output.txt",
        FAILED_OUTPUT.encode(),
        "text/plain; charset=utf-8",
    )
    db.add(
        StepRound(
            run_id=run.id,
            step_id="ExecuteST",
            round=1,
            status="failed",
            deliveries=1,
            attempt_base=0,
            output=first,
            error=FAILED_ERROR,
            started_at=_at(37),
            finished_at=_at(38),
            duration_ms=1000,
        )
    )
    output = _artifact(
        db,
        run,
        StepId.EXECUTE,
        ArtifactKind.COMMAND_OUTPUT,
        "command-output.r2.txt",
        FAILED_OUTPUT.encode(),
        "text/plain; charset=utf-8",
    )
    diagnostic = {"error": FAILED_ERROR, **first, "rule": "verification_failed"}
    _artifact(
        db,
        run,
        StepId.EXECUTE,
        ArtifactKind.DIAGNOSTIC,
        "diagnostic.r2.json",
        json.dumps(diagnostic).encode(),
        "application/json",
    )
    _step(
        db,
        run,
        StepId.EXECUTE,
        50,
        1100,
        status="failed",
        error=FAILED_ERROR,
        round=2,
        deliveries=2,
        output=first,
    )
    db.commit()
    return Stored(run, patch, output)


def store_hostile_review(db: Session) -> Stored:
    """A succeeded run whose diff and command output are the attacker's."""
    run = _approved_run(db, "succeeded", finished_at=_at(40))
    patch = _artifact(
        db,
        run,
        StepId.APPLY_PATCH,
        ArtifactKind.PATCH,
        "patch.diff",
        HOSTILE_PATCH.encode(),
        "text/x-diff",
    )
    output = _artifact(
        db,
        run,
        StepId.EXECUTE,
        ArtifactKind.COMMAND_OUTPUT,
        "command-output.txt",
        HOSTILE_OUTPUT.encode(),
        "text/plain; charset=utf-8",
    )
    _step(
        db,
        run,
        StepId.EXECUTE,
        37,
        1800,
        output={
            "argv": ["sh", "-c", f"echo {HOSTILE_MARKUP}\x1b[2J"],
            "exit_code": 0,
            "timed_out": False,
            "truncated": False,
            "output_bytes": len(HOSTILE_OUTPUT.encode()),
        },
    )
    db.commit()
    return Stored(run, patch, output)


def store_waiting_run(db: Session) -> Stored:
    """A plan waiting for a decision: nothing patched yet."""
    plan = json.dumps(PLAN).encode()
    run: Run = RunFactory(
        intent=IntentFactory(
            goal="Add a multiply function to calc.py with a test",
            submitted_by=SUBMITTER,
            base_commit=BASE_COMMIT,
            created_at=STARTED,
        ),
        waiting_input=True,
        plan_sha256=sha256_hex(plan),
        created_at=STARTED,
    )
    _artifact(
        db, run, StepId.COMPILE, ArtifactKind.PLAN_CARD, "plan.json", plan, "application/json"
    )
    _step(db, run, StepId.COMPILE, 0, 2500)
    OpenCodeCallFactory(
        run=run,
        step_id="CompileST",
        attempt=1,
        agent="plan",
        usage={"total_tokens": 1200, "cost_usd": 0.012},
        duration_ms=2400,
    )
    db.commit()
    return Stored(run)
