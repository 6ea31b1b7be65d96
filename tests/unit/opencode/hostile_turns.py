"""The scripted attacker of the unjudged-turn specifications, and their call setup.

A hostile turn reads another run's file on the way (``ESCAPE``, outside the session's
directory ``/w``), then answers well: whatever becomes of its answer, it must be refused
under the rule, never retried with its steps unjudged, and none of ``SECRET`` (the text
it read, spelled where the daemon may quote it) may be kept.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.clock import FixedClock
from shared.domain.contracts import BUILD_OUTPUT_SCHEMA
from shared.opencode.cache import LruCache
from shared.opencode.calls import CallFailed, CallPending, StructuredCall
from shared.opencode.errors import OpenCodeError, OpenCodePermanentError, OpenCodeServerError
from shared.opencode.exactly_once import ExactlyOnceCalls
from shared.opencode.messages import ModelRef, PromptReply
from tests.fakes.agent import FakeAgent, ScriptedTurn, tokens
from tests.fakes.ledger import InMemoryLedger

ANSWER: dict[str, Any] = {"next_action": "verify", "argv": ["pytest", "-q"], "reason": "tests"}
MODEL = ModelRef("kodo", "kodo-scripted")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TIMEOUT_S = 60.0
ESCAPE = "read@/elsewhere/other-run/secret"
SECRET = "OTHER-RUNS-SECRET"  # noqa: S105 - a marker, not a credential


def calls(
    agent: FakeAgent, ledger: InMemoryLedger, *, async_calls: bool, **options: Any
) -> ExactlyOnceCalls:
    """A worker's protocol over the fake daemon, on a fixed clock, with its own L1."""
    options.setdefault("wait_poll_s", 0.0)
    return ExactlyOnceCalls(
        agent,
        ledger,
        options.pop("clock", None) or FixedClock(NOW),
        model=MODEL,
        timeout_s=TIMEOUT_S,
        l1=LruCache(),
        async_calls=async_calls,
        daemon="http://oc-1",
        **options,
    )


def the_call(agent: str = "plan") -> StructuredCall:
    return StructuredCall("run-1", "DecideST", 1, agent, "choose", BUILD_OUTPUT_SCHEMA, "/w")


def escaping_turn(**kw: Any) -> ScriptedTurn:
    """A turn that read another run's file on the way, then answered well."""
    return ScriptedTurn(answer=ANSWER, session_tokens=tokens(50), earlier_tools=[ESCAPE], **kw)


def honest_turn(**kw: Any) -> ScriptedTurn:
    return ScriptedTurn(answer=ANSWER, session_tokens=tokens(50), **kw)


def held(turn: ScriptedTurn, cls: type[FakeAgent] = FakeAgent) -> FakeAgent:
    """A fake daemon whose ``prompt_async`` turn runs until released."""
    agent = cls(turn)
    agent.hold_async = True
    return agent


def send(agent: FakeAgent, ledger: InMemoryLedger) -> CallPending:
    """Send the call and record it sent, as the runner does when it parks the step."""
    with pytest.raises(CallPending) as pending:
        calls(agent, ledger, async_calls=True).prompt_structured(the_call())
    assert ledger.mark_sent(pending.value.op_key)
    return pending.value


def fail(agent: FakeAgent, ledger: InMemoryLedger, *, async_calls: bool) -> CallFailed:
    with pytest.raises(CallFailed) as failed:
        calls(agent, ledger, async_calls=async_calls).prompt_structured(the_call())
    return failed.value


def bad_request(said: str) -> OpenCodePermanentError:
    """A daemon 400 that is NOT the format 400 marking a turn's start, quoting ``said``
    (a message's text), as a listing's validation error does."""
    return OpenCodePermanentError(
        f"HTTP 400 BadRequest: Expected string, got {said}",
        status=400,
        name="BadRequest",
        data={"message": f"Expected string, got {said}"},
    )


class RanThenBroke(FakeAgent):
    """A blocking prompt whose turn RAN (its steps are in the session, its answer is the
    session's newest message), but whose HTTP answer kodo never got whole: ``after``
    is raised instead (a broken connection, a body kodo cannot parse, a timeout)."""

    def __init__(self, after: OpenCodeError, *turns: ScriptedTurn) -> None:
        super().__init__(*turns)
        self.after = after

    def prompt(self, session_id: str, **kw: Any) -> PromptReply:
        reply = super().prompt(session_id, **kw)
        reply.info.setdefault("time", {"created": 1, "completed": 2})
        self.replies[session_id] = reply  # the daemon keeps the turn
        raise self.after


class MessagesHiccup(FakeAgent):
    """A daemon that answers 500 to the first listing of a turn's steps, then lists it."""

    def __init__(self, *turns: ScriptedTurn) -> None:
        super().__init__(*turns)
        self.failures = 1

    def earlier_turn_messages(self, session_id: str, **kw: Any) -> list[dict[str, Any]]:
        if self.failures:
            self.failures -= 1
            raise OpenCodeServerError("HTTP 500 (fake): messages, once", status=500)
        return super().earlier_turn_messages(session_id, **kw)
