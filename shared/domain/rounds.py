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

from shared.domain.storable import UNSTORABLE
from shared.hashing import canonical_bytes, sha256_hex

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


REPAIR_OUTPUT_CHARS = 8000
"""How much of a failed verification's output a repair prompt quotes (its end: where a
test runner prints the failures and the summary)."""


@dataclass(frozen=True)
class RepairRequest:
    """What ApplyPatchST's repair round N is asked: make the failing verification pass."""

    repair: int  # 1 for the first repair of the run
    argv: tuple[str, ...]
    exit_code: int | None
    timed_out: bool
    output: str  # the command's output, its last REPAIR_OUTPUT_CHARS characters
    rule: str | None = None  # a rule it broke though it exited 0 (verification_ran_nothing)

    KIND = "repair"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "repair": self.repair,
            "argv": list(self.argv),
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "output": self.output,
            **({"rule": self.rule} if self.rule is not None else {}),
        }

    @classmethod
    def from_json(cls, value: object) -> RepairRequest:
        if not isinstance(value, dict) or value.get("kind") != cls.KIND:
            raise RoundInputError(f"not a repair request: {value!r:.200}")
        repair, argv, code = value.get("repair"), value.get("argv"), value.get("exit_code")
        timed_out, output = value.get("timed_out"), value.get("output")
        rule = value.get("rule")  # absent from a request stored before it existed
        if not (
            isinstance(repair, int)
            and repair >= 1
            and isinstance(argv, list)
            and all(isinstance(a, str) for a in argv)
            and (code is None or isinstance(code, int))
            and isinstance(timed_out, bool)
            and isinstance(output, str)
            and (rule is None or isinstance(rule, str))
        ):
            raise RoundInputError(f"malformed repair request: {value!r:.200}")
        return cls(repair, tuple(argv), code, timed_out, output, rule)


def repairs_done(round_input: dict[str, Any] | None) -> int:
    """How many repairs the run's ApplyPatchST has made, from its current round's input."""
    asked = effective_input(round_input)
    if asked is None or asked.get("kind") != RepairRequest.KIND:
        return 0
    return RepairRequest.from_json(asked).repair


def quoted_output(output: bytes) -> str:
    """The end of a command's output as text for a prompt (never more than the cap)."""
    text = output.decode("utf-8", errors="replace")
    if len(text) <= REPAIR_OUTPUT_CHARS:
        return text
    return (
        f"[... {len(text) - REPAIR_OUTPUT_CHARS} characters cut ...]\n"
        + text[-REPAIR_OUTPUT_CHARS:]
    )


@dataclass(frozen=True)
class Answer:
    """What DecideST's round after an escalation is told: every question it asked the
    approver so far, with the answer, oldest first."""

    exchanges: tuple[tuple[str, str], ...]  # (question, answer)
    answered_by: str

    KIND = "answer"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "answered_by": self.answered_by,
            "exchanges": [{"question": q, "answer": a} for q, a in self.exchanges],
        }

    @classmethod
    def from_json(cls, value: object) -> Answer:
        if not isinstance(value, dict) or value.get("kind") != cls.KIND:
            raise RoundInputError(f"not an answer: {value!r:.200}")
        by, raw = value.get("answered_by"), value.get("exchanges")
        if not isinstance(by, str) or not isinstance(raw, list) or not raw:
            raise RoundInputError(f"malformed answer: {value!r:.200}")
        exchanges = []
        for item in raw:
            if not (
                isinstance(item, dict)
                and isinstance(item.get("question"), str)
                and isinstance(item.get("answer"), str)
            ):
                raise RoundInputError(f"malformed answer: {value!r:.200}")
            exchanges.append((item["question"], item["answer"]))
        return cls(tuple(exchanges), by)


@dataclass(frozen=True)
class WaitingQuestion:
    """DecideST's question as an approver answers it: its words and how many questions
    were answered before it. Its digest names it among all of the run's questions (the
    same words asked again after an answer are another question): an answer is taken
    only for the question its sender was shown, as an approval only for the plan its
    approver read (a page's answer to one question was taken for the next one, which
    asked to delete the tests: red-team helper-97)."""

    text: str
    answered_before: int

    @property
    def sha256(self) -> str:
        return sha256_hex(
            canonical_bytes({"question": self.text, "answered_before": self.answered_before})
        )

    @classmethod
    def of(cls, output: object, round_input: dict[str, Any] | None) -> WaitingQuestion | None:
        """The question DecideST's ``output`` asks, after the answers its round was given
        (``round_input``); None if the output asks none."""
        question = output.get("question") if isinstance(output, dict) else None
        if not isinstance(question, str):
            return None
        asked = effective_input(round_input)
        before = (
            Answer.from_json(asked).exchanges if asked and asked.get("kind") == Answer.KIND else ()
        )
        return cls(question, len(before))


RETRY = "retry"
BUDGET = "budget"
RESUMING = frozenset({RETRY, BUDGET})
"""Kinds of round that resume the one before: an operator's retry of a failed step, and a
step resumed after its budget was raised (a retry counts in retry_count; a raise not)."""


def retry_input(
    requested_by: str,
    previous_error: str | None,
    resumes: dict[str, Any] | None,
    *,
    kind: str = RETRY,
) -> dict[str, Any]:
    """The input of a round that resumes a stopped step: who, why the last round ended,
    and the input of the round it resumes (a retried revision is still that revision)."""
    if kind not in RESUMING:
        raise ValueError(f"not a resuming round: {kind!r}")
    return {
        "kind": kind,
        "requested_by": requested_by,
        "previous_error": (previous_error or "")[:2000],
        "resumes": resumes,
    }


def effective_input(round_input: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the round was asked, through any retries: the input of the round the chain
    of retries resumes (None: the step's first round, asked nothing more)."""
    seen = 0
    while isinstance(round_input, dict) and round_input.get("kind") in RESUMING:
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
    if UNSTORABLE.search(comment):  # every entry point: the page's form had answered 500
        return "the comment holds a NUL character or a lone surrogate"
    return None
