"""Directives: bracketed tokens in a prompt's text that script the model's failures.

See the package docstring for the list. Unknown directives are ignored, like any
other prose, so a typo answers normally rather than failing mysteriously.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIRECTIVE = re.compile(r"\[oc:([a-z0-9-]+)(?:=([^\]\s]*))?\]")
_ATTEMPT = re.compile(r"^\s*kodo-attempt:\s*(\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Directives:
    """The failure script of one prompt."""

    invalid: bool = False
    invalid_attempts: int | None = None
    no_structured: bool = False
    api_error: str | None = None  # "" = LLM HTTP 400 (not retryable); "retryable" = 503
    slow_ms: int = 0
    slow_edit_ms: int = 0  # on attempt 1 the build agent pauses between files (abortable)
    abort_fails: int = 0  # the session's first N aborts answer HTTP 500 and stop nothing
    delete_fails: int = 0  # [oc:delete-fails=N]: the session's next N deletes answer 500
    http500: bool = False
    http500_attempts: int | None = None
    garbage: bool = False
    llm500: bool = False
    fail_verify: bool = False
    buggy: bool = False  # a recipe's first edit is wrong; a repair prompt fixes it
    escalate: bool = False  # DecideST asks the approver a question until answered
    nothing_to_verify: bool = False  # DecideST answers "done"
    child: bool = False
    tools: tuple[str, ...] = ()
    fixture: str | None = None  # a NAME.json in the fixtures folder scripts the answers
    huge: int = 0  # grow the structured answer's first string field to this many characters
    spend: int = 0  # [oc:spend=N]: a first step of N tokens, reported before any hold
    loop_top_abort: bool = False  # [oc:loop-top-abort]: an abort ends the turn between steps
    attempt: int = 1

    @property
    def tool_calls(self) -> tuple[tuple[str, str | None], ...]:
        """``[oc:tool=NAME@PATH]`` aims NAME (write, edit, read...) at PATH: relative to
        the working directory, or absolute; plain ``NAME`` uses plausible arguments."""
        calls = (tool.partition("@") for tool in self.tools)
        return tuple((name, target if sep else None) for name, sep, target in calls)

    @property
    def wants_invalid(self) -> bool:
        """Answer off-schema on this attempt?"""
        if self.invalid:
            return True
        return self.invalid_attempts is not None and self.attempt <= self.invalid_attempts

    @property
    def wants_http500(self) -> bool:
        """Answer HTTP 500 ``UnknownError`` on this attempt?"""
        if self.http500:
            return True
        return self.http500_attempts is not None and self.attempt <= self.http500_attempts


def _int(raw: str | None, default: int) -> int:
    return int(raw) if raw is not None and raw.isdigit() else default


def parse(text: str) -> Directives:
    """Read the directives and the ``kodo-attempt: N`` line from a prompt."""
    found = _DIRECTIVE.findall(text)
    flags = {name for name, _ in found}
    values = {name: value for name, value in found}
    attempt = _ATTEMPT.search(text)
    return Directives(
        invalid="invalid" in flags,
        invalid_attempts=_int(values["invalid-attempts"], 0)
        if "invalid-attempts" in values
        else None,
        no_structured="no-structured" in flags,
        api_error=values.get("api-error"),
        slow_ms=_int(values.get("slow"), 0),
        slow_edit_ms=_int(values.get("slow-edit"), 0),
        abort_fails=_int(values.get("abort-fails"), 0),
        delete_fails=_int(values.get("delete-fails"), 0),
        http500="http500" in flags,
        http500_attempts=_int(values["http500-attempts"], 0)
        if "http500-attempts" in values
        else None,
        garbage="garbage" in flags,
        llm500="llm500" in flags,
        fail_verify="fail-verify" in flags,
        buggy="buggy" in flags,
        escalate="escalate" in flags,
        nothing_to_verify="nothing-to-verify" in flags,
        child="child" in flags,
        tools=tuple(value for name, value in found if name == "tool" and value),
        fixture=values.get("fixture"),
        huge=_int(values.get("huge"), 0),
        spend=_int(values.get("spend"), 0),
        loop_top_abort="loop-top-abort" in flags,
        attempt=_int(attempt.group(1), 1) if attempt else 1,
    )


def strip(text: str) -> str:
    """``text`` without directives, so echoing a prompt never re-arms them downstream."""
    return _DIRECTIVE.sub("", text)
