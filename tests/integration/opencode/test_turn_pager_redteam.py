"""A red-team pass on the cursor pager (_TurnPager): messages that appear after the
answer kodo judges, while or before the turn is read, must refuse the turn.

Both cases failed on the first cursor pager (a50bb03); the second failed on the old
``limit=2, 3, ...`` pager too, under the any-range model of the format 400 the stub
daemon had then (1.18.33 lists such a page: it has older messages behind it). They
reuse the stub daemon of test_turn_pager.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from shared.opencode.errors import OpenCodePermanentError
from tests.integration.opencode.test_turn_pager import (
    PROMPT,
    _assistant,
    _Daemon,
    _earlier,
    _long_turn,
    _user,
    serving,
)

pytestmark = pytest.mark.integration


class _AppendsAfterFirst(_Daemon):
    """The stub daemon, with ``appended`` added to the session once the first request was
    answered (before the second is served): a message that appears mid-read."""

    appended: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:  # noqa: N802
        if type(self).requests == 1 and self.appended:
            self.history.extend(self.appended)
            type(self).appended = []
        super().do_GET()


@pytest.fixture
def appending_daemon() -> Iterator[type[_AppendsAfterFirst]]:
    with serving(_AppendsAfterFirst) as served:
        yield served


@pytest.mark.parametrize(
    "appended",
    [
        # the turn went on past the answer kodo judges (bash after the answer)
        [_assistant("msg_4", "bash")],
        # a prompt kodo never sent, and its answer, after kodo's
        [_user("msg_90", format=False), _assistant("msg_91", "bash", parent="msg_90")],
    ],
    ids=["the-turn-goes-on", "another-prompt"],
)
def test_a_message_after_a_two_step_answer_appearing_mid_read_is_refused(
    appending_daemon: type[_AppendsAfterFirst], appended: list[dict[str, Any]]
) -> None:
    """A two-step turn is read in two requests. When the second was one message before
    the cursor (answered the format 400), a message that appeared between the two was
    never seen. The second is the newest three again, which lists it and refuses the
    turn, as the old pager's ``limit=3`` did."""
    appending_daemon.history = _long_turn(2)  # kodo's prompt, msg_2 (read), msg_3
    appending_daemon.appended = appended
    with pytest.raises(OpenCodePermanentError, match=r"is not the answer 'msg_3'"):
        _earlier(appending_daemon, reply="msg_3")
    assert appending_daemon.requests >= 2  # the message did appear mid-read


def test_a_turn_started_after_the_answer_by_a_formatted_prompt_is_refused(
    appending_daemon: type[_AppendsAfterFirst],
) -> None:
    """The answer kodo judges (msg_3) is not the session's newest: a prompt with a
    ``format`` it never sent (msg_4), and bash in its answer, came after it. Were the
    first page (the newest two) answered the format 400, the pager would take it for
    kodo's own prompt just before the answer, and judge neither bash. 1.18.33 lists
    that page (older messages lie behind it), and its newest is not the answer."""
    appending_daemon.history = [
        _user(PROMPT, format=True),
        _assistant("msg_2", "bash"),
        _assistant("msg_3"),  # the answer kodo judges
        _user("msg_4", format=True),
        _assistant("msg_5", "bash", parent="msg_4"),
    ]
    with pytest.raises(OpenCodePermanentError):
        _earlier(appending_daemon, reply="msg_3")
