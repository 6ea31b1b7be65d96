"""The collector wakes what piled up in one transaction: errored sessions first (their
daemon error kept for the step), then every idle one together."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import pytest

from services.worker.collector import Collector, _read_ended, session_error
from shared.opencode.errors import OpenCodeTransientError
from shared.opencode.events import OcEvent
from shared.service.messages import InMemorySender, RunStep
from tests.fakes.agent import FakeAgent


class RecordingCollector(Collector):
    """Records its wake-ups instead of writing them (the writes have their own tests)."""

    def __init__(self) -> None:
        super().__init__(FakeAgent(), sessions=None, sender=InMemorySender(), daemon="d")  # type: ignore[arg-type]
        self.calls: list[tuple[str, Any]] = []

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
    assert collector._wake_batch(list(batch)) is True
    assert collector.calls == [
        ("errored", ("s2", "UnknownError: boom")),
        ("wake", ["s1", "s3", "s4"]),
    ]


def test_the_end_of_the_stream_wakes_what_came_before_it_and_asks_for_a_reconnect() -> None:
    collector = RecordingCollector()
    assert collector._wake_batch([("s1", None), None]) is False
    assert collector.calls == [("wake", ["s1"])]


def test_a_broken_stream_is_raised_to_the_follower_which_reconnects() -> None:
    collector = RecordingCollector()
    with pytest.raises(OpenCodeTransientError):
        collector._wake_batch([OpenCodeTransientError("event stream broke")])


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

    ended: queue.Queue[Any] = queue.Queue()
    _read_ended(stream(), ended)  # type: ignore[arg-type]
    assert ended.get_nowait() == ("s1", None)
    failure = ended.get_nowait()
    assert isinstance(failure, ValueError)
    collector = RecordingCollector()
    with pytest.raises(ValueError, match="a decoder bug"):
        collector._wake_batch([failure])
