"""Paging back through a turn: only the daemon's 400 on kodo's own prompt ends it.

A stub daemon serves ``GET /session/{id}/message?limit=N`` from a scripted history,
with the real daemon's bug (API notes 5.1): a range holding a user message sent with a
``format`` is answered 400 naming ``[i].info.format``. kodo sends every prompt with a
format and its own ``messageID``, so a user message the listing shows, or an answer to
another than kodo's, is one the daemon added inside the turn (auto-compaction's
synthetic "continue"): the steps before it would escape the turn's rules, and the turn
is refused instead.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qs, urlparse

import pytest

from shared.opencode.client import OpenCodeClient
from shared.opencode.errors import OpenCodePermanentError

pytestmark = pytest.mark.integration


def _user(message_id: str, *, format: bool) -> dict[str, Any]:
    info: dict[str, Any] = {"id": message_id, "role": "user"}
    if format:
        info["format"] = {"type": "json_schema", "schema": {}}
    return {"info": info, "parts": [{"type": "text", "text": "..."}]}


PROMPT = "msg_1"  # the messageID kodo sent its prompt with


def _assistant(message_id: str, tool: str | None = None, parent: str = PROMPT) -> dict[str, Any]:
    parts = [{"type": "tool", "tool": tool, "state": {"status": "completed"}}] if tool else []
    info = {"id": message_id, "role": "assistant", "parentID": parent}
    return {"info": info, "parts": parts}


class _Daemon(BaseHTTPRequestHandler):
    """Pages as 1.18.33 does (``MessageV2.page``): the newest ``limit`` messages before
    the ``before`` cursor, oldest first, and ``X-Next-Cursor`` when older ones remain;
    only a page without one (it reaches the session's first message) is checked, and
    answered the format 400 if it holds a user message sent with a ``format``."""

    history: ClassVar[list[dict[str, Any]]] = []
    other_400_after: ClassVar[int | None] = None  # a 400 of another kind after N requests
    other_400_says: ClassVar[str] = "limit: too large"
    fixed: ClassVar[bool] = False  # a daemon without the listing bug
    cursors: ClassVar[bool] = True  # False: a daemon that never says there are more
    ignores_before: ClassVar[bool] = False  # a broken daemon: every page is the newest
    later: ClassVar[list[dict[str, Any]]] = []  # appended once the second request is served
    requests: ClassVar[int] = 0
    listed: ClassVar[int] = 0  # messages the daemon loaded to answer (400s included)

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)
        limit = int(query["limit"][0])
        end = len(self.history)
        if "before" in query and not self.ignores_before:
            end = next(
                i for i, m in enumerate(self.history) if m["info"]["id"] == query["before"][0]
            )
        window = self.history[max(0, end - limit) : end]
        type(self).requests += 1
        type(self).listed += len(window)
        if self.other_400_after is not None and self.requests > self.other_400_after:
            self._send(400, {"name": "BadRequest", "data": {"message": self.other_400_says}})
            return
        more = end - limit > 0 and self.cursors
        for i, message in enumerate([] if more and window else window):
            formatted = message["info"]["role"] == "user" and "format" in message["info"]
            if formatted and not self.fixed:
                said = (
                    'Expected OutputFormatJsonSchema, got {"type":"json_schema"}'
                    f' at [{i}]["info"]["format"]'
                )
                self._send(400, {"name": "BadRequest", "data": {"message": said}})
                return
        self._send(200, window, cursor=window[0]["info"]["id"] if more and window else None)
        if self.requests == 2:
            self.history.extend(self.later)

    def _send(self, status: int, body: object, cursor: str | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        if cursor is not None:
            self.send_header("X-Next-Cursor", cursor)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:
        return None


D = TypeVar("D", bound=_Daemon)


@contextmanager
def serving(base: type[D]) -> Iterator[type[D]]:
    """A subclass of ``base`` with a history and counters of its own, served on a free
    loopback port (its ``url``) until the block ends."""
    fresh: dict[str, Any] = {
        "history": [],
        "other_400_after": None,
        "other_400_says": "limit: too large",
        "fixed": False,
        "cursors": True,
        "ignores_before": False,
        "later": [],
        "appended": [],
        "requests": 0,
        "listed": 0,
    }
    handler = type("_Scripted", (base,), fresh)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def daemon() -> Iterator[type[_Daemon]]:
    with serving(_Daemon) as served:
        yield served


def _earlier(daemon: type[_Daemon], reply: str | None = None) -> list[dict[str, Any]]:
    """The pager's answer, judging ``reply`` (default: the history's newest message)."""
    reply_id = reply or daemon.history[-1]["info"]["id"]
    with OpenCodeClient(daemon.url, timeout_s=5) as client:  # type: ignore[attr-defined]
        return client.earlier_turn_messages(
            "ses_x", directory="/w", prompt_id=PROMPT, reply_id=reply_id
        )


def test_the_turn_starts_where_the_daemon_refuses_to_list_kodos_prompt(
    daemon: type[_Daemon],
) -> None:
    daemon.history = [
        _user(PROMPT, format=True),
        _assistant("msg_2", "read"),
        _assistant("msg_3", "edit"),
        _assistant("msg_4"),
    ]
    assert [m["info"]["id"] for m in _earlier(daemon)] == ["msg_2", "msg_3"]


def test_a_user_message_inside_the_turn_is_refused_not_taken_for_its_start(
    daemon: type[_Daemon],
) -> None:
    """bash ran before a synthetic "continue": paging stopped at that message would
    never show it to the turn's rules."""
    daemon.history = [
        _user(PROMPT, format=True),
        _assistant("msg_2", "bash"),
        _user("msg_3", format=False),
        _assistant("msg_4", "read"),  # (were they to name kodo's prompt all the same)
        _assistant("msg_5"),
    ]
    with pytest.raises(
        OpenCodePermanentError, match=r"a user message kodo did not send \('msg_3'\)"
    ):
        _earlier(daemon)


def test_a_user_message_the_daemon_added_with_a_format_is_refused_by_its_answers_parent(
    daemon: type[_Daemon],
) -> None:
    """The daemon's 400 stops the listing at ANY user message with a format: only the
    answers' ``parentID`` tells that the turn went on past kodo's prompt."""
    daemon.history = [
        _user(PROMPT, format=True),
        _assistant("msg_2", "bash"),
        _user("msg_3", format=True),
        _assistant("msg_4", "read", parent="msg_3"),
        _assistant("msg_5", parent="msg_3"),
    ]
    with pytest.raises(OpenCodePermanentError, match=r"answers 'msg_3', not kodo's prompt"):
        _earlier(daemon)


def test_a_daemon_that_lists_kodos_prompt_ends_the_turn_at_it(daemon: type[_Daemon]) -> None:
    """Should the daemon fix the listing bug, the turn's start is kodo's own message."""
    daemon.fixed = True
    daemon.history = [
        _user(PROMPT, format=True),
        _assistant("msg_2", "read"),
        _assistant("msg_3", "edit"),
        _assistant("msg_4"),
    ]
    assert [m["info"]["id"] for m in _earlier(daemon)] == ["msg_2", "msg_3"]
    daemon.history.insert(2, _user("msg_9", format=True))
    with pytest.raises(OpenCodePermanentError, match=r"a user message kodo did not send"):
        _earlier(daemon)


@pytest.mark.parametrize(
    "said",
    [
        "limit: too large",
        # a model's text quoted in another 400 cannot pass for the daemon's own
        'bad tool input "Expected OutputFormatJsonSchema, got {} at [0]["info"]["format"]"'
        " at [1].parts[0].state",
    ],
    ids=["another-400", "quoting-the-format-bug"],
)
def test_a_400_that_is_not_the_format_bug_is_no_sign_of_the_turns_start(
    daemon: type[_Daemon], said: str
) -> None:
    """bash ran two steps back: a 400 of any other kind must not end the paging there."""
    daemon.history = [
        _user(PROMPT, format=True),
        _assistant("msg_2", "bash"),
        _assistant("msg_3", "read"),
        _assistant("msg_4"),
    ]
    daemon.other_400_after = 1  # the first page; then the page that would list bash
    daemon.other_400_says = said
    with pytest.raises(OpenCodePermanentError) as refused:
        _earlier(daemon)
    assert refused.value.status == 400
    assert said in str(refused.value)


def test_a_turn_started_after_the_answer_is_refused_not_skipped(daemon: type[_Daemon]) -> None:
    """The answer judged must be the session's newest message: a later turn (a prompt
    kodo never sent) would otherwise hide behind its own 400 with its tools unread."""
    daemon.history = [
        _user(PROMPT, format=True),
        _assistant("msg_2", "read"),
        _assistant("msg_3"),  # the answer kodo judges
        _user("msg_9", format=False),
        _assistant("msg_10", "bash", parent="msg_9"),
    ]
    with pytest.raises(OpenCodePermanentError, match=r"newest message 'msg_10' is not the answer"):
        _earlier(daemon, reply="msg_3")


def _long_turn(steps: int) -> list[dict[str, Any]]:
    """kodo's prompt, ``steps - 1`` tool steps, then the answer."""
    tools = [_assistant(f"msg_{n}", "read") for n in range(2, steps + 1)]
    return [_user(PROMPT, format=True), *tools, _assistant(f"msg_{steps + 1}")]


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 17, 30, 50])
def test_a_long_turn_is_read_whole_each_message_about_once(
    daemon: type[_Daemon], steps: int
) -> None:
    """Pages follow the daemon's cursor: a k-step turn costs the daemon O(k) messages
    and O(log k) requests, where paging with ``limit=2, 3, ...`` cost k requests and
    loaded k²/2 messages (50 and 1,325 for 50 steps)."""
    daemon.history = _long_turn(steps)
    earlier = _earlier(daemon)
    assert [m["info"]["id"] for m in earlier] == [f"msg_{n}" for n in range(2, steps + 1)]
    assert daemon.listed <= 3 * (steps + 1), daemon.listed
    assert daemon.requests <= 2 * steps.bit_length() + 2, daemon.requests


def test_a_one_step_turn_still_costs_one_request(daemon: type[_Daemon]) -> None:
    daemon.history = _long_turn(1)
    assert _earlier(daemon) == []
    assert daemon.requests == 1


def test_a_user_message_deep_in_a_long_turn_is_refused_on_its_page(
    daemon: type[_Daemon],
) -> None:
    """bash ran before a synthetic "continue" twenty steps back: a page past the first
    holds it, and it is refused there."""
    daemon.history = _long_turn(30)
    daemon.history.insert(8, _user("msg_99", format=False))
    with pytest.raises(
        OpenCodePermanentError, match=r"a user message kodo did not send \('msg_99'\)"
    ):
        _earlier(daemon)


def test_an_answer_to_another_prompt_deep_in_a_long_turn_is_refused(
    daemon: type[_Daemon],
) -> None:
    daemon.history = _long_turn(30)
    daemon.history[5] = _assistant("msg_6", "bash", parent="msg_77")
    with pytest.raises(OpenCodePermanentError, match=r"answers 'msg_77', not kodo's prompt"):
        _earlier(daemon)


def test_a_daemon_without_cursors_is_refused_not_taken_at_its_first_page(
    daemon: type[_Daemon],
) -> None:
    """A full page and no cursor: kodo cannot tell the session's start from a daemon
    that does not page, so the steps before the page would go unread."""
    daemon.history = _long_turn(6)
    daemon.cursors = False
    with pytest.raises(OpenCodePermanentError, match=r"a full page of 2 and no cursor"):
        _earlier(daemon)


def test_a_daemon_whose_cursor_does_not_move_is_refused(daemon: type[_Daemon]) -> None:
    daemon.history = _long_turn(6)
    daemon.ignores_before = True
    with pytest.raises(OpenCodePermanentError, match=r"listed twice"):
        _earlier(daemon)


def test_a_turn_longer_than_the_cap_is_refused_and_one_at_the_cap_is_read(
    daemon: type[_Daemon],
) -> None:
    daemon.history = _long_turn(12)
    with OpenCodeClient(daemon.url, timeout_s=5) as client:  # type: ignore[attr-defined]
        earlier = client.earlier_turn_messages(
            "ses_x", directory="/w", prompt_id=PROMPT, reply_id="msg_13", max_steps=12
        )
        assert len(earlier) == 11
        with pytest.raises(OpenCodePermanentError, match=r"a turn of more than 11 steps"):
            client.earlier_turn_messages(
                "ses_x", directory="/w", prompt_id=PROMPT, reply_id="msg_13", max_steps=11
            )


def test_a_turn_started_after_the_answer_while_paging_is_refused(
    daemon: type[_Daemon],
) -> None:
    """Later pages lie before the cursor and never show the newest message again: it is
    read once more at the end, as every page's newest message once was."""
    daemon.history = _long_turn(10)
    daemon.later = [_user("msg_90", format=False), _assistant("msg_91", "bash", parent="msg_90")]
    with pytest.raises(OpenCodePermanentError, match=r"newest message 'msg_91' is not the answer"):
        _earlier(daemon, reply="msg_11")
