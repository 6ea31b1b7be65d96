"""Agent answers are validated against their contracts, failing closed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.domain.contracts import (
    BUILD_OUTPUT_SCHEMA,
    EDIT_REPORT_SCHEMA,
    ERRORS_READ,
    MAX_ERRORS,
    PLAN_OUTPUT_SCHEMA,
    UNSTORABLE_SAID,
    ContractViolation,
    validate_answer,
)
from shared.domain.storable import storable_text

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


@pytest.mark.parametrize(
    ("schema", "answer", "where"),
    [
        (PLAN_OUTPUT_SCHEMA, {**PLAN, "design": "Add\x00 multiply."}, "design"),
        (
            PLAN_OUTPUT_SCHEMA,
            {**PLAN, "files": [{"path": "calc.py", "change": "modify", "why": "\x00"}]},
            "files/0/why",
        ),
        (EDIT_REPORT_SCHEMA, {"summary": "s", "files": ["calc\x00.py"]}, "files/0"),
        (
            BUILD_OUTPUT_SCHEMA,
            {"next_action": "verify", "argv": ["python3", "-c", "1\x00"], "reason": "r"},
            "argv/2",
        ),
        (
            BUILD_OUTPUT_SCHEMA,
            {"next_action": "verify", "argv": [], "reason": "r", "k\x00": 1},
            "<key>",
        ),
        (PLAN_OUTPUT_SCHEMA, {**PLAN, "tests": ["ok", "lone \ud800 high"]}, "tests/1"),
        (PLAN_OUTPUT_SCHEMA, {**PLAN, "risks": ["\udfff"]}, "risks/0"),
    ],
    ids=[
        "plan-design",
        "plan-why",
        "report-file",
        "decision-argv",
        "a-key",
        "a-lone-high-surrogate",
        "a-lone-low-surrogate",
    ],
)
def test_a_string_holding_a_nul_or_a_lone_surrogate_breaks_every_contract(
    schema: dict[str, Any], answer: dict[str, Any], where: str
) -> None:
    """Postgres cannot store either: an answer holding one would be stored otherwise than
    it was judged and hashed, so it is refused first, naming where it is."""
    with pytest.raises(ContractViolation) as refused:
        validate_answer(schema, answer)
    assert f"{where}: {UNSTORABLE_SAID}" in refused.value.errors
    assert storable_text(str(refused.value)) == str(refused.value)


def test_an_astral_character_is_text_like_any_other() -> None:
    """A surrogate pair in the answer's JSON is one character (an emoji), not a lone one."""
    smiling = {**PLAN, "design": json.loads('"Add multiply \\ud83d\\ude00"')}
    assert smiling["design"].endswith("\U0001f600")
    assert validate_answer(PLAN_OUTPUT_SCHEMA, smiling) == smiling


def test_violations_past_those_read_are_said_to_be_many_never_all_read() -> None:
    few = {"files": [1] * 30}
    with pytest.raises(ContractViolation) as counted:
        validate_answer(PLAN_OUTPUT_SCHEMA, few)
    said = counted.value.errors
    assert len(said) == MAX_ERRORS + 1
    assert said[-1].endswith("more violations")
    assert not said[-1].startswith("... and many")
    many = {"files": [1] * (ERRORS_READ * 3)}
    with pytest.raises(ContractViolation) as read_so_far:
        validate_answer(PLAN_OUTPUT_SCHEMA, many)
    assert read_so_far.value.errors[-1] == "... and many more violations"
