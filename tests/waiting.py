"""Waiting on observable state: poll a predicate until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_S = 0.05


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    detail: Callable[[], str] | None = None,
) -> T:
    """The first truthy value of ``predicate()``, polled every 50 ms for ``timeout`` seconds.

    Past the deadline the test fails naming ``what`` it waited for (and ``detail()``, if
    given, for the state it saw), instead of a fixed sleep hoping the state is there.
    """
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"waited {timeout:g}s for {what}{extra}")
        time.sleep(POLL_S)
