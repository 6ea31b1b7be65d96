"""A running turn's spend, added up from the daemon's reports of its messages: the
collector stops a turn once it passes the token bound its call reserved."""

from __future__ import annotations

from shared.domain.turn_spend import (
    MESSAGES_TRACKED,
    SESSIONS_TRACKED,
    Spent,
    TurnSpend,
    is_over_bound,
    over_bound_error,
)


def test_a_turn_is_reported_whenever_its_messages_together_are_past_the_bound() -> None:
    spend = TurnSpend(bound=1000)
    assert spend.see("s", "m1", Spent(600)) is None
    assert spend.see("s", "m2", Spent(400)) is None, "at the bound is within it"
    assert spend.see("s", "m2", Spent(450)) == Spent(1050), "a later report replaces the first"
    assert spend.see("s", "m3", Spent(10)) == Spent(1060), "again: an unconfirmed abort is retried"
    assert spend.see("other", "m1", Spent(999)) is None, "each session is its own turn"


def test_a_message_reported_again_with_fewer_tokens_keeps_its_highest_count() -> None:
    spend = TurnSpend(bound=100)
    assert spend.see("s", "m1", Spent(90)) is None
    assert spend.see("s", "m1", Spent(0)) is None  # an update that zeroes it (an aborted message)
    assert spend.see("s", "m2", Spent(20)) == Spent(110)


def test_an_ended_turn_is_forgotten() -> None:
    spend = TurnSpend(bound=100)
    spend.see("s", "m1", Spent(90))
    spend.end("s")
    assert len(spend) == 0
    assert spend.see("s", "m2", Spent(20)) is None, "a new turn starts from nothing"


def test_what_is_kept_is_bounded_whatever_the_stream_says() -> None:
    spend = TurnSpend(bound=10**9)
    spend.see("near", "m", Spent(10**8))
    for n in range(SESSIONS_TRACKED * 3):
        spend.see(f"s{n}", "m", Spent(1))
    assert len(spend) <= SESSIONS_TRACKED, "the turns that spent least are forgotten"
    assert "near" in spend._turns, "not the one that spent most"
    for n in range(MESSAGES_TRACKED * 3):
        spend.see("long", f"m{n}", Spent(1))
    assert len(spend._turns["long"].messages) == MESSAGES_TRACKED
    assert spend._turns["long"].total == Spent(MESSAGES_TRACKED * 3), "the rest added up"


def test_the_recorded_error_names_the_rule_and_is_recognised() -> None:
    said = over_bound_error(Spent(300_000, 450_000), 200_000)
    assert said.startswith("CallTokenBound: the turn used 300,000 tokens")
    assert "KODO_CALL_TOKEN_BOUND" in said
    assert is_over_bound(said)
    assert not is_over_bound("MessageAbortedError: Aborted")
    assert not is_over_bound(None)


def test_a_turn_found_running_at_a_connect_starts_from_what_it_spent() -> None:
    spend = TurnSpend(bound=200_000)
    spend.seed("s", Spent(190_000))
    assert spend.see("s", "m2", Spent(15_000)) == Spent(205_000)
    spend.see("t", "m1", Spent(100))
    spend.seed("t", Spent(150_000))  # already followed: its messages are in those totals
    assert spend.see("t", "m2", Spent(100)) is None


def test_a_turn_that_costs_more_than_its_call_reserved_is_past_the_bound_in_tokens_or_not() -> None:
    """Output and cache writes cost several times input: 150,000 tokens can cost $11.25
    against a $3.00 reservation (red-team helper-129)."""
    spend = TurnSpend(bound=200_000, usd_bound_micro=3_000_000)
    assert spend.see("s", "m1", Spent(100_000, 2_000_000)) is None
    assert spend.see("s", "m2", Spent(50_000, 9_250_000)) == Spent(150_000, 11_250_000)
    said = over_bound_error(Spent(150_000, 11_250_000), 200_000, 3_000_000)
    assert "the turn used $11.25 (150,000 tokens), past the call's $3.00" in said
    free = TurnSpend(bound=200_000)  # no price: tokens only
    assert free.see("s", "m1", Spent(150_000, 11_250_000)) is None
