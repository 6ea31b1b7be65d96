"""Property tests: hostile or random input never corrupts state or escapes the error tree."""

from __future__ import annotations

import contextlib
import string
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import shared.redact as r
from shared.config import ConfigError, Settings
from shared.domain.change_check import (
    IndexChange,
    check_changes,
    parse_numstat,
    parse_raw,
    parse_raw_numstat,
)
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA, ContractViolation, validate_answer
from shared.domain.policy import Policy
from shared.domain.run_machine import (
    Answered,
    BudgetExhausted,
    BudgetRaised,
    Cancel,
    ChangesRequested,
    Escalated,
    Event,
    IllegalTransition,
    NothingToVerify,
    PlanApproved,
    PlanRejected,
    Repaired,
    Retried,
    RunStatus,
    Start,
    StepFailed,
    StepId,
    StepSucceeded,
    VerificationFailed,
    transition,
)
from shared.redact import REDACTED, redact

EVENTS = st.one_of(
    st.just(Start()),
    st.just(PlanApproved()),
    st.just(PlanRejected()),
    st.just(ChangesRequested()),
    st.booleans().map(VerificationFailed),
    st.just(Repaired()),
    st.just(NothingToVerify()),
    st.just(Escalated()),
    st.just(Answered(approved=False)),
    st.sampled_from(list(StepId)).map(BudgetExhausted),
    st.sampled_from(list(StepId)).map(lambda step: BudgetRaised(step, approved=False)),
    st.just(Cancel()),
    st.sampled_from(list(StepId)).map(StepSucceeded),
    st.sampled_from(list(StepId)).map(StepFailed),
    st.sampled_from(list(StepId)).map(lambda step: Retried(step, approved=False)),
)


@given(st.lists(EVENTS, max_size=40))
def test_any_event_sequence_keeps_the_run_machine_sound(events: list[Event]) -> None:
    status = RunStatus.QUEUED
    approved = False
    for event in events:
        if isinstance(event, Retried):  # the caller says truthfully whether it was approved
            event = Retried(event.step, approved=approved)
        if isinstance(event, Answered):
            event = Answered(approved=approved)
        if isinstance(event, BudgetRaised):
            event = BudgetRaised(event.step, approved=approved)
        try:
            move = transition(status, event)
        except IllegalTransition:
            continue
        assert not status.is_terminal or (
            isinstance(event, Retried) and status is RunStatus.FAILED
        ), "nothing moves an ended run but an operator's retry of a failed one"
        if isinstance(event, PlanApproved):
            approved = True
        if isinstance(event, ChangesRequested):
            assert move.dispatch is StepId.COMPILE, "a revision is compiled, never applied"
            approved = False  # the next plan needs an approval of its own
        if move.dispatch in {StepId.APPLY_PATCH, StepId.DECIDE, StepId.EXECUTE}:
            assert approved, "no code-changing step before approval"
        if move.to_status is RunStatus.SUCCEEDED:
            assert approved
        status = move.to_status


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(JSONISH)
def test_any_agent_answer_is_accepted_or_refused_with_a_contract_violation(answer: Any) -> None:
    try:
        accepted = validate_answer(PLAN_OUTPUT_SCHEMA, answer)
    except ContractViolation as exc:
        errors = exc.errors
        assert errors, "a refusal names what is wrong"
    else:
        assert accepted == answer


PATHY = st.text(alphabet=string.ascii_letters + "./\\-_ ", max_size=30)


@given(PATHY, PATHY)
def test_a_change_is_confined_or_refused_never_crashing(old: str, new: str) -> None:
    change = IndexChange("R", new, "100644", "100644", "0" * 40, old)
    approved = {"files": [{"path": new, "change": "rename", "from": old, "why": ""}]}
    report = check_changes([change], approved, Policy(forbidden_paths=()))
    refused = {p for v in report.violations if v.rule == "confinement" for p in v.paths}
    for path in {old, new} - refused:
        assert path
        assert not path.startswith("/")
        assert ".." not in path.split("/")
        assert ".git" not in [part.casefold() for part in path.split("/")]


@given(st.text(max_size=200))
def test_arbitrary_text_as_gits_answer_never_crashes_the_parsers(text: str) -> None:
    with contextlib.suppress(ValueError, IndexError):
        parse_raw(text)
    with contextlib.suppress(ValueError, IndexError):
        parse_numstat(text)
    with contextlib.suppress(ValueError, IndexError):
        parse_raw_numstat(text)


@given(JSONISH)
def test_redaction_is_idempotent_and_blanks_every_credential_key(value: Any) -> None:
    once = redact({"payload": value, "api_key": value})
    assert once["api_key"] == REDACTED
    assert redact(once) == once


SECRETISH = st.lists(
    st.sampled_from(
        ["password=", "token = ", "://", "u:p@", "https://a:b@h/", "sk-", "a" * 20, " ", "=", "'"]
    )
    | st.text(max_size=12),
    max_size=12,
).map("".join)


@settings(max_examples=500)
@given(SECRETISH)
def test_redaction_skips_a_pattern_only_where_it_could_not_match(text: str) -> None:
    """redact_text skips the URL and pair scans on text without "://" or "=": the result
    is the one every pattern applied in turn gives."""
    full = r._SECRET_VALUE.sub(REDACTED, text)
    full = r._URL_PASSWORD.sub(rf"\1{REDACTED}\2", full)
    full = r._SECRET_PAIR.sub(rf"\1{REDACTED}", full)
    assert r.redact_text(text) == full


@settings(max_examples=200)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "OC_TIMEOUT_MS",
                "RANDOM_SEED",
                "APPROVAL_POLL_S",
                "KODO_SCHEMA_RETRIES",
                "KODO_STEP_LEASE_S",
            ]
        ),
        st.text(max_size=12),
    )
)
def test_any_environment_gives_settings_or_a_config_error(env: dict[str, str]) -> None:
    with contextlib.suppress(ConfigError):
        Settings.from_env(env)
