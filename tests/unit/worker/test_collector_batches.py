"""The collector wakes what piled up in one transaction: errored sessions first (their
daemon error kept for the step), then every idle one together. What piles up is bounded:
past it, the collector reconciles instead of holding a flood."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from services.worker.collector import (
    ID_CHARS_MAX,
    Collector,
    EndedSessions,
    Taken,
    _read_ended,
    assistant_usage,
    ended_session,
    session_error,
)
from shared.domain.turn_spend import Spent, TurnSpend
from shared.opencode.errors import OpenCodeTransientError
from shared.opencode.events import OcEvent
from shared.service.messages import InMemorySender, RunStep
from tests.fakes.agent import FakeAgent


class RecordingCollector(Collector):
    """Records its wake-ups instead of writing them (the writes have their own tests)."""

    def __init__(self) -> None:
        super().__init__(FakeAgent(), sessions=None, sender=InMemorySender(), daemon="d")  # type: ignore[arg-type]
        self.calls: list[tuple[str, Any]] = []

    def reconcile(self) -> list[RunStep]:
        self.calls.append(("reconcile", None))
        return []

    def wake(self, session_ids: Any) -> list[RunStep]:
        ids = sorted(session_ids)
        if ids:
            self.calls.append(("wake", ids))
        return []

    def wake_errored(self, session_id: str, error: str) -> list[RunStep]:
        self.calls.append(("errored", (session_id, error)))
        return []


def test_a_batch_wakes_errored_sessions_first_then_all_idle_ones_at_once() -> None:
    collector = RecordingCollector()
    batch = [("s1", None), ("s2", "UnknownError: boom"), ("s3", None), ("s4", None)]
    assert collector._wake_taken(Taken(batch)) is True
    assert collector.calls == [
        ("errored", ("s2", "UnknownError: boom")),
        ("wake", ["s1", "s3", "s4"]),
    ]


def test_the_end_of_the_stream_wakes_what_came_before_it_and_asks_for_a_reconnect() -> None:
    collector = RecordingCollector()
    assert collector._wake_taken(Taken([("s1", None)], ended=True)) is False
    assert collector.calls == [("wake", ["s1"])]


def test_a_broken_stream_is_raised_to_the_follower_which_reconnects() -> None:
    collector = RecordingCollector()
    broke = OpenCodeTransientError("event stream broke")
    with pytest.raises(OpenCodeTransientError):
        collector._wake_taken(Taken([], ended=True, failure=broke))


def test_a_session_error_is_quoted_by_name_and_message_and_bounded() -> None:
    error = {"name": "UnknownError", "data": {"message": "x" * 10_000}}
    said = session_error(OcEvent("session.error", {"sessionID": "s", "error": error}, "e1"))
    assert said is not None
    assert said.startswith("UnknownError: xxx")
    assert len(said) < 5000
    assert session_error(OcEvent("session.idle", {"sessionID": "s"}, "e2")) is None


def test_a_reader_that_fails_unexpectedly_hands_the_failure_to_the_follower() -> None:
    """Never a reader gone quiet: the follower would wait on it forever, no wake-up
    again and no reconnect, in a process that looks alive."""

    def stream() -> Iterator[OcEvent]:
        yield OcEvent("session.idle", {"sessionID": "s1"}, "e1")
        raise ValueError("a decoder bug")

    ended = EndedSessions()
    _read_ended(stream(), ended)  # type: ignore[arg-type]
    taken = ended.take(10, timeout_s=0)
    assert taken is not None
    assert taken.sessions == [("s1", None)]
    assert taken.ended
    assert isinstance(taken.failure, ValueError)
    collector = RecordingCollector()
    with pytest.raises(ValueError, match="a decoder bug"):
        collector._wake_taken(taken)
    assert collector.calls == [("wake", ["s1"])], "what ended before the failure is woken"


def test_a_flood_of_ended_sessions_is_held_bounded_and_answered_by_a_reconcile() -> None:
    """A daemon that floods ``session.idle`` of sessions it never had (or ends turns
    faster than they are woken) cannot grow the collector without bound: past the limit
    the events are dropped, and the follower reconciles from the ledger and the daemon's
    ``/session/status`` instead, so a real call's end among them is not missed."""
    ended = EndedSessions(limit=3)
    for n in range(100_000):
        ended.add(f"flood-{n}", None)
    ended.add("flood-1", "UnknownError: late")  # an error for one held: kept
    taken = ended.take(500, timeout_s=0)
    assert taken is not None
    assert taken.sessions == [
        ("flood-0", None),
        ("flood-1", "UnknownError: late"),
        ("flood-2", None),
    ]
    assert taken.overflowed
    assert not taken.ended
    collector = RecordingCollector()
    assert collector._wake_taken(taken) is True
    assert collector.calls == [
        ("errored", ("flood-1", "UnknownError: late")),
        ("wake", ["flood-0", "flood-2"]),
        ("reconcile", None),
    ]
    assert ended.take(500, timeout_s=0) is None, "nothing is left, and the drop is answered"


def test_a_session_ended_twice_is_woken_once_and_the_stream_end_waits_for_what_came_before() -> (
    None
):
    ended = EndedSessions()
    for session_id in ("a", "b", "a", "c"):
        ended.add(session_id, None)
    ended.end(None)
    first = ended.take(2, timeout_s=0)
    assert first is not None
    assert (first.sessions, first.ended) == ([("a", None), ("b", None)], False)
    rest = ended.take(2, timeout_s=0)
    assert rest is not None
    assert (rest.sessions, rest.ended, rest.failure) == ([("c", None)], True, None)


def _assistant(session_id: str, message_id: str, tokens: int, role: str = "assistant") -> OcEvent:
    info = {
        "id": message_id,
        "sessionID": session_id,
        "role": role,
        "tokens": {"input": tokens, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}},
    }
    return OcEvent("message.updated", {"sessionID": session_id, "info": info}, "e")


def test_a_running_turn_past_the_token_bound_is_handed_over_and_its_end_forgets_it() -> None:
    stream = [
        _assistant("s1", "u1", 10**9, role="user"),  # a prompt's size is not the turn's spend
        _assistant("s1", "m1", 150),
        _assistant("s2", "m1", 150),
        _assistant("s1", "m2", 100),  # s1: 250, past 200
        _assistant("s1", "m3", 100),
        OcEvent("session.idle", {"sessionID": "s2"}, "e"),
        _assistant("s2", "m2", 100),  # s2 ended: its next turn starts from nothing
    ]
    ended = EndedSessions()
    spend = TurnSpend(bound=200)
    _read_ended(iter(stream), ended, spend)  # type: ignore[arg-type]
    taken = ended.take(10, timeout_s=0)
    assert taken is not None
    assert taken.over == [("s1", Spent(350))], "the latest total past the bound"
    assert taken.sessions == [("s2", None)]


def test_a_turn_past_the_bound_is_stopped_before_any_wake_up() -> None:
    class Stopping(RecordingCollector):
        def stop_over_bound(self, session_id: str, used: Spent, bound: int) -> bool:
            self.calls.append(("stop", (session_id, used, bound)))
            return True

    collector = Stopping()
    collector.token_bound = 200
    assert collector._wake_taken(Taken([("s2", None)], over=[("s1", Spent(250))])) is True
    assert collector.calls == [("stop", ("s1", Spent(250), 200)), ("wake", ["s2"])]


def test_session_ids_longer_than_any_kodo_keeps_are_not_held_nor_long_message_ids() -> None:
    long_id = "ses_" + "x" * ID_CHARS_MAX
    assert ended_session(OcEvent("session.idle", {"sessionID": long_id}, "e")) is None
    assert ended_session(OcEvent("session.idle", {"sessionID": long_id[:ID_CHARS_MAX]}, "e"))
    assert assistant_usage(_assistant(long_id, "m1", 10)) is None
    counted = assistant_usage(_assistant("s1", long_id, 10))  # its session may be kodo's
    assert counted is not None
    assert (counted[0], len(counted[1]), counted[2]) == ("s1", 64, Spent(10)), "by its digest"
    assert assistant_usage(_assistant("s1", "m1", 10)) == ("s1", "m1", Spent(10))
