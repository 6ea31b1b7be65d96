"""The attempt loop: one ledger row per attempt, backoff for the provider's failures only."""

from __future__ import annotations

from pathlib import Path

from services.worker.steps.attempts import AttemptLoop
from shared.domain.contracts import BUILD_OUTPUT_SCHEMA
from shared.domain.run_machine import StepId
from shared.opencode.calls import StructuredResult
from tests.fakes.agent import FakeAgent, ScriptedTurn, http_500, no_answer_in_time, unknown_model
from tests.fakes.steps import StepWorld

ANSWER = {"next_action": "verify", "argv": ["pytest"], "reason": "tests"}


def _loop(world: StepWorld) -> AttemptLoop:
    ctx = world.context(StepId.DECIDE, Path("/nonexistent"))
    return AttemptLoop(ctx, StepId.DECIDE, "plan", BUILD_OUTPUT_SCHEMA, "/w")


def _prompt(attempt: int, rejected: list[str]) -> str:
    return f"attempt {attempt}; rejected: {rejected}"


def _accepted(loop: AttemptLoop) -> StructuredResult | None:
    """The first valid answer, accepted as a step does (it returns on it)."""
    return next(loop.answers(_prompt), None)


def test_a_first_valid_answer_is_yielded_without_waiting() -> None:
    world = StepWorld(FakeAgent(ScriptedTurn(answer=ANSWER)))
    loop = _loop(world)
    accepted = _accepted(loop)
    assert accepted is not None
    assert accepted.answer == ANSWER
    assert [r["status"] for r in loop.records] == ["succeeded"]
    assert world.clock.slept == []
    assert world.leases.held == 0


def test_an_http_500_is_retried_after_an_exponential_backoff() -> None:
    world = StepWorld(
        FakeAgent(ScriptedTurn(error=http_500()), ScriptedTurn(error=no_answer_in_time()))
    )
    world.agent.will(ScriptedTurn(answer=ANSWER))
    loop = _loop(world)
    accepted = _accepted(loop)
    assert accepted is not None
    assert accepted.answer == ANSWER
    assert [r["kind"] for r in loop.records[:2]] == ["transient", "timeout"]
    assert world.clock.slept == [0.5, 1.0]  # retry_backoff_s, doubled
    assert len(world.agent.sent) == 3
    assert "OpenCodeServerError" in world.agent.sent[1].text  # the next prompt says why


def test_a_configuration_error_ends_the_loop_at_once() -> None:
    world = StepWorld(FakeAgent(ScriptedTurn(error=unknown_model())))
    loop = _loop(world)
    assert _accepted(loop) is None
    assert len(world.agent.sent) == 1
    assert world.clock.slept == []
    failure = loop.failure("valid decision")
    assert failure.error is not None
    assert failure.error.startswith("configuration error")


def test_a_schema_failure_is_retried_at_once_and_the_budget_is_named_when_spent() -> None:
    bad = ScriptedTurn(answer={"argv": []})
    world = StepWorld(FakeAgent(bad, bad, bad))
    loop = _loop(world)
    assert _accepted(loop) is None
    assert world.clock.slept == []  # the answer, not the provider, failed
    assert loop.failure("valid decision").error == "no valid decision after 3 attempts"


def test_a_provider_failing_every_attempt_is_named_in_the_error() -> None:
    world = StepWorld(FakeAgent(*(ScriptedTurn(error=http_500()) for _ in range(3))))
    loop = _loop(world)
    assert _accepted(loop) is None
    error = loop.failure("valid decision").error or ""
    assert "the provider failed every attempt" in error
    assert "HTTP 500" in error
    assert world.clock.slept == [0.5, 1.0]  # no wait after the last attempt


def test_a_redelivered_loop_replays_recorded_attempts_without_sending_or_waiting() -> None:
    world = StepWorld(FakeAgent(ScriptedTurn(error=http_500()), ScriptedTurn(answer=ANSWER)))
    _accepted(_loop(world))
    world.clock.slept.clear()
    again = _accepted(_loop(world))  # another worker (its own L1), the same ledger
    assert again is not None
    assert again.cache == "l2"
    assert len(world.agent.sent) == 2
    assert world.clock.slept == []


def test_a_rejected_answer_is_quoted_in_the_next_prompt() -> None:
    world = StepWorld(FakeAgent(ScriptedTurn(answer=ANSWER), ScriptedTurn(answer=ANSWER)))
    loop = _loop(world)
    seen = 0
    for _ in loop.answers(_prompt):
        seen += 1
        if seen == 1:
            loop.reject("the patch does not apply")
            continue
        break
    assert [r["status"] for r in loop.records] == ["rejected", "succeeded"]
    assert "the patch does not apply" in world.agent.sent[1].text
