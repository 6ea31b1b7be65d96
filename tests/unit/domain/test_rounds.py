"""Rounds of a step and plan revisions: names, stored inputs and limits (pure)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from shared.domain.plan_diff import plan_diff, plan_lines
from shared.domain.rounds import (
    COMMENT_MAX_CHARS,
    REPAIR_OUTPUT_CHARS,
    Answer,
    ChangeRequest,
    RepairRequest,
    RoundInputError,
    WaitingQuestion,
    artifact_name,
    comment_refusal,
    effective_input,
    quoted_output,
    repairs_done,
    retry_input,
    revision_refusal,
)


@pytest.mark.parametrize(
    ("name", "round_", "stored"),
    [
        ("plan.json", 1, "plan.json"),
        ("plan.json", 2, "plan.r2.json"),
        ("diagnostic.json", 7, "diagnostic.r7.json"),
        ("patch.diff", 3, "patch.r3.diff"),
        ("output", 2, "output.r2"),
        (".hidden", 2, ".hidden.r2"),
    ],
)
def test_round_n_artifacts_carry_the_round_so_none_overwrites_another(
    name: str, round_: int, stored: str
) -> None:
    assert artifact_name(name, round_) == stored


def test_rounds_count_from_one() -> None:
    with pytest.raises(ValueError, match="count from 1"):
        artifact_name("plan.json", 0)


REQUEST = ChangeRequest(
    revision=2,
    comment="Split it.",
    requested_by="rita",
    previous_plan_sha256="a" * 64,
    earlier_plans=("a" * 64,),
)


def test_a_change_request_reads_back_as_stored() -> None:
    assert ChangeRequest.from_json(REQUEST.to_json()) == REQUEST


@pytest.mark.parametrize(
    "stored",
    [
        None,
        [],
        {"kind": "repair"},
        {**REQUEST.to_json(), "revision": 1},
        {**REQUEST.to_json(), "revision": "2"},
        {**REQUEST.to_json(), "comment": None},
        {**REQUEST.to_json(), "earlier_plans": "a"},
        {**REQUEST.to_json(), "earlier_plans": [1]},
        {k: v for k, v in REQUEST.to_json().items() if k != "previous_plan_sha256"},
    ],
)
def test_a_malformed_stored_request_is_refused_never_guessed(stored: Any) -> None:
    with pytest.raises(RoundInputError):
        ChangeRequest.from_json(stored)


def test_the_revision_limit_counts_every_plan_including_the_first() -> None:
    assert revision_refusal(4, 5) is None
    refused = revision_refusal(5, 5)
    assert refused is not None
    assert refused.startswith("revision_limit:")
    assert "KODO_MAX_REVISIONS=5" in refused


@pytest.mark.parametrize("comment", [None, "", " \n\t"])
def test_a_request_needs_a_comment(comment: str | None) -> None:
    assert comment_refusal(comment) is not None


def test_a_comment_is_bounded() -> None:
    assert comment_refusal("x" * COMMENT_MAX_CHARS) is None
    assert comment_refusal("x" * (COMMENT_MAX_CHARS + 1)) is not None


FIRST = {
    "design": "Add multiply.",
    "files": [{"path": "calc.py", "change": "modify", "why": "define it"}],
    "risks": ["floats"],
    "tests": ["unittest"],
}


def test_a_plan_reads_as_labelled_lines() -> None:
    assert plan_lines(FIRST) == [
        'design: "Add multiply."',
        'file: modify "calc.py": "define it"',
        'risk: "floats"',
        'test: "unittest"',
    ]


def test_the_diff_marks_what_the_revision_added_and_removed() -> None:
    second = {
        **FIRST,
        "files": [*FIRST["files"], {"path": "README.md", "change": "modify", "why": "docs"}],
        "risks": [],
    }
    diff = [(line.sign, line.text) for line in plan_diff(FIRST, second)]
    assert diff == [
        (" ", 'design: "Add multiply."'),
        (" ", 'file: modify "calc.py": "define it"'),
        ("-", 'risk: "floats"'),
        ("+", 'file: modify "README.md": "docs"'),
        (" ", 'test: "unittest"'),
    ]


def test_anything_that_is_not_a_plan_still_diffs_as_one_line() -> None:
    assert next(line.kind for line in plan_diff(["odd"], FIRST)) == "removed"


def test_a_retried_round_is_asked_what_the_round_it_resumes_was_asked() -> None:
    once = retry_input("ops", "boom", REQUEST.to_json())
    twice = retry_input("ops", "boom again", once)
    assert effective_input(twice) == REQUEST.to_json()
    assert effective_input(retry_input("ops", None, None)) is None
    assert effective_input(None) is None


def test_a_retry_input_resuming_something_unreadable_is_refused() -> None:
    with pytest.raises(RoundInputError):
        effective_input({"kind": "retry", "resumes": "plan"})


REPAIR = RepairRequest(
    repair=1, argv=("python3", "-m", "unittest"), exit_code=1, timed_out=False, output="FAILED"
)


def test_a_repair_request_reads_back_and_counts_the_repairs_made() -> None:
    assert RepairRequest.from_json(REPAIR.to_json()) == REPAIR
    ran_nothing = replace(REPAIR, exit_code=0, rule="verification_ran_nothing")
    assert RepairRequest.from_json(ran_nothing.to_json()) == ran_nothing
    assert "rule" not in REPAIR.to_json(), "a request stored before the rule reads the same"
    assert repairs_done(None) == 0
    assert repairs_done(REPAIR.to_json()) == 1
    assert repairs_done(retry_input("ops", "x", REPAIR.to_json())) == 1, "a retried repair"
    assert repairs_done(REQUEST.to_json()) == 0


@pytest.mark.parametrize(
    "stored",
    [
        {**REPAIR.to_json(), "repair": 0},
        {**REPAIR.to_json(), "argv": "python3"},
        {**REPAIR.to_json(), "exit_code": "1"},
        {**REPAIR.to_json(), "timed_out": None},
        {**REPAIR.to_json(), "output": b"x"},
        {**REPAIR.to_json(), "rule": 1},
    ],
)
def test_a_malformed_repair_request_is_refused(stored: Any) -> None:
    with pytest.raises(RoundInputError):
        RepairRequest.from_json(stored)


def test_a_repair_quotes_the_end_of_the_output_where_the_failures_are() -> None:
    assert quoted_output(b"short") == "short"
    long = b"x" * REPAIR_OUTPUT_CHARS + b"FAILED (failures=1)"
    quoted = quoted_output(long)
    assert quoted.endswith("FAILED (failures=1)")
    assert quoted.startswith("[... 19 characters cut ...]")
    assert quoted_output(b"\xff\xfe bad utf-8") == "\ufffd\ufffd bad utf-8"


def test_a_step_resumed_after_a_budget_raise_is_asked_what_it_was_asked() -> None:
    raised = retry_input("rita", "budget: ...", REQUEST.to_json(), kind="budget")
    assert raised["kind"] == "budget"
    assert effective_input(raised) == REQUEST.to_json()
    with pytest.raises(ValueError, match="not a resuming round"):
        retry_input("rita", None, None, kind="repair")


def test_two_different_renames_never_read_as_the_same_line() -> None:
    """Laid out bare, a rename of docs/a.md whose why names test_calc.py and a rename
    of test_calc.py to a path naming docs/a.md were one line: the revision swapping
    them was shown unchanged (red-team helper-97)."""
    first = {
        **FIRST,
        "files": [
            {
                "path": "docs/b.md",
                "change": "rename",
                "from": "docs/a.md",
                "why": "keep (from x.py): t",
            }
        ],
    }
    second = {
        **FIRST,
        "files": [
            {
                "path": "docs/b.md (from docs/a.md): keep",
                "change": "rename",
                "from": "x.py",
                "why": "t",
            }
        ],
    }
    assert plan_lines(first) != plan_lines(second)
    changed = [line.text for line in plan_diff(first, second) if line.kind == "added"]
    assert changed == ['file: rename "docs/b.md (from docs/a.md): keep" from "x.py": "t"']


def test_a_risk_with_a_line_break_stays_one_line() -> None:
    plan = {**FIRST, "risks": ["none\nfile: modify README.md: docs"]}
    assert 'risk: "none\nfile: modify README.md: docs"' in plan_lines(plan), "one line"


def test_a_waiting_question_is_named_by_its_words_and_the_answers_before_it() -> None:
    """An answer names the question it was written under: the same words asked again
    after an answer are another question, with another digest."""
    output = {"next_action": "escalate", "question": "Cover negatives?"}
    first = WaitingQuestion.of(output, None)
    answered = Answer((("Cover negatives?", "No."),), "alice").to_json()
    again = WaitingQuestion.of(output, retry_input("ops", None, answered))
    assert first is not None
    assert again is not None
    assert (first.answered_before, again.answered_before) == (0, 1)
    assert first.sha256 != again.sha256
    assert first.sha256 == WaitingQuestion("Cover negatives?", 0).sha256
    assert WaitingQuestion.of({"next_action": "verify"}, None) is None
