"""A second red-team pass on the cursor pager (_TurnPager, as of 0f4848a).

The newest pages (two, then three) end the turn on the format 400 to the second one
taking for granted that the first listed two messages: a 400 on the newest three then
leaves exactly one message unread, kodo's prompt. A first page shorter than asked, with
a cursor to more (the daemon says more remain, it listed fewer), breaks that: the 400
on the newest three then hides a step of the turn, or a step after the answer. Each
case reuses the stub daemon of test_turn_pager.py and fails on 0f4848a; the pager now
refuses a newest page shorter than asked that names more (1.18.33 never sends one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from shared.opencode.errors import OpenCodePermanentError
from tests.integration.opencode.test_turn_pager import (
    _assistant,
    _Daemon,
    _earlier,
    _long_turn,
    serving,
)

pytestmark = pytest.mark.integration


class _ShortFirstPage(_Daemon):
    """The stub daemon, answering its first request with one message fewer than asked
    (and, as more remain, a cursor to them); ``appended`` is added to the session once
    that first page was answered (before the second request is served)."""

    appended: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:  # noqa: N802
        if type(self).requests == 0:
            self.path = self.path.replace("limit=2", "limit=1")  # a short page
        elif type(self).requests == 1 and self.appended:
            self.history.extend(self.appended)
            type(self).appended = []
        super().do_GET()


@pytest.fixture
def short_daemon() -> Iterator[type[_ShortFirstPage]]:
    with serving(_ShortFirstPage) as served:
        yield served


def _read_or_refused(daemon: type[_Daemon], reply: str) -> list[str] | None:
    try:
        return [m["info"]["id"] for m in _earlier(daemon, reply=reply)]
    except OpenCodePermanentError:
        return None


def test_a_short_first_page_with_a_cursor_does_not_hide_a_step_behind_the_400(
    short_daemon: type[_ShortFirstPage],
) -> None:
    """A two-step turn: kodo's prompt, msg_2 (bash), msg_3 (the answer). The first page
    lists msg_3 alone, with a cursor; the newest three reach the prompt and are answered
    the format 400, and the pager ends there, taking the message before msg_3 for kodo's
    prompt: msg_2's bash is never read, never judged. It must be read, or the turn
    refused."""
    short_daemon.history = _long_turn(2)
    short_daemon.history[1] = _assistant("msg_2", "bash")
    read = _read_or_refused(short_daemon, "msg_3")
    assert read is None or read == ["msg_2"], f"bash in msg_2 went unread: {read!r}"


def test_a_step_after_a_one_step_answer_behind_a_short_first_page_is_refused(
    short_daemon: type[_ShortFirstPage],
) -> None:
    """A one-step turn (kodo's prompt, then msg_2: the answer) whose first page lists
    msg_2 alone, with a cursor; then the turn goes on: bash in msg_3, after the answer
    kodo judges. The newest three (prompt, msg_2, msg_3) are answered the format 400 and the
    pager accepts the turn as one step, never having seen msg_3 nor checked the newest
    message again."""
    short_daemon.history = _long_turn(1)
    short_daemon.appended = [_assistant("msg_3", "bash")]
    read = _read_or_refused(short_daemon, "msg_2")
    assert read is None, f"accepted the turn ({read!r}) with bash after its answer unread"
