"""Red-team helper-129: a turn the collector aborted for passing its token bound must be
refused under CallTokenBound (never retried) however the daemon ends it.

OpenCode checks its abort signal at the top of its step loop (``if (abort.aborted)
break``): an abort that lands between two steps (the collector asks right after the
``message.updated`` of the step that crossed the bound, i.e. exactly between steps, while
the daemon snapshots the worktree) ends the turn with its last message completed, no
``info.error``, and no structured answer (or with ``StructuredOutputError``). The step
then judges that turn "as any other": a ContractViolation / StructuredOutputMissing, kind
``contract``, which the attempts loop RETRIES: a new op_key, a new reservation, and the
hostile turn spends past the bound again, up to the attempt limit.
"""

from __future__ import annotations

import pytest

from shared.domain.vocab import CallStatus
from shared.opencode.calls import CallFailed
from tests.fakes.agent import ScriptedTurn, tokens
from tests.fakes.ledger import InMemoryLedger
from tests.unit.opencode.test_exactly_once_async import (
    ANSWER,
    TIMEOUT_S,
    _call,
    _calls,
    _held,
    _marked_over_bound,
    _send,
)

STRUCTURED_OUTPUT_ERROR = {
    "name": "StructuredOutputError",
    "data": {"message": "the model did not produce structured output", "retries": 0},
}


@pytest.mark.parametrize(
    "info_error", [None, STRUCTURED_OUTPUT_ERROR], ids=["no-error", "structured-output-error"]
)
def test_rt129_a_marked_turn_aborted_between_steps_is_refused_not_retried(
    info_error: dict[str, object] | None,
) -> None:
    # 250,000 tokens used against a 200,000 bound; the abort stopped the loop between
    # steps: the last message is complete, carries no answer, and no MessageAbortedError.
    turn = ScriptedTurn(answer=None, session_tokens=tokens(250_000), info_error=info_error)
    agent = _held(turn)
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    _marked_over_bound(ledger)
    agent.release(pending.session_id)  # the daemon's loop broke at its top: no error
    ledger.wake(pending.session_id)
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    row = ledger.rows[_call().op_key].record
    # Today: kind "contract" (retried by services/worker/steps/attempts.py), status
    # failed, error_name ContractViolation / StructuredOutputMissing.
    assert failed.value.kind == "refused", "a turn stopped by the bound must not be retried"
    assert (row.status, row.error_name) == (CallStatus.ABORTED, "CallTokenBound")
    assert row.usage is not None
    assert row.usage["total_tokens"] == 250_000


def test_rt129_a_marked_turn_stopped_at_its_deadline_is_refused_not_timed_out() -> None:
    """The collector marked the turn past its bound, but its abort had not stopped it
    (refused, or the mark came just before the deadline) when the step's deadline came:
    ``_collected`` aborts it as overdue and records ``timed_out`` / OpenCodeTimeout,
    kind ``timeout``, which services/worker/steps/attempts.py retries (BACKOFF_KINDS):
    a new attempt, a new reservation, and another turn past the bound. The mark is
    overwritten by the timeout's error, so nothing says the call passed its bound."""
    agent = _held(ScriptedTurn(answer=ANSWER, session_tokens=tokens(250_000)))
    ledger = InMemoryLedger()
    pending = _send(agent, ledger)
    mark = _marked_over_bound(ledger)
    ledger.rows[_call().op_key].age_s = TIMEOUT_S + 1
    with pytest.raises(CallFailed) as failed:
        _calls(agent, ledger).prompt_structured(_call())
    assert agent.aborted == [pending.session_id]
    row = ledger.rows[_call().op_key].record
    assert failed.value.kind == "refused", "retried today (kind timeout)"
    assert (row.error_name, row.error) == ("CallTokenBound", mark)
