"""A running turn's spend, added up from the daemon's reports of its messages: the
collector stops a turn once it passes the token bound its call reserved."""

from __future__ import annotations

from shared.domain.turn_spend import (
    MESSAGES_TRACKED,
    SESSIONS_TRACKED,
    TurnSpend,
    is_over_bound,
    over_bound_error,
)


def test_a_turn_is_reported_whenever_its_messages_together_are_past_the_bound() -> None:
    spend = TurnSpend(bound=1000)
    assert spend.see("s", "m1", 600) is None
    assert spend.see("s", "m2", 400) is None, "at the bound is within it"
    assert spend.see("s", "m2", 450) == 1050, "a message's later report replaces its first"
    assert spend.see("s", "m3", 10) == 1060, "reported again: an unconfirmed abort is retried"
    assert spend.see("other", "m1", 999) is None, "each session is its own turn"


def test_a_message_reported_again_with_fewer_tokens_keeps_its_highest_count() -> None:
    spend = TurnSpend(bound=100)
    assert spend.see("s", "m1", 90) is None
    assert spend.see("s", "m1", 0) is None  # an update that zeroes it (an aborted message)
    assert spend.see("s", "m2", 20) == 110


def test_an_ended_turn_is_forgotten() -> None:
    spend = TurnSpend(bound=100)
    spend.see("s", "m1", 90)
    spend.end("s")
    assert len(spend) == 0
    assert spend.see("s", "m2", 20) is None, "a new turn starts from nothing"


def test_what_is_kept_is_bounded_whatever_the_stream_says() -> None:
    spend = TurnSpend(bound=10**9)
    for n in range(SESSIONS_TRACKED + 50):
        spend.see(f"s{n}", "m", 1)
    assert len(spend) == SESSIONS_TRACKED, "the oldest turns are forgotten"
    for n in range(MESSAGES_TRACKED * 3):
        spend.see("long", f"m{n}", 1)
    assert len(spend._sessions["long"]) == MESSAGES_TRACKED


def test_the_recorded_error_names_the_rule_and_is_recognised() -> None:
    said = over_bound_error(300_000, 200_000)
    assert said.startswith("CallTokenBound: the turn used 300,000 tokens")
    assert "KODO_CALL_TOKEN_BOUND" in said
    assert is_over_bound(said)
    assert not is_over_bound("MessageAbortedError: Aborted")
    assert not is_over_bound(None)
