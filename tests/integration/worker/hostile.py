"""A hostile model for in-process step tests: it answers chosen steps with chosen answers.

Stands in front of the real call protocol (ledger, compat server) and answers the steps it
has a script for itself (keyed by step id), after the step's lease was held, as a
prompt-injected model would: a plan that looks harmless, then a patch reaching beyond it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.worker.runtime import Runtime
from shared.domain.call_record import StepLedger
from shared.domain.step_lease import StepLease
from shared.opencode.calls import StructuredCall, StructuredResult, UnrecordedAnswers
from shared.opencode.ports import StructuredCalls
from shared.service.steps import StepLeases
from standins.oc_compat import edits
from standins.oc_compat.answers import edit_report

IDENT = ["-c", "user.name=t", "-c", "user.email=t@localhost", "-c", "commit.gpgsign=false"]


class HostileModel:
    def __init__(self, real: StructuredCalls, rt: Runtime) -> None:
        self.real = real
        self.rt = rt
        self.scripts: dict[str, dict[str, Any]] = {}
        self.actions: dict[str, Callable[[Path], None]] = {}  # what else it does on disk
        self.prompts: list[StructuredCall] = []

    def prompt_structured(
        self,
        call: StructuredCall,
        *,
        lease: StepLease | None = None,
        prepare: Callable[[], None] | None = None,
        seen: StepLedger | None = None,
        unrecorded: UnrecordedAnswers | None = None,
    ) -> StructuredResult:
        self.prompts.append(call)
        answer = self.scripts.get(call.step_id)
        if answer is None:
            return self.real.prompt_structured(
                call, lease=lease, prepare=prepare, seen=seen, unrecorded=unrecorded
            )
        if lease is not None:  # held as the real claim would, before answering
            StepLeases(self.rt.sessions).hold(lease)
        if prepare is not None:
            prepare()
        if call.step_id == "ApplyPatchST":  # the build agent edits, then reports
            diff, answer = edit_report(answer)
            edits.perform(Path(call.directory), diff)
        action = self.actions.get(call.step_id)
        if action is not None:  # as a daemon that ignored its rules could
            action(Path(call.directory))
        return StructuredResult(call.op_key, answer, "miss", {})

    def reject(self, op_key: str, reason: str) -> None:
        return None  # its answers never reach the ledger: nothing to record a verdict on

    def flush(self, unrecorded: UnrecordedAnswers) -> None:
        self.real.flush(unrecorded)

    def quiesce(self, run_id: str, step_id: str, directory: str) -> None:
        self.real.quiesce(run_id, step_id, directory)

    def close(self) -> None:
        self.real.close()


def hostile(rt: Runtime) -> HostileModel:
    """Put a hostile model in front of ``rt``'s calls (once); script it via ``.scripts``."""
    if isinstance(rt.oc, HostileModel):
        return rt.oc
    model = HostileModel(rt.oc, rt)
    rt.oc = model
    return model


def plan_of(*entries: dict[str, str]) -> dict[str, Any]:
    files = [{"why": "the intent needs it", **e} for e in entries]
    return {"design": "A small change.", "files": files, "risks": [], "tests": []}


def patch_of(diff: str, files: list[str] | None = None) -> dict[str, Any]:
    """What the build agent does: ``diff`` is performed on the worktree as tool edits; it
    reports ``files`` (default: the files the diff names)."""
    said = {} if files is None else {"files": files}
    return {"summary": "A small change.", "diff": diff, **said}


def commit_all(repo: Path, message: str) -> str:
    subprocess.run(["git", *IDENT, "add", "-A"], cwd=repo, check=True, capture_output=True)
    subprocess.run(
        ["git", *IDENT, "commit", "-qm", message], cwd=repo, check=True, capture_output=True
    )
    return git_out(repo, "rev-parse", "HEAD")


def git_out(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()
