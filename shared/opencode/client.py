"""A thin typed client for the OpenCode daemon's HTTP API (``opencode serve``, 1.18.33).

It speaks the real endpoints (see the captures in tests/fixtures/opencode) and turns
every failure into an :class:`~shared.opencode.errors.OpenCodeError`: transport
errors, HTTP errors, bodies of the wrong shape, and errors the daemon reports
inside ``info.error`` of an HTTP 200 reply. It keeps no ledger; callers do.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import quote, urlencode

import httpx

from shared.opencode.diagnosis import DaemonCatalogue, diagnose_server_error, may_be_configuration
from shared.opencode.errors import (
    OpenCodeError,
    OpenCodePermanentError,
    OpenCodeTimeout,
    OpenCodeTransientError,
    OpenCodeUnreachable,
    classify_http_error,
    classify_info_error,
    is_format_400,
)
from shared.opencode.events import DEFAULT_MAX_EVENT_BYTES, OcEvent, SseDecoder
from shared.opencode.json_shape import parse_failure, shape_problem, strict_loads
from shared.opencode.messages import (
    DEFAULT_MAX_ANSWER_BYTES,
    AnswerNotJson,
    AnswerTooLarge,
    ModelRef,
    PromptReply,
    TokenUsage,
    object_or_empty,
)
from shared.opencode.transport import Answer, Broken, ConnectionPool, ReadTimeout, Unreachable

__all__ = [
    "AnswerTooLarge",
    "ModelRef",
    "OcEvent",
    "OpenCodeClient",
    "PromptReply",
    "SseEventStream",
    "TokenUsage",
    "classify_info_error",
]
# The message types live in shared.opencode.messages (no transport); re-exported here
# for the callers that speak to this adapter directly.

CONNECT_TIMEOUT_S = 5.0
MAX_TURN_STEPS = 50
"""The most steps of a turn :meth:`OpenCodeClient.earlier_turn_messages` reads; a longer
turn is refused unread. kodo's daemon config caps its agents below it (``steps``)."""


def _turn_start(infos: list[dict[str, Any]], prompt_id: str | None) -> int:
    """Where the turn starts in a page (oldest first): after kodo's own user message
    ``prompt_id`` if listed, else at the page's start. Any other user message refuses."""
    start = 0
    for index, info in enumerate(infos):
        if info.get("role") != "user":
            continue
        found = info.get("id")
        if start > 0 and found == prompt_id:
            raise OpenCodePermanentError(f"kodo's prompt {found!r:.80} is listed twice")
        if prompt_id is None or found != prompt_id or start > 0:
            raise OpenCodePermanentError(
                f"a user message kodo did not send ({found!r:.80}) inside the turn: the"
                " daemon continued it on its own; its earlier steps cannot be judged"
            )
        start = index + 1
    return start


def _refuse_foreign(infos: list[dict[str, Any]], prompt_id: str | None) -> None:
    """Every assistant message of the turn answers kodo's prompt (``parentID``)."""
    if prompt_id is None:
        return
    for info in infos:
        if info.get("parentID") != prompt_id:
            raise OpenCodePermanentError(
                f"message {info.get('id')!r:.80} of the turn answers"
                f" {info.get('parentID')!r:.80}, not kodo's prompt {prompt_id!r}: the daemon"
                " continued the turn on its own; its earlier steps cannot be judged"
            )


MAX_CURSOR_CHARS = 512
"""The longest ``X-Next-Cursor`` kodo sends back (1.18.33's are about 80 characters)."""


def _cursor(headers: Mapping[str, str]) -> str | None:
    """The daemon's cursor to the messages before a page, if it says there are more."""
    cursor = headers.get("x-next-cursor")
    if cursor is None:
        return None
    if not cursor or len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
        raise OpenCodePermanentError(f"GET messages: an unusable X-Next-Cursor {cursor!r:.80}")
    return cursor


@dataclass
class ReadBudget:
    """Bytes several exchanges may read in all (``what``: what they read, for a refusal)."""

    left: int
    what: str


class _TurnPager:
    """What :meth:`OpenCodeClient.earlier_turn_messages` has read of a turn, newest page
    first, and which page to ask for next; it refuses a page it cannot trust.

    The first two pages are the session's newest messages (two, then three): each shows
    the answer still newest, as the old pager's every page did, and the second must end
    with the first (nothing came in between); a two-step turn ends at it (the format
    400). Later pages lie before the daemon's cursor, 1, 2, 4... messages at a time, and
    the newest message is read once more at the end. 1.18.33 answers the format 400
    only to a page with no older message behind it, one that reaches the session's
    first message: kodo's prompt. So after a 400 on ``s`` messages before the cursor at
    most ``s - 1`` steps remain (``left``), and each later page halves what is not
    known; once none can remain, the message before the last one read is the prompt.
    """

    NEWEST = (2, 3)
    """The sizes of the pages read from the newest message."""

    def __init__(self, prompt_id: str | None, reply_id: str | None, max_steps: int) -> None:
        self.prompt_id = prompt_id
        self.reply_id = reply_id
        self.max_earlier = max_steps - 1  # the answer is the turn's last step
        self.newest_first: list[list[dict[str, Any]]] = []
        self.newest_ids: list[object] = []  # the first page's, to find again at the second's end
        self.seen: set[object] = set()
        self.earlier = 0
        self.cursor: str | None = None
        self.size = self.NEWEST[0]
        self.left: int | None = None  # the most steps before the cursor, once a 400 said
        self.pages = 0
        self.done = False

    @property
    def turn(self) -> list[dict[str, Any]]:
        return [m for page in reversed(self.newest_first) for m in page]

    def next_query(self) -> dict[str, str]:
        query = {"limit": str(self.size)}
        if self.cursor is not None:
            query["before"] = self.cursor
        return query

    def reached_the_prompt(self) -> None:
        """The daemon's 400: the range asked for reaches the session's first message."""
        if self.cursor is None:
            self.done = True  # the message before the ones read is kodo's prompt
            return
        self._bound(self.size - 1)

    def take(self, page: list[dict[str, Any]], cursor: str | None) -> None:
        infos = [object_or_empty(m.get("info")) for m in page]
        newest = self.cursor is None  # a page that ends at the session's newest message
        known = len(self.newest_ids)  # at that page's end: the first page, read again
        if newest and cursor is not None and len(page) < self.size:
            # the 400 on the next newest page would then not place kodo's prompt
            raise OpenCodePermanentError(
                f"GET messages: {len(page)} of the {self.size} newest messages asked for,"
                " and a cursor to more: the turn's start cannot be found"
            )
        if newest and self.reply_id is not None:
            self.check_newest(infos[-1].get("id") if infos else None)
        if newest and known:
            again = [info.get("id") for info in infos[-known:]]
            if len(infos) < known or again != self.newest_ids:
                raise OpenCodePermanentError(
                    f"GET messages: the session's newest messages changed while the turn was"
                    f" read ({again!r:.160}, then {self.newest_ids!r:.160})"
                )
        fresh = infos[: len(infos) - known] if newest else infos
        for info in fresh:
            key = info.get("id")
            if not isinstance(key, str) or key in self.seen:
                raise OpenCodePermanentError(
                    f"GET messages: message {key!r:.80} listed twice, or without an id"
                )
            self.seen.add(key)
        start = _turn_start(infos, self.prompt_id)
        _refuse_foreign(infos[start:], self.prompt_id)
        if newest and not known:
            steps = page[start:-1]  # the answer is not a step before itself
            self.newest_ids = [info.get("id") for info in infos]
        else:
            steps = page[start : len(page) - known] if newest else page[start:]
        self.newest_first.append(steps)
        self.earlier += len(steps)
        self.pages += 1
        if self.earlier > self.max_earlier:
            raise OpenCodePermanentError(
                f"a turn of more than {self.max_earlier + 1} steps: refusing to trust it"
            )
        if start > 0 or (cursor is None and len(page) < self.size):
            self.done = True  # kodo's own message listed, or the session starts here
            return
        if cursor is None:
            raise OpenCodePermanentError(
                f"GET messages: a full page of {len(page)} and no cursor to the messages"
                " before it: the turn's start cannot be found"
            )
        if not page:
            raise OpenCodePermanentError("GET messages: an empty page with a cursor to more")
        if newest and not known:
            self.size = self.NEWEST[1]  # the newest again, one further back
            return
        self.cursor = cursor
        if self.left is not None:
            self._bound(self.left - len(page))
        else:  # 1, 2, 4... after the newest pages
            self.size = 1 if newest else self.size * 2
            self.size = min(self.size, self.max_earlier - self.earlier + 1)  # one past the cap

    def _bound(self, left: int) -> None:
        """At most ``left`` steps remain before the cursor: none, or ask for half."""
        self.left = left
        self.done = left <= 0
        self.size = (left + 1) // 2

    def check_newest(self, newest: object) -> None:
        if newest != self.reply_id:
            raise OpenCodePermanentError(
                f"the session's newest message {newest!r:.80} is not the answer"
                f" {self.reply_id!r:.80}: a turn kodo did not start followed it"
            )


class OpenCodeClient:
    """One keep-alive connection pool to one daemon; close it (or use ``with``)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        username: str = "opencode",
        password: str = "",
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._max_answer_bytes = max_answer_bytes
        auth = httpx.BasicAuth(username, password) if password else None
        # A compressed body could expand past the cap inside one chunk: ask for none.
        headers = {"Accept-Encoding": "identity"}
        # Requests go through the standard library's http.client on kept-alive
        # connections (shared.opencode.transport): per request here httpx cost 1.5 ms
        # of CPU, httpcore 0.2, http.client 0.075, and a run makes twenty. The event
        # stream, one long-lived request per daemon, keeps httpx.
        self._requests = _Requests(
            self.base_url, username=username, password=password if auth else None
        )
        self._http = httpx.Client(
            base_url=self.base_url, timeout=self._timeout(timeout_s), auth=auth, headers=headers
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._requests.close()
        self._http.close()

    @staticmethod
    def _timeout(read_s: float) -> httpx.Timeout:
        return httpx.Timeout(read_s, connect=min(CONNECT_TIMEOUT_S, read_s))

    def _call(
        self,
        method: str,
        path: str,
        *,
        directory: str | None = None,
        body: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        query: dict[str, str] | None = None,
    ) -> object:
        """Send one request and return its parsed JSON body, or raise an OpenCodeError."""
        return self._exchange(
            method, path, directory=directory, body=body, timeout_s=timeout_s, query=query
        )[0]

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        directory: str | None = None,
        body: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        query: dict[str, str] | None = None,
        budget: ReadBudget | None = None,
    ) -> tuple[object, dict[str, str]]:
        """:meth:`_call`, with the response's headers (by lower-case name); ``budget``:
        what several exchanges may read in all (each is under the cap too)."""
        params = {"directory": directory} if directory is not None else {}
        params.update(query or {})
        what = f"{method} {path}"
        read_s = timeout_s if timeout_s is not None else self._timeout_s
        try:
            with self._requests.stream(method, path, params, body, read_s) as response:
                status = response.status
                headers = response.headers
                content = self._bounded_body(headers, response.chunks(), what, budget)
        except Unreachable as exc:
            raise OpenCodeUnreachable(f"{what}: {exc}") from exc
        except ReadTimeout as exc:
            raise OpenCodeTimeout(f"{what}: no answer in time ({exc})") from exc
        except Broken as exc:
            raise OpenCodeTransientError(f"{what}: {exc}") from exc
        if status == 204 and not content:
            return None, headers  # No Content (prompt_async); callers check the shape
        success = 200 <= status < 300
        misshapen = shape_problem(content)
        if misshapen is not None:
            raise self._misshapen(what, misshapen)
        try:
            parsed: object = strict_loads(content.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # deep nesting fits under any byte cap
            text = content[:200].decode("utf-8", "replace")
            if success:
                reason = parse_failure(exc)
                raise AnswerNotJson(
                    f"{what}: body is not JSON ({reason}): {text}", reason=reason
                ) from None
            parsed = text
        if success:
            return parsed, headers
        raise classify_http_error(status, parsed)

    def _bounded_body(
        self,
        headers: Mapping[str, str],
        chunks: Iterable[bytes],
        what: str,
        budget: ReadBudget | None = None,
    ) -> bytes:
        """The body, read until ``max_answer_bytes`` (or what ``budget`` has left, which
        it is then charged) and no further (stream and stop)."""
        cap = self._max_answer_bytes if budget is None else min(self._max_answer_bytes, budget.left)
        if budget is not None and budget.left < self._max_answer_bytes:
            what = f"{what} (with the {budget.what} read before it)"
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise self._too_large(what, f"declares {int(declared)} bytes")
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # httpx would inflate each chunk whole (and ``gzip, gzip`` nests): a few
            # hundred bytes become gigabytes before any count. Identity was asked for.
            raise self._too_large(
                what, f"came compressed (Content-Encoding: {encoding[:40]}), unasked"
            )
        parts: list[bytes] = []
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > cap:
                raise self._too_large(what, f"passed {cap} bytes and was cut off")
            parts.append(chunk)
        if budget is not None:
            budget.left -= size
        return b"".join(parts)

    @staticmethod
    def _misshapen(what: str, how: str) -> AnswerTooLarge:
        return AnswerTooLarge(
            f"{what}: answer misshapen: the body {how} (refused before parsing)",
            name="AnswerTooLarge",
        )

    def _too_large(self, what: str, how: str) -> AnswerTooLarge:
        return AnswerTooLarge(
            f"{what}: answer too large: the body {how}; "
            f"KODO_MAX_ANSWER_BYTES={self._max_answer_bytes} (refused before parsing)",
            name="AnswerTooLarge",
        )

    @staticmethod
    def _object(value: object, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise OpenCodePermanentError(f"{what}: expected an object, got {value!r:.200}")
        return value

    def _session(self, value: object, what: str) -> dict[str, Any]:
        session = self._object(value, what)
        if not isinstance(session.get("id"), str):
            raise OpenCodePermanentError(f"{what}: session has no id")
        return session

    @staticmethod
    def _path(session_id: str, suffix: str = "") -> str:
        return f"/session/{quote(session_id, safe='')}{suffix}"

    def health(self, *, timeout_s: float = 2.0) -> dict[str, Any]:
        """``GET /global/health`` with a short timeout: a booting daemon can hang a probe."""
        return self._object(
            self._call("GET", "/global/health", timeout_s=timeout_s), "GET /global/health"
        )

    def wait_healthy(self, *, deadline_s: float, probe_timeout_s: float = 2.0) -> dict[str, Any]:
        """Probe until the daemon says healthy; raise OpenCodeTimeout after ``deadline_s``.

        Transient failures are retried; permanent ones (e.g. bad credentials) are not.
        """
        deadline = time.monotonic() + deadline_s
        pause = 0.05
        last: OpenCodeError | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OpenCodeTimeout(f"OpenCode not healthy within {deadline_s}s (last: {last})")
            try:
                answer = self.health(timeout_s=min(probe_timeout_s, max(remaining, 0.05)))
                if answer.get("healthy") is True:
                    return answer
                last = OpenCodeTransientError(f"health says {answer!r:.200}")
            except OpenCodeTransientError as exc:
                last = exc
            time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
            pause = min(pause * 2, 0.5)

    def create_session(
        self, *, directory: str, title: str, permission: list[dict[str, str]] | None = None
    ) -> dict[str, Any]:
        """``POST /session``; a title avoids the extra title-generation model call."""
        body: dict[str, Any] = {"title": title}
        if permission is not None:
            body["permission"] = permission
        return self._session(
            self._call("POST", "/session", directory=directory, body=body), "POST /session"
        )

    def get_session(
        self, session_id: str, *, directory: str, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """``GET /session/{id}``: includes the session's running cost and token totals.
        ``timeout_s`` bounds the read (default: the client's)."""
        return self._session(
            self._call("GET", self._path(session_id), directory=directory, timeout_s=timeout_s),
            "GET /session/{id}",
        )

    def delete_session(self, session_id: str, *, directory: str) -> bool:
        """``DELETE /session/{id}``: the session and its messages are gone from the daemon."""
        value = self._call("DELETE", self._path(session_id), directory=directory)
        if not isinstance(value, bool):
            raise OpenCodePermanentError(f"DELETE /session/{{id}}: not a bool: {value!r:.200}")
        return value

    def session_children(self, session_id: str, *, directory: str) -> list[dict[str, Any]]:
        """``GET /session/{id}/children``: sub-agent sessions the turn spawned."""
        value = self._call("GET", self._path(session_id, "/children"), directory=directory)
        if not isinstance(value, list) or not all(isinstance(s, dict) for s in value):
            raise OpenCodePermanentError(f"GET children: not a list of objects: {value!r:.200}")
        return value

    def earlier_turn_messages(
        self,
        session_id: str,
        *,
        directory: str,
        prompt_id: str | None = None,
        reply_id: str | None = None,
        max_steps: int = MAX_TURN_STEPS,
    ) -> list[dict[str, Any]]:
        """The assistant messages of the last turn BEFORE its last one, oldest first.

        A prompt's reply is only the turn's last message; tool calls made on the way
        live in earlier ones (the caller has the last one already). 1.18.33 answers 400
        to a page of messages that reaches the session's first message when one of them
        is a user message sent with a ``format`` (API notes 5.1; a page with older
        messages behind it is listed as stored, probed in the conformance suite), and
        kodo's prompt, sent with one, is its fresh session's first message: that 400
        marks the turn's start. The first two pages are the newest messages (a one-step
        turn costs one request, a two-step turn two); later pages are the messages
        before the daemon's cursor (``before=``, from ``X-Next-Cursor``), 1, 2, 4... at a
        time, then halving what a 400 left unknown (:class:`_TurnPager`): each message
        is read about once, where asking for ``limit=2, 3, ...`` read a k-step turn's
        messages k²/2 times. A full page without a cursor is refused: kodo could not
        tell whether the turn goes on.

        ``prompt_id``: the ``messageID`` kodo sent the prompt with. Every assistant
        message listed must name it as ``parentID``, and a listed user message with
        that id is the turn's start. Any other user message is one the daemon added
        inside the turn (as auto-compaction does with a synthetic "continue", which
        kodo's daemons have turned off) or one sent by someone else; an assistant
        message of another parent answers one. The steps before it would escape the
        turn's rules, so either is refused (OpenCodePermanentError), never taken for
        the turn's start. Every message after the prompt is listed on some page, so
        none hides behind the 400. ``reply_id``: the answer kodo judges; the session's
        newest message must be it on the newest pages and once more at the end of a
        longer read (a message after it would belong to a prompt kodo never sent).
        """
        pager = _TurnPager(prompt_id, reply_id, max_steps)
        # The pages together, not each alone, are bounded by the cap: a model sizes its
        # steps (parallel reads of 50 kB, its own writes), and ten pages each under the
        # cap made one turn's read hold nine times it (red-team helper-98).
        budget = ReadBudget(self._max_answer_bytes, "turn's earlier messages")
        while not pager.done:
            query = pager.next_query()
            try:
                page, headers = self._exchange(
                    "GET",
                    self._path(session_id, "/message"),
                    directory=directory,
                    query=query,
                    budget=budget,
                )
            except OpenCodePermanentError as exc:
                if not is_format_400(exc):
                    raise
                pager.reached_the_prompt()  # the range holds the turn's user message
                continue
            if not isinstance(page, list) or not all(isinstance(m, dict) for m in page):
                raise OpenCodePermanentError(f"GET messages: not a list of objects: {page!r:.200}")
            pager.take(page, _cursor(headers))
        if pager.pages > 1 and reply_id is not None:  # read within the turn's budget too
            newest = self.last_message(session_id, directory=directory, budget=budget)
            pager.check_newest(newest.info.get("id") if newest is not None else None)
        return pager.turn

    @staticmethod
    def _prompt_body(
        agent: str,
        model: ModelRef,
        text: str,
        tools: dict[str, bool],
        format: dict[str, Any] | None,
        system: str | None,
        message_id: str | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "agent": agent,
            "model": model.to_json(),
            "tools": tools,
            "parts": [{"type": "text", "text": text}],
        }
        if message_id is not None:
            body["messageID"] = message_id
        if format is not None:
            body["format"] = format
        if system is not None:
            body["system"] = system
        return body

    def prompt(
        self,
        session_id: str,
        *,
        directory: str,
        agent: str,
        model: ModelRef,
        text: str,
        tools: dict[str, bool],
        format: dict[str, Any] | None,
        system: str | None = None,
        timeout_s: float | None = None,
        message_id: str | None = None,
    ) -> PromptReply:
        """``POST /session/{id}/message``: blocks until the turn ends.

        An ``info.error`` in the reply is raised as its mapped error with ``.reply`` set,
        so the caller can still record what was billed.
        """
        body = self._prompt_body(agent, model, text, tools, format, system, message_id)
        try:
            raw = self._call(
                "POST",
                self._path(session_id, "/message"),
                directory=directory,
                body=body,
                timeout_s=timeout_s,
            )
        except OpenCodeError as exc:
            diagnosed = self.diagnose(exc, directory=directory, agent=agent, model=model)
            if diagnosed is exc:
                raise
            raise diagnosed from exc
        reply = PromptReply.from_json(raw)
        error = classify_info_error(reply.info)
        if error is not None:
            error.reply = reply
            raise error
        return reply

    def prompt_async(
        self,
        session_id: str,
        *,
        directory: str,
        agent: str,
        model: ModelRef,
        text: str,
        tools: dict[str, bool],
        format: dict[str, Any] | None,
        system: str | None = None,
        message_id: str | None = None,
    ) -> None:
        """``POST /session/{id}/prompt_async``: start the turn and return (204) at once.

        The turn's end is told by the event stream (``session.idle``, or
        ``session.error`` alone for a turn refused before it started: an unknown agent
        or model is a 204 here, then an ``UnknownError`` event) and by
        ``GET /session/status``; its answer is :meth:`last_message`. HTTP failures
        raise what :meth:`prompt` raises (404 unknown session, 400 bad body...); any
        answer but an empty 204 is refused.
        """
        body = self._prompt_body(agent, model, text, tools, format, system, message_id)
        try:
            raw = self._call(
                "POST", self._path(session_id, "/prompt_async"), directory=directory, body=body
            )
        except OpenCodeError as exc:
            diagnosed = self.diagnose(exc, directory=directory, agent=agent, model=model)
            if diagnosed is exc:
                raise
            raise diagnosed from exc
        if raw is not None:
            raise OpenCodePermanentError(
                f"POST /session/{{id}}/prompt_async: expected 204 No Content, got {raw!r:.200}"
            )

    def last_message(
        self, session_id: str, *, directory: str, budget: ReadBudget | None = None
    ) -> PromptReply | None:
        """``GET /session/{id}/message?limit=1``: the session's newest message (the answer
        of its last turn once ``session.idle`` came), or None for a session without
        messages. ``limit=1`` keeps clear of the daemon's 400 on a range holding a user
        message sent with ``format`` (API notes 5.1), unless that message is the newest:
        a turn that never answered (that 400 is raised as it is).

        The message is returned unjudged: the caller checks ``role``,
        ``time.completed``, ``info.error`` and the answer, as for :meth:`prompt`.
        ``budget``: charged for the read (see :class:`ReadBudget`).
        """
        page, _ = self._exchange(
            "GET",
            self._path(session_id, "/message"),
            directory=directory,
            query={"limit": "1"},
            budget=budget,
        )
        if not isinstance(page, list) or len(page) > 1:
            raise OpenCodePermanentError(
                f"GET messages?limit=1: not a list of at most one: {page!r:.200}"
            )
        return PromptReply.from_json(page[0]) if page else None

    def events(
        self,
        *,
        directory: str | None = None,
        timeout_s: float,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        only: frozenset[str] | None = None,
    ) -> SseEventStream:
        """Open the event stream: ``GET /event?directory=`` for one directory's events, or
        ``GET /global/event`` (``directory=None``) for every directory's, each naming
        its directory. ``timeout_s`` bounds the wait for each chunk (the daemon sends a
        heartbeat every 10 s, so give more). ``only``: the event types to yield (the
        others are not even parsed; see SseDecoder). Close it (or use ``with``)."""
        if directory is not None:
            request = self._http.build_request(
                "GET", "/event", params={"directory": directory}, timeout=self._timeout(timeout_s)
            )
        else:
            request = self._http.build_request(
                "GET", "/global/event", timeout=self._timeout(timeout_s)
            )
        what = f"GET {request.url.path}"
        try:
            response = self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise OpenCodeUnreachable(f"{what}: {type(exc).__name__}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise OpenCodeTimeout(f"{what}: no answer in time ({exc})") from exc
        except httpx.TransportError as exc:
            raise OpenCodeTransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not response.is_success or kind != "text/event-stream":
            try:
                content = self._bounded_body(response.headers, response.iter_raw(), what)
            finally:
                response.close()
            misshapen = shape_problem(content)
            if misshapen is not None:
                raise self._misshapen(what, misshapen)
            try:
                parsed: object = strict_loads(content.decode("utf-8"))
            except (ValueError, RecursionError):
                parsed = content[:200].decode("utf-8", "replace")
            if response.is_success:
                raise OpenCodePermanentError(
                    f"{what}: not an event stream ({kind!r}): {parsed!r:.200}"
                )
            raise classify_http_error(response.status_code, parsed)
        decoder = SseDecoder(wrapped=directory is None, max_event_bytes=max_event_bytes, only=only)
        return SseEventStream(response, decoder, what)

    def catalogue(self, *, directory: str) -> DaemonCatalogue | None:
        """The agents (``GET /agent``) and models (``GET /config/providers``) the daemon
        offers in ``directory``; ``None`` if either answer has another shape."""
        agents = self._call("GET", "/agent", directory=directory)
        providers = self._call("GET", "/config/providers", directory=directory)
        return DaemonCatalogue.from_json(agents, providers)

    def diagnose(
        self, error: OpenCodeError, *, directory: str, agent: str, model: ModelRef
    ) -> OpenCodeError:
        """``error`` as a configuration error if it is the daemon's answer to an unknown
        agent or model and the daemon's lists lack ours.

        A 500 we cannot diagnose stays what it was (transient): retrying a daemon that
        failed inside is right, and the attempt budget bounds it.
        """
        if not may_be_configuration(error):
            return error
        try:
            catalogue = self.catalogue(directory=directory)
        except OpenCodeError as probe:
            said = f"{error.message} (agents and models unreadable: {probe})"
            return type(error)(said, status=error.status, name=error.name, data=error.data)
        if catalogue is None:
            return error
        return diagnose_server_error(error, agent, (model.provider_id, model.model_id), catalogue)

    def abort(self, session_id: str, *, directory: str, timeout_s: float | None = None) -> bool:
        """``POST /session/{id}/abort``: a blocked prompt then returns MessageAbortedError."""
        value = self._call(
            "POST", self._path(session_id, "/abort"), directory=directory, timeout_s=timeout_s
        )
        if not isinstance(value, bool):
            raise OpenCodePermanentError(f"POST /session/{{id}}/abort: not a bool: {value!r:.200}")
        return value

    def busy_sessions(self, *, directory: str, timeout_s: float | None = None) -> dict[str, Any]:
        """``GET /session/status``: ``{sessionID: {type: busy|retry}}`` for the directory's
        sessions that are not idle (an idle session is absent)."""
        value = self._call("GET", "/session/status", directory=directory, timeout_s=timeout_s)
        return self._object(value, "GET /session/status")

    def dispose_instance(self, *, directory: str, timeout_s: float | None = None) -> bool:
        """``POST /instance/dispose?directory=``: the daemon lets go of what it opened for
        ``directory`` (about 60 MB and thousands of memory mappings per worktree with
        opencode serve 1.18.33, kept after its sessions are deleted). Sessions stay
        stored. The daemon opens a directory for any request naming it, this one too: a
        directory it never opened costs a boot (about 1 s of CPU) to dispose."""
        value = self._call("POST", "/instance/dispose", directory=directory, timeout_s=timeout_s)
        if not isinstance(value, bool):
            raise OpenCodePermanentError(f"POST /instance/dispose: not a bool: {value!r:.200}")
        return value


class _Requests:
    """Plain requests to one daemon over a keep-alive pool (:mod:`shared.opencode.transport`)."""

    def __init__(self, base_url: str, *, username: str, password: str | None) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) daemon URL: {base_url!r}")
        self._prefix = url.raw_path.rstrip(b"/").decode("ascii")
        self._headers: list[tuple[str, str]] = [
            ("Host", url.netloc.decode("ascii")),  # host[:port], as httpx sent it
            ("Accept", "*/*"),
            ("Accept-Encoding", "identity"),
            ("Connection", "keep-alive"),
            ("User-Agent", "kodo"),
        ]
        if password is not None:
            token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            self._headers.append(("Authorization", f"Basic {token}"))
        port = url.port or (443 if url.scheme == "https" else 80)
        context = httpx.create_ssl_context() if url.scheme == "https" else None
        self._pool = ConnectionPool(url.scheme, url.host, port, ssl_context=context)

    def stream(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        body: dict[str, Any] | None,
        read_s: float,
    ) -> AbstractContextManager[Answer]:
        """The answer as a context manager (``status``, ``headers``, ``chunks()``)."""
        target = self._prefix + path
        if params:
            target += "?" + urlencode(params, quote_via=quote)
        headers = list(self._headers)
        content: bytes | None = None
        if body is not None:
            # as httpx encodes ``json=``
            content = json.dumps(
                body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            headers.append(("Content-Type", "application/json"))
        if body is not None or method in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(content or b""))))
        return self._pool.request(
            method,
            target,
            headers,
            content,
            connect_s=min(CONNECT_TIMEOUT_S, read_s),
            read_s=read_s,
        )

    def close(self) -> None:
        self._pool.close()


class SseEventStream:
    """An open event stream: iterate it for :class:`OcEvent` records, then close it.

    Iteration ends when the daemon ends the stream cleanly; a broken stream raises
    OpenCodeTransientError, a silence longer than the read timeout OpenCodeTimeout
    (either way: reconnect, and reconcile what was missed). Events of another shape
    are skipped and counted in :attr:`skipped`, never guessed at.
    """

    def __init__(self, response: httpx.Response, decoder: SseDecoder, what: str) -> None:
        self._response = response
        self._decoder = decoder
        self._what = what

    @property
    def skipped(self) -> Counter[str]:
        return self._decoder.skipped

    @property
    def parsed(self) -> int:
        return self._decoder.parsed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._response.close()

    def __iter__(self) -> Iterator[OcEvent]:
        try:
            for chunk in self._response.iter_raw():
                yield from self._decoder.feed(chunk)
        except httpx.TimeoutException as exc:
            raise OpenCodeTimeout(f"{self._what}: no event or heartbeat in time ({exc})") from exc
        except httpx.TransportError as exc:
            if self._response.is_closed:
                return  # closed by us
            raise OpenCodeTransientError(
                f"{self._what}: stream broke: {type(exc).__name__}: {exc}"
            ) from exc
