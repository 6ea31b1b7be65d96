"""What the run page shows besides the plan: the diff, the verification, the diagnostics,
the step timeline and the artifact list, read in the page's one session.

Everything here is stored evidence, read as it is: the patch and command output are the
artifacts' bytes (decoded, never executed), the timeline is ``step_runs`` (each step's
current round) and ``step_rounds`` (its ended ones) with the ledger's calls counted
into the round whose attempts they are.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from shared.db.models import Artifact, OpenCodeCall, StepRound, StepRun
from shared.db.repos.ledger import LedgerRepo
from shared.db.repos.run_history import ended_rounds
from shared.db.repos.steps import ArtifactRepo, StepRunRepo
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind
from shared.domain.webhooks import DeliveryStatus
from shared.service.webhooks import DeliveryView, list_deliveries

from .diff_view import ParsedPatch, parse_patch
from .reads import settled_spend

MAX_SHOWN_CHARS = 200_000
"""Characters of one artifact the page shows inline; the link serves all of it."""


@dataclass(frozen=True)
class TimelineEntry:
    """One round of one step: its checkpoint, and the provider calls it made."""

    step_id: str
    round: int
    status: str
    deliveries: int
    attempts: list[int]
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    tokens: int
    cost_usd: float
    error: str | None
    current: bool  # the step's current round (its step_runs row), not an ended one


@dataclass(frozen=True)
class Shown:
    """An artifact's text for the page: decoded (invalid UTF-8 replaced) and capped."""

    artifact: Artifact
    text: str
    cut: int  # characters not shown inline


@dataclass(frozen=True)
class Patch:
    round: int
    shown: Shown
    parsed: ParsedPatch


@dataclass(frozen=True)
class Verification:
    """One ExecuteST round: the command it ran and what it printed."""

    round: int
    command: str | None
    exit_code: int | None
    timed_out: bool
    truncated: bool
    output_bytes: int | None
    output: Shown | None


@dataclass(frozen=True)
class Review:
    timeline: list[TimelineEntry]
    patches: list[Patch]  # newest first
    verifications: list[Verification]  # newest first
    diagnostics: list[Shown]
    artifacts: list[Artifact]
    webhooks: list[DeliveryView]  # newest first, each with its attempts


def _text(artifact: Artifact) -> str:
    return artifact.content.decode("utf-8", errors="replace")


def _shown(artifact: Artifact) -> Shown:
    text = _text(artifact)
    cut = max(0, len(text) - MAX_SHOWN_CHARS)
    return Shown(artifact, text[:MAX_SHOWN_CHARS], cut)


def _pretty(artifact: Artifact) -> Shown:
    """A diagnostic's JSON indented for reading (its bytes as they are if not JSON)."""
    try:
        body = json.loads(artifact.content)
    except ValueError:
        return _shown(artifact)
    text = json.dumps(body, indent=2, ensure_ascii=False, sort_keys=True)
    cut = max(0, len(text) - MAX_SHOWN_CHARS)
    return Shown(artifact, text[:MAX_SHOWN_CHARS], cut)


def round_of(name: str, base: str) -> int | None:
    """The round an artifact name carries (``patch.r2.diff`` of ``patch.diff``: 2)."""
    if name == base:
        return 1
    stem, dot, ext = base.rpartition(".")
    pattern = (
        rf"{re.escape(stem)}\.r(\d+)\.{re.escape(ext)}" if dot else rf"{re.escape(base)}\.r(\d+)"
    )
    found = re.fullmatch(pattern, name)
    return int(found.group(1)) if found else None


def _entry(
    row: StepRun | StepRound, calls: list[OpenCodeCall], next_base: int | None, current: bool
) -> TimelineEntry:
    mine = [
        c
        for c in calls
        if c.step_id == row.step_id
        and c.attempt > row.attempt_base
        and (next_base is None or c.attempt <= next_base)
    ]
    tokens, cost_usd = settled_spend(mine)
    return TimelineEntry(
        step_id=row.step_id,
        round=row.round,
        status=row.status,
        deliveries=row.deliveries,
        attempts=[c.attempt for c in mine],
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_ms=row.duration_ms,
        tokens=tokens,
        cost_usd=cost_usd,
        error=row.error,
        current=current,
    )


def timeline(
    steps: list[StepRun], rounds: list[StepRound], calls: list[OpenCodeCall]
) -> list[TimelineEntry]:
    """Every round of every step, in the order they began."""
    entries: list[TimelineEntry] = []
    for step in steps:
        earlier = sorted((r for r in rounds if r.step_id == step.step_id), key=lambda r: r.round)
        bases = ([r.attempt_base for r in earlier[1:]] + [step.attempt_base])[: len(earlier)]
        entries.extend(
            _entry(r, calls, base, False) for r, base in zip(earlier, bases, strict=True)
        )
        entries.append(_entry(step, calls, None, True))
    return sorted(entries, key=lambda e: (e.started_at, e.step_id, e.round))


def _command(output: dict[str, Any] | None) -> str | None:
    argv = (output or {}).get("argv")
    if not isinstance(argv, list):
        return None
    return shlex.join(str(a) for a in argv)


def _verifications(
    execute: list[tuple[int, dict[str, Any] | None]], outputs: dict[int, Artifact]
) -> list[Verification]:
    made: list[Verification] = []
    for number, output in sorted(execute, reverse=True):
        done = output or {}
        exit_code = done.get("exit_code")
        size = done.get("output_bytes")
        artifact = outputs.get(number)
        made.append(
            Verification(
                round=number,
                command=_command(output),
                exit_code=exit_code if isinstance(exit_code, int) else None,
                timed_out=done.get("timed_out") is True,
                truncated=done.get("truncated") is True,
                output_bytes=size if isinstance(size, int) else None,
                output=_shown(artifact) if artifact is not None else None,
            )
        )
    return made


def _by_round(artifacts: list[Artifact], step: StepId, base: str) -> dict[int, Artifact]:
    found: dict[int, Artifact] = {}
    for artifact in artifacts:
        number = round_of(artifact.name, base) if artifact.step_id == step.value else None
        if number is not None:
            found[number] = artifact
    return found


def review_of(s: Session, run_id: str) -> Review:
    """The run's evidence for the page (the run itself is read, and 404s, by the caller)."""
    artifacts = ArtifactRepo(s).for_run(run_id)
    steps = StepRunRepo(s).for_run(run_id)
    rounds = ended_rounds(s, run_id)
    calls = LedgerRepo(s).for_run(run_id)
    patches = _by_round(artifacts, StepId.APPLY_PATCH, "patch.diff")
    outputs = _by_round(artifacts, StepId.EXECUTE, "command-output.txt")
    execute = [(r.round, r.output) for r in rounds if r.step_id == StepId.EXECUTE.value]
    execute += [(st.round, st.output) for st in steps if st.step_id == StepId.EXECUTE.value]
    ran = {number for number, _ in execute}
    execute += [(number, None) for number in outputs if number not in ran]
    return Review(
        timeline=timeline(steps, rounds, calls),
        patches=[
            Patch(number, _shown(artifact), parse_patch(_text(artifact)))
            for number, artifact in sorted(patches.items(), reverse=True)
        ],
        verifications=_verifications(execute, outputs),
        diagnostics=[_pretty(a) for a in artifacts if a.kind == ArtifactKind.DIAGNOSTIC.value],
        webhooks=[  # a delivery skipped (no webhook configured) told no one: not shown
            d for d in list_deliveries(s, run_id=run_id) if d.status != DeliveryStatus.SKIPPED
        ],
        artifacts=artifacts,
    )
