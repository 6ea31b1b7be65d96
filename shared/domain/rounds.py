"""Rounds of a step: a step that runs again for the same run (pure).

A run's CompileST runs once per plan revision: an approver who requests changes starts
the next round. Each round is a fresh start of the step's checkpoint (``step_runs``)
with its own input, stored before the step is sent so every delivery builds the same
prompt; its attempts continue the ledger's numbering (a new op_key per attempt, never a
payment replayed from an earlier round), and its artifacts carry the round in their name
(``plan.r2.json``), so no round's evidence overwrites another's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COMMENT_MAX_CHARS = 4000
"""A reviewer's comment is quoted to the agent: bounded like any prompt input."""


def artifact_name(name: str, round_: int) -> str:
    """The name a round's artifact is stored under: round 1 keeps the name, round N
    inserts ``.rN`` before the extension (``plan.json`` -> ``plan.r2.json``)."""
    if round_ < 1:
        raise ValueError(f"rounds count from 1, not {round_}")
    if round_ == 1:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return f"{name}.r{round_}"
    return f"{stem}.r{round_}.{ext}"


class RoundInputError(ValueError):
    """A stored round input that does not read as one (fail closed: never guess)."""


@dataclass(frozen=True)
class ChangeRequest:
    """What CompileST's round N is asked: revise the plan ``previous_plan_sha256`` as the
    reviewer's ``comment`` says. ``earlier_plans`` are the digests of every revision so
    far: the agent must answer with a plan that is none of them."""

    revision: int
    comment: str
    requested_by: str
    previous_plan_sha256: str
    earlier_plans: tuple[str, ...]

    KIND = "changes_requested"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "revision": self.revision,
            "comment": self.comment,
            "requested_by": self.requested_by,
            "previous_plan_sha256": self.previous_plan_sha256,
            "earlier_plans": list(self.earlier_plans),
        }

    @classmethod
    def from_json(cls, value: object) -> ChangeRequest:
        if not isinstance(value, dict) or value.get("kind") != cls.KIND:
            raise RoundInputError(f"not a change request: {value!r:.200}")
        revision, comment = value.get("revision"), value.get("comment")
        by, previous = value.get("requested_by"), value.get("previous_plan_sha256")
        earlier = value.get("earlier_plans")
        if not (
            isinstance(revision, int)
            and revision >= 2
            and isinstance(comment, str)
            and isinstance(by, str)
            and isinstance(previous, str)
            and isinstance(earlier, list)
            and all(isinstance(d, str) for d in earlier)
        ):
            raise RoundInputError(f"malformed change request: {value!r:.200}")
        return cls(revision, comment, by, previous, tuple(earlier))


RETRY = "retry"


def retry_input(
    requested_by: str, previous_error: str | None, resumes: dict[str, Any] | None
) -> dict[str, Any]:
    """The input of a round an operator's retry starts: who, why the last round ended,
    and the input of the round it resumes (a retried revision is still that revision)."""
    return {
        "kind": RETRY,
        "requested_by": requested_by,
        "previous_error": (previous_error or "")[:2000],
        "resumes": resumes,
    }


def effective_input(round_input: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the round was asked, through any retries: the input of the round the chain
    of retries resumes (None: the step's first round, asked nothing more)."""
    seen = 0
    while isinstance(round_input, dict) and round_input.get("kind") == RETRY:
        seen += 1
        if seen > 1000:  # pragma: no cover - a chain no retry count reaches
            raise RoundInputError("retry chain too long")
        resumed = round_input.get("resumes")
        if resumed is not None and not isinstance(resumed, dict):
            raise RoundInputError(f"malformed retry input: {round_input!r:.200}")
        round_input = resumed
    return round_input


def revision_refusal(revisions: int, max_revisions: int) -> str | None:
    """Why another revision may not be requested (None: it may). ``revisions`` is how
    many plans the run has had; the limit bounds what one run may spend on planning."""
    if revisions >= max_revisions:
        return (
            f"revision_limit: this run has had {revisions} plan revision(s), the most"
            f" KODO_MAX_REVISIONS={max_revisions} allows; approve or reject this plan, or"
            " submit a new intent"
        )
    return None


def comment_refusal(comment: str | None) -> str | None:
    """Why a request-changes comment is refused (None: it is usable)."""
    if comment is None or not comment.strip():
        return "a request for changes needs a comment saying what to change"
    if len(comment) > COMMENT_MAX_CHARS:
        return f"the comment is {len(comment)} characters; at most {COMMENT_MAX_CHARS}"
    return None
