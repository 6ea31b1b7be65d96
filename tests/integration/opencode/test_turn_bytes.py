"""What one hostile turn makes a worker read and hold when its step is judged (red-team
helper-98).

KODO_MAX_ANSWER_BYTES bounds one HTTP exchange with the daemon, not a turn: the turn
pager (shared/opencode/client.py, _TurnPager) reads up to 50 steps over about ten
pages, each page under the cap, and keeps every page parsed until the turn is judged.
A model chooses its steps' sizes (parallel read tool calls, write inputs), so one turn
can make a worker thread pull and hold about ten times the cap (80 MB at the default
8 MB) before any rule is applied. The safe behaviour: a turn whose messages add up to
more than the cap is refused as uninspectable (as an oversize answer is), and kodo
never holds more than the cap of one turn's earlier messages.

Run against a real HTTP stub daemon that pages as 1.18.33 does (the one of
tests/integration/opencode/test_turn_pager.py).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from shared.opencode.client import OpenCodeClient
from shared.opencode.messages import AnswerTooLarge
from tests.integration.opencode.test_turn_pager import PROMPT, _Daemon, _user, serving

pytestmark = pytest.mark.integration

CAP = 1024 * 1024  # KODO_MAX_ANSWER_BYTES for the test (the default is 8 MiB)

# page each message lands on (steps=50: newest 2, newest 3, then 1, 2, 4, 8, 16 before
# the cursor, the format 400, then halving): how many messages share that page
_PAGE_OF = {50: 3, 49: 3, 48: 3, 47: 1}
_PAGE_OF.update({n: 2 for n in (45, 46)})
_PAGE_OF.update({n: 4 for n in range(41, 45)})
_PAGE_OF.update({n: 8 for n in range(33, 41)})
_PAGE_OF.update({n: 16 for n in range(17, 33)})
_PAGE_OF.update({n: 8 for n in range(9, 17)})
_PAGE_OF.update({n: 4 for n in range(5, 9)})
_PAGE_OF.update({n: 2 for n in range(3, 5)})
_PAGE_OF.update({2: 1})


def _big_step(n: int) -> dict[str, Any]:
    """Step ``n``: a completed read whose output fills its page to 90% of the cap."""
    size = int(CAP * 0.9 / _PAGE_OF[n]) - 400
    part = {
        "type": "tool",
        "tool": "read",
        "state": {"status": "completed", "input": {"filePath": "a.txt"}, "output": "x" * size},
    }
    info = {"id": f"msg_{n:02d}", "role": "assistant", "parentID": PROMPT}
    return {"info": info, "parts": [part] if n != 50 else []}


def _hostile_turn() -> list[dict[str, Any]]:
    return [_user(PROMPT, format=True), *(_big_step(n) for n in range(2, 51))]


def test_one_turn_cannot_make_kodo_hold_many_times_the_answer_cap() -> None:
    with serving(_Daemon) as daemon:
        daemon.history = _hostile_turn()
        # every message is under the cap, and so is every page the pager asks for
        assert all(len(json.dumps(m)) < CAP for m in daemon.history)
        with (
            OpenCodeClient(daemon.url, timeout_s=10, max_answer_bytes=CAP) as client,
            pytest.raises(AnswerTooLarge, match="turn's earlier messages") as refused,
        ):
            client.earlier_turn_messages(
                "ses_x", directory="/w", prompt_id=PROMPT, reply_id="msg_50"
            )
    assert "KODO_MAX_ANSWER_BYTES" in str(refused.value)


def test_a_turn_whose_pages_fit_the_cap_together_is_read_whole() -> None:
    """Ten pages of small steps: the budget is the cap in all, not less."""
    with serving(_Daemon) as daemon:
        daemon.history = [_user(PROMPT, format=True), *(_small_step(n) for n in range(2, 51))]
        with OpenCodeClient(daemon.url, timeout_s=10, max_answer_bytes=CAP) as client:
            turn = client.earlier_turn_messages(
                "ses_x", directory="/w", prompt_id=PROMPT, reply_id="msg_50"
            )
    assert [m["info"]["id"] for m in turn] == [f"msg_{n:02d}" for n in range(2, 50)]


def _small_step(n: int) -> dict[str, Any]:
    info = {"id": f"msg_{n:02d}", "role": "assistant", "parentID": PROMPT}
    return {"info": info, "parts": []}


class _Counting(_Daemon):
    """The stub daemon, counting the bytes of each answer it sends."""

    sent: ClassVar[list[int]] = []

    def _send(self, status: int, body: object, cursor: str | None = None) -> None:
        if status == 200:
            type(self).sent.append(len(json.dumps(body).encode()))
        super()._send(status, body, cursor)


def test_the_newest_message_read_again_at_the_end_counts_against_the_turn_too() -> None:
    """After more than one page the newest message is read once more (to see nothing
    came after the answer): outside the budget, a turn whose answer was 45% of the cap
    was read 1.35 times it (red-team helper-99)."""
    with serving(_Counting) as daemon:
        _Counting.sent = []
        answer = _small_step(50)
        answer["parts"] = [{"type": "text", "text": "y" * int(CAP * 0.45)}]
        daemon.history = [
            _user(PROMPT, format=True),
            *(_small_step(n) for n in range(2, 50)),
            answer,
        ]
        with (
            OpenCodeClient(daemon.url, timeout_s=10, max_answer_bytes=CAP) as client,
            pytest.raises(AnswerTooLarge, match="turn's earlier messages"),
        ):
            client.earlier_turn_messages(
                "ses_x", directory="/w", prompt_id=PROMPT, reply_id="msg_50"
            )
        read = sum(_Counting.sent)
    assert read <= CAP + len(json.dumps(answer)), "at most the cap, and the read it cut off"
