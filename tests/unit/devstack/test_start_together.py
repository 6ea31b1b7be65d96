"""Starting a stack's processes together: every start overlaps, every start is waited for."""

from __future__ import annotations

import threading

import pytest

from devstack.kodo_procs import start_together


def test_each_start_runs_at_once_and_its_result_is_returned_by_name() -> None:
    arrived = threading.Barrier(3, timeout=5)  # passes only if all three run at once

    def start(name: str) -> str:
        arrived.wait()
        return f"{name} ready"

    ready = start_together({n: (lambda n=n: start(n)) for n in ("worker", "beat", "api")})

    assert ready == {"worker": "worker ready", "beat": "beat ready", "api": "api ready"}


def test_a_failed_start_is_raised_only_once_every_other_start_has_ended() -> None:
    """So the caller's stop finds every process that was spawned, even a slow one."""
    slow_ended = threading.Event()
    failed_first = threading.Event()

    def broken() -> str:
        failed_first.set()
        raise RuntimeError("api exited early")

    def slow() -> str:
        failed_first.wait(5)
        slow_ended.wait(0.2)  # still starting well after the failure
        slow_ended.set()
        return "worker"

    with pytest.raises(RuntimeError, match="api exited early"):
        start_together({"api": broken, "worker": slow})

    assert slow_ended.is_set()


def test_nothing_to_start_is_nothing_started() -> None:
    assert start_together({}) == {}
