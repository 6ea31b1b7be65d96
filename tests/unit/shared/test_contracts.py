"""Agent answers are validated against their contracts, failing closed."""

from __future__ import annotations

from typing import Any

import pytest

from shared.domain.contracts import (
    BUILD_OUTPUT_SCHEMA,
    EDIT_REPORT_SCHEMA,
    PLAN_OUTPUT_SCHEMA,
    ContractViolation,
    validate_answer,
)

PLAN: dict[str, Any] = {
    "design": "Add multiply next to add.",
    "files": [{"path": "calc.py", "change": "modify", "why": "home of add"}],
    "risks": ["none"],
    "tests": ["unittest"],
}


def test_a_complete_plan_is_accepted_as_is() -> None:
    assert validate_answer(PLAN_OUTPUT_SCHEMA, PLAN) == PLAN


def test_a_rename_names_its_old_path_in_from() -> None:
    entry = {"path": "new.py", "change": "rename", "from": "old.py", "why": "clearer name"}
    renaming = {**PLAN, "files": [entry]}
    assert validate_answer(PLAN_OUTPUT_SCHEMA, renaming) == renaming


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        ({k: v for k, v in PLAN.items() if k != "risks"}, "'risks' is a required property"),
        ({**PLAN, "files": []}, "files"),
        ({**PLAN, "files": [{"path": "a", "change": "chmod", "why": ""}]}, "files/0/change"),
        ({**PLAN, "files": [{"path": "a", "change": "rename", "why": ""}]}, "'from' is a required"),
        (
            {**PLAN, "files": [{"path": "a", "change": "modify", "from": "b", "why": ""}]},
            "files/0",
        ),
        ({**PLAN, "extra": 1}, "Additional properties"),
        ("a plan in prose", "<root>"),
        (None, "<root>"),
    ],
)
def test_a_plan_that_breaks_the_contract_is_refused_with_the_field_named(
    answer: object, complaint: str
) -> None:
    with pytest.raises(ContractViolation, match=complaint):
        validate_answer(PLAN_OUTPUT_SCHEMA, answer)


def test_an_edit_report_names_the_changed_files_and_carries_no_diff() -> None:
    with pytest.raises(ContractViolation, match="files"):
        validate_answer(EDIT_REPORT_SCHEMA, {"summary": "s"})
    with pytest.raises(ContractViolation, match="diff"):
        validate_answer(EDIT_REPORT_SCHEMA, {"summary": "s", "files": [], "diff": "--- a/x"})
    assert validate_answer(EDIT_REPORT_SCHEMA, {"summary": "s", "files": ["calc.py"]})


def test_a_decision_is_verify_done_or_escalate_and_nothing_else() -> None:
    """The schema admits the three routes; DecideST itself refuses a verify without argv,
    an escalation without a question and a done the policy does not allow."""
    good = {"next_action": "verify", "argv": ["python3", "-m", "unittest"], "reason": "tests"}
    assert validate_answer(BUILD_OUTPUT_SCHEMA, good) == good
    asking = {"next_action": "escalate", "argv": [], "reason": "unsure", "question": "Which?"}
    assert validate_answer(BUILD_OUTPUT_SCHEMA, asking) == asking
    done = {"next_action": "done", "argv": [], "reason": "docs only"}
    assert validate_answer(BUILD_OUTPUT_SCHEMA, done) == done
    with pytest.raises(ContractViolation):
        validate_answer(BUILD_OUTPUT_SCHEMA, {**good, "next_action": "skip"})
    with pytest.raises(ContractViolation):
        validate_answer(BUILD_OUTPUT_SCHEMA, {**good, "argv": [""]})
    with pytest.raises(ContractViolation):
        validate_answer(BUILD_OUTPUT_SCHEMA, {**good, "question": "x" * 2001})
