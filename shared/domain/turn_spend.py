"""The call token bound, enforced while a turn runs (pure).

Each provider call reserves ``KODO_CALL_TOKEN_BOUND`` tokens of its run's budget before
it is sent (shared.domain.budget), on the assumption that one call uses no more. A
turn is many model steps (tool calls, each re-sending the conversation), so an agent
that loops, or a hostile repository that makes it read and re-read large files, can
spend many times the bound inside one call, which no reservation covered: the budget
is then passed by the time the call is settled. The collector therefore adds up each
running turn's assistant messages as the daemon reports them (``message.updated``
carries a message's tokens after each of its steps) and, once a turn's total passes
the bound, has it aborted; its step records the call ``aborted`` under the rule
:data:`CALL_TOKEN_BOUND` and the run fails closed, billed what the turn used. A turn
can pass the bound by at most the step that crossed it.

:class:`TurnSpend` keeps the running totals: bounded (sessions and messages), since the
event stream is the daemon's and its contents the model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CALL_TOKEN_BOUND = "CallTokenBound"  # noqa: S105 - a rule name
"""The rule (and the recorded error name) of a turn aborted for passing the bound."""

OVER_BOUND_MARK = CALL_TOKEN_BOUND + ": "

SESSIONS_TRACKED = 5_000
"""Running turns whose spend is kept at once, per daemon; past it the oldest is
forgotten (a real daemon held 200 turns at 1.95 GB)."""

MESSAGES_TRACKED = 64
"""Assistant messages counted per turn: kodo's agents are capped below it (``steps``,
40), and reads refuse a turn past MAX_TURN_STEPS (50) anyway."""


def over_bound_error(used: int, bound: int) -> str:
    """The error a call's row keeps once its turn passed the bound (the step's
    diagnostic quotes it)."""
    return (
        f"{OVER_BOUND_MARK}the turn used {used:,} tokens, past the call's bound of {bound:,}"
        " (KODO_CALL_TOKEN_BOUND, what each call reserves of its run's budget): it was"
        " aborted and is billed what it used"
    )


def is_over_bound(error: str | None) -> bool:
    """Whether a call's recorded error says its turn passed the bound."""
    return error is not None and error.startswith(OVER_BOUND_MARK)


@dataclass
class TurnSpend:
    """Running token totals of the daemon's turns, by session (one call per session)."""

    bound: int
    _sessions: dict[str, dict[str, int]] = field(default_factory=dict)

    def see(self, session_id: str, message_id: str, total_tokens: int) -> int | None:
        """Count an assistant message's tokens (its latest report replaces the last);
        return the turn's total if it is past the bound, else None. Every report past it
        is returned: an abort the daemon did not confirm is asked again at the turn's
        next step (asking a turn that already stopped is harmless)."""
        messages = self._sessions.get(session_id)
        if messages is None:
            if len(self._sessions) >= SESSIONS_TRACKED:
                oldest = next(iter(self._sessions))
                self.end(oldest)
            messages = self._sessions[session_id] = {}
        if message_id not in messages and len(messages) >= MESSAGES_TRACKED:
            return None
        messages[message_id] = max(total_tokens, messages.get(message_id, 0))
        total = sum(messages.values())
        return total if total > self.bound else None

    def end(self, session_id: str) -> None:
        """The session's turn ended: forget it."""
        self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)
