"""A SIGTERM handler that ends the process waits for a process start to be registered."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from devstack.supervisor import holdable, signals_held


class Ended(Exception):
    pass


def _end(signum: int, _frame: object) -> None:
    raise Ended(signum)


@pytest.fixture
def usr1_ends() -> Iterator[None]:
    before = signal.signal(signal.SIGUSR1, holdable(_end))
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_outside_a_held_block_the_handler_runs_at_once(usr1_ends: None) -> None:
    with pytest.raises(Ended):
        os.kill(os.getpid(), signal.SIGUSR1)  # its handler runs at the next bytecode


def test_inside_it_the_handler_runs_when_the_outermost_block_ends(usr1_ends: None) -> None:
    registered = []

    def start_and_register() -> None:
        with signals_held():
            with signals_held():
                os.kill(os.getpid(), signal.SIGUSR1)
                registered.append("started")  # what a SIGTERM must not cut off
            registered.append("registered")

    with pytest.raises(Ended):
        start_and_register()
    assert registered == ["started", "registered"]


def test_a_signal_held_twice_runs_its_handler_once(usr1_ends: None) -> None:
    calls = []

    def count(signum: int, _frame: object) -> None:
        calls.append(signum)

    handler = holdable(count)
    with signals_held():
        handler(signal.SIGTERM, None)
        handler(signal.SIGTERM, None)
    assert calls == [signal.SIGTERM]
