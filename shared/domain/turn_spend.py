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
from typing import NamedTuple

CALL_TOKEN_BOUND = "CallTokenBound"  # noqa: S105 - a rule name
"""The rule (and the recorded error name) of a turn aborted for passing the bound."""

OVER_BOUND_MARK = CALL_TOKEN_BOUND + ": "

SESSIONS_TRACKED = 5_000
"""Running turns whose spend is kept at once, per daemon; when full, the half that spent
least is forgotten (a real daemon held 200 turns at 1.95 GB): a flood of small reports
of other sessions cannot push out a turn near its bound."""

MESSAGES_TRACKED = 64
"""Assistant messages counted one by one per turn (kodo's agents stop at 40 steps); the
reports of any more are added up as they come, each report counted (so a message
reported twice counts twice: past the bound sooner, never later)."""


class Spent(NamedTuple):
    """What a turn (or one of its messages) used: tokens, and micro-dollars as the daemon
    priced them."""

    tokens: int
    usd_micro: int = 0

    def __add__(self, other: object) -> Spent:
        if not isinstance(other, Spent):
            return NotImplemented
        return Spent(self.tokens + other.tokens, self.usd_micro + other.usd_micro)


def over_bound_error(used: Spent, bound: int, usd_bound_micro: int = 0) -> str:
    """The error a call's row keeps once its turn passed the bound (the step's
    diagnostic quotes it): what it used, and the bound it passed."""
    usd = f"${used.usd_micro / 1e6:,.2f}"
    if used.tokens > bound or not usd_bound_micro:
        passed = f"{used.tokens:,} tokens ({usd}), past the call's bound of {bound:,} tokens"
    else:
        passed = f"{usd} ({used.tokens:,} tokens), past the call's ${usd_bound_micro / 1e6:,.2f}"
    return (
        f"{OVER_BOUND_MARK}the turn used {passed} (KODO_CALL_TOKEN_BOUND at"
        " KODO_PRICE_USD_PER_MTOK, what each call reserves of its run's budget): it was"
        " aborted and is billed what it used"
    )


def is_over_bound(error: str | None) -> bool:
    """Whether a call's recorded error says its turn passed the bound."""
    return error is not None and error.startswith(OVER_BOUND_MARK)


NOTHING = Spent(0)


@dataclass
class _Turn:
    messages: dict[str, Spent] = field(default_factory=dict)
    overflow: Spent = NOTHING  # reports of messages past MESSAGES_TRACKED, added up

    @property
    def total(self) -> Spent:
        total = self.overflow
        for spent in self.messages.values():
            total = total + spent
        return total


@dataclass
class TurnSpend:
    """Running totals of the daemon's turns, by session (one call per session): past
    ``bound`` tokens, or past ``usd_bound_micro`` (what the call reserved in money; 0:
    tokens only), a turn must stop."""

    bound: int
    usd_bound_micro: int = 0
    _turns: dict[str, _Turn] = field(default_factory=dict)

    def see(self, session_id: str, message_id: str, spent: Spent) -> Spent | None:
        """Count an assistant message's use (its latest report replaces the last);
        return the turn's total if it is past the bound, else None. Every report past it
        is returned: an abort the daemon did not confirm is asked again at the turn's
        next step (asking a turn that already stopped is harmless)."""
        turn = self._turns.get(session_id)
        if turn is None:
            if len(self._turns) >= SESSIONS_TRACKED:
                self._forget_least()
            turn = self._turns[session_id] = _Turn()
        if message_id in turn.messages or len(turn.messages) < MESSAGES_TRACKED:
            before = turn.messages.get(message_id, NOTHING)
            turn.messages[message_id] = Spent(
                max(spent.tokens, before.tokens), max(spent.usd_micro, before.usd_micro)
            )
        else:
            turn.overflow = turn.overflow + spent
        total = turn.total
        return total if self.past(total) else None

    def past(self, spent: Spent) -> bool:
        """Whether ``spent`` is past the bound, in tokens or in money."""
        over_usd = self.usd_bound_micro > 0 and spent.usd_micro > self.usd_bound_micro
        return spent.tokens > self.bound or over_usd

    def seed(self, session_id: str, spent: Spent) -> None:
        """Start a turn not yet followed from what its session spent so far (its totals,
        read at a connect): a collector that starts while a turn runs must not give it a
        whole bound more. A turn already followed is left as counted (its messages are
        in those totals)."""
        if session_id not in self._turns:
            if len(self._turns) >= SESSIONS_TRACKED:
                self._forget_least()
            self._turns[session_id] = _Turn(overflow=spent)

    def end(self, session_id: str) -> None:
        """The session's turn ended: forget it."""
        self._turns.pop(session_id, None)

    def _forget_least(self) -> None:
        kept = sorted(self._turns.items(), key=lambda item: item[1].total, reverse=True)
        self._turns = dict(kept[: SESSIONS_TRACKED // 2])

    def __len__(self) -> int:
        return len(self._turns)
