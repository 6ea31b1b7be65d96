"""One deadline for a whole request: each operation gets what is left of it."""

from __future__ import annotations

import time

import httpcore
import pytest

from services.worker.deadline_http import left_of


def test_an_operation_gets_its_own_timeout_while_the_deadline_is_further() -> None:
    assert left_of(time.monotonic() + 60, 5.0, httpcore.ReadTimeout) == 5.0


def test_an_operation_gets_only_what_is_left_of_the_deadline() -> None:
    left = left_of(time.monotonic() + 2, 30.0, httpcore.ReadTimeout)
    assert 0 < left <= 2


def test_an_operation_without_a_timeout_of_its_own_still_ends_at_the_deadline() -> None:
    left = left_of(time.monotonic() + 2, None, httpcore.ConnectTimeout)
    assert 0 < left <= 2


def test_past_the_deadline_no_operation_starts() -> None:
    with pytest.raises(httpcore.WriteTimeout, match="deadline passed"):
        left_of(time.monotonic() - 0.001, 5.0, httpcore.WriteTimeout)
