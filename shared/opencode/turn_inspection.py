"""What a finished turn did besides answering: tools it used, sessions it spawned, usage.

A prompt's reply is only the turn's last message. The call protocol reads the rest
here and fails closed on any tool outside the agent's allowlist, on any tool part that
names a path outside the session's directory or in a ``.git``
(:mod:`shared.opencode.confinement`) and on any child session; the whole turn's usage
is what the ledger records.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from shared.opencode.confinement import SHOWN_NAME, shown_path, tool_uses, violations
from shared.opencode.errors import OpenCodeError
from shared.opencode.messages import (
    AnswerNotJson,
    AnswerTooLarge,
    PromptReply,
    object_or_empty,
    token_usage,
)
from shared.opencode.ports import AgentClient
from shared.opencode.tools import forbidden_tool_uses

MAX_TOKENS = 10**15
"""The most tokens one message, or a turn, is recorded as having used: past any budget,
and a thousand such messages still fit the ledger's ``bigint`` sums (a count of 10**19
had raised ``bigint out of range`` in the settle and left the call claimed for good,
its session and reservation with it: red-team helper-122)."""
MAX_COST_USD = 10.0**9
"""The most one message, or a turn, is recorded as having cost (in micro-dollars, a
thousand of them fit a ``bigint``)."""


def usage_of(info: dict[str, Any]) -> dict[str, Any]:
    """Normalise OpenCode's ``tokens``/``cost`` (of a message or a session) for the ledger.

    Read, not trusted: a cost that is not a non-negative number reads 0 (a ``-5.0`` had
    cancelled a $5 tool step of the same turn in the sum), a total below the counts it
    totals reads as their sum (a total of 2 over a million counted tokens had been
    charged 2), and each value is bounded (:data:`MAX_TOKENS`, :data:`MAX_COST_USD`)."""
    raw = object_or_empty(info.get("tokens"))
    tokens = token_usage(raw)
    total = raw.get("total")
    cost = info.get("cost")
    counted = tokens.total
    # the daemon's own total when it gives one (a positive count, no less than the sum)
    said = total if isinstance(total, int) and _positive(total) else 0
    return {
        "total_tokens": min(max(said, counted), MAX_TOKENS),
        "input_tokens": min(tokens.input, MAX_TOKENS),
        "output_tokens": min(tokens.output, MAX_TOKENS),
        "reasoning_tokens": min(tokens.reasoning, MAX_TOKENS),
        "cache_read_tokens": min(tokens.cache_read, MAX_TOKENS),
        "cache_write_tokens": min(tokens.cache_write, MAX_TOKENS),
        "cost_usd": _cost(cost),
    }


def _cost(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    number = float(value)
    return min(number, MAX_COST_USD) if math.isfinite(number) and number > 0 else 0.0


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def summed_usage(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """The usage of several messages together, added up field by field as the daemon
    adds up a session's totals (../shared/opencode/API.md, per-call accounting; the
    conformance suite checks the two agree on the real daemon), bounded as one is."""
    usages = [usage_of(info) for info in infos]
    summed = {
        key: min(sum(u[key] for u in usages), MAX_TOKENS)
        for key in usage_of({})
        if key != "cost_usd"
    }
    return {**summed, "cost_usd": min(float(sum(u["cost_usd"] for u in usages)), MAX_COST_USD)}


def last_step_usage(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """``last_step_tokens`` and ``last_step_cost_usd``: the usage of the turn's newest
    step that counted any (``{}`` when none did), oldest first in ``infos``.

    A turn cut short (its deadline, an abort, its token bound) was cut in a step that
    had resent the conversation so far, about the last counted step's context, while
    the daemon writes the cut message with tokens 0: the settle (``app.settle_call``,
    migration 0032) spends this much again for that step (red-team helper-129)."""
    for info in reversed(infos):
        usage = usage_of(info)
        if usage["total_tokens"]:
            return {
                "last_step_tokens": usage["total_tokens"],
                "last_step_cost_usd": usage["cost_usd"],
            }
    return {}


@dataclass(frozen=True)
class Turn:
    earlier: list[dict[str, Any]] | OpenCodeError  # the error: the turn is not inspectable
    children: list[dict[str, Any]]
    # The session's totals, read only when the earlier messages could not be (their sum
    # is the turn's usage otherwise); None: not read, or unreadable too.
    session: dict[str, Any] | None = None

    @property
    def usage_known(self) -> bool:
        """Whether the turn's whole usage was read (its messages, or else its totals)."""
        return isinstance(self.earlier, list) or self.session is not None


class TurnRejected(Exception):
    """The daemon answered, but the turn breaks one of our rules."""

    def __init__(self, error_name: str, message: str) -> None:
        super().__init__(message)
        self.error_name = error_name


def turn_usage(turn: Turn, reply: PromptReply) -> dict[str, Any]:
    """The whole turn's usage: its assistant messages added up, every step of it.

    Only the last assistant message of a turn is returned, so its own usage
    undercounts a turn with tool calls. When the earlier messages cannot be read, the
    fresh session's totals stand in (one prompt per session: the same sum); the
    answer's own usage is the floor when those are unreadable too. Child sessions (a
    turn that spawned one is refused) bill on their own: what each listed child spent is
    added, since a session's totals are its own messages' (red-team helper-129).
    """
    children = [object_or_empty(child) for child in turn.children]
    if isinstance(turn.earlier, list):
        infos = [object_or_empty(m.get("info")) for m in turn.earlier]
        return {
            **summed_usage([*infos, reply.info, *children]),
            **last_step_usage([*infos, reply.info]),
        }
    if turn.session is None:
        return summed_usage([reply.info, *children])
    own = turn.session if usage_of(turn.session)["total_tokens"] else reply.info
    return summed_usage([own, *children])


def tool_trail(turn: Turn, reply: PromptReply) -> list[dict[str, Any]]:
    """Every tool use of the turn as the ledger keeps it: tool, status and the paths it
    named (never a tool's content: a write's text is in the worktree, and in patch.diff)."""
    earlier = turn.earlier if isinstance(turn.earlier, list) else []
    parts = [p for m in earlier for p in m.get("parts", []) if isinstance(p, dict)]
    return [
        {"tool": tool, "status": status, "paths": paths}
        for tool, status, paths in tool_uses(parts + reply.parts)
    ]


def assert_turn_rules(
    agent: str,
    session_id: str,
    reply: PromptReply,
    turn: Turn,
    *,
    directory: str,
    prompt_id: str,
) -> None:
    """Raise TurnRejected on an answer that is not of kodo's prompt ``prompt_id`` (its
    ``parentID``), on any tool use outside the allowlist anywhere in the turn, on any
    tool part naming a path outside ``directory`` (the session's worktree) or in a
    ``.git``, whatever its status, and on any child session."""
    if not isinstance(reply.info.get("id"), str) or reply.info.get("parentID") != prompt_id:
        raise TurnRejected(
            "TurnNotInspectable",
            f"the answer {reply.info.get('id')!r:.80} answers"
            f" {reply.info.get('parentID')!r:.80}, not kodo's prompt {prompt_id!r}",
        )
    unread = turn.earlier if isinstance(turn.earlier, OpenCodeError) else None
    earlier = [] if isinstance(turn.earlier, OpenCodeError) else turn.earlier
    parts = [p for m in earlier for p in m.get("parts", []) if isinstance(p, dict)]
    # What the answer shows is judged even when the rest of the turn cannot be read: a
    # broken rule in it is refused as such, not retried as an unreadable turn.
    _assert_tool_rules(agent, session_id, parts + reply.parts, directory)
    if unread is not None:
        said = unread_reason(unread)  # a daemon's 400 may quote a message: never its text
        raise TurnRejected(
            "TurnNotInspectable", f"cannot read the turn's messages: {said}"
        ) from unread
    if turn.children:
        ids = _shown_list([shown_path(str(c.get("id")), SHOWN_NAME) for c in turn.children])
        raise TurnRejected("ChildSessionForbidden", f"session {session_id} spawned {ids}")


SHOWN_UNREAD = 200
"""How much of kodo's own account of an unread answer (its cap, its shape) is quoted."""


def unread_reason(exc: OpenCodeError) -> str:
    """Why a turn could not be read, in kodo's words only: an answer kodo refused to
    parse says why (its own text: the cap, the shape, the parser's reason for a body
    that is not JSON); any other error may quote the model's text (a body's excerpt, a
    daemon's 400 on a listing), so only its kind is said."""
    if isinstance(exc, AnswerTooLarge):
        return shown_path(str(exc), SHOWN_UNREAD)
    if isinstance(exc, AnswerNotJson):
        return f"the body is not JSON ({shown_path(exc.reason, SHOWN_UNREAD)})"
    status = f" HTTP {exc.status}" if exc.status is not None else ""
    name = f" {shown_path(exc.name, SHOWN_NAME)}" if exc.name else ""
    return f"{type(exc).__name__}{status}{name}"


"""How much of the error that kept a turn unread its refusal quotes."""
SHOWN_USES = 10
"""A refusal's message names this many offending tool uses (each bounded: the model
chose their names and paths), then counts the rest."""


def _shown_list(shown: list[str], sep: str = ", ") -> str:
    """The first SHOWN_USES of ``shown`` joined by ``sep``, then how many more."""
    more = len(shown) - SHOWN_USES
    return sep.join(shown[:SHOWN_USES]) + (f"{sep}and {more} more" if more > 0 else "")


def _assert_tool_rules(
    agent: str, session_id: str, parts: list[dict[str, Any]], directory: str
) -> None:
    forbidden = forbidden_tool_uses(agent, parts)
    if forbidden:
        named = _shown_list([shown_path(t, SHOWN_NAME) for t in forbidden])
        raise TurnRejected("ToolNotAllowed", f"agent {agent!r} used {named}")
    escapes = violations(directory, parts)
    if escapes:
        said = _shown_list([v.describe() for v in escapes], "; ")
        raise TurnRejected(escapes[0].rule, f"session {session_id} outside {directory}: {said}")


class TurnInspector:
    """Reads a finished turn: its earlier messages and its children, both in flight at once."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def _reader_pool(self) -> ThreadPoolExecutor:
        """Threads for reads sent beside the caller's own; a forked child makes its own
        (an executor inherited across fork has no live threads)."""
        with self._pool_lock:  # steps on a threads pool share this inspector
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kodo-oc-read")
                self._pool_pid = os.getpid()
            return self._pool

    def close(self) -> None:
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.shutdown(wait=False)
        self._pool = None

    def inspect(self, session_id: str, directory: str, prompt_id: str, reply_id: str) -> Turn:
        """Read what the answer alone does not tell.

        The turn's earlier messages (its tool uses and, with the answer, its usage) and
        the session's children are independent reads, sent together. The session's
        totals are read only if the messages cannot be (a request per call saved).
        """
        pool = self._reader_pool()
        children = pool.submit(self.client.session_children, session_id, directory=directory)
        session: dict[str, Any] | None = None
        try:
            earlier: list[dict[str, Any]] | OpenCodeError = self.client.earlier_turn_messages(
                session_id, directory=directory, prompt_id=prompt_id, reply_id=reply_id
            )
        except OpenCodeError as exc:
            earlier = exc
            try:
                session = self.client.get_session(session_id, directory=directory)
            except OpenCodeError:
                session = None
        return Turn(earlier, children.result(), session)  # a failed children read raises
