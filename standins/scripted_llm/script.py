"""What the scripted model replies: oc_compat's answers, put the way an LLM says them.

The decision is pure given (seed, request, working tree): the same builders as the
compat server (:func:`standins.oc_compat.answers.answer`) make the content, and the
same usage formula (:func:`standins.oc_compat.shapes.usage_for`) the token counts,
so the real daemon and the compat server report the same answer, tokens and cost.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.hashing import sha256_hex
from standins.oc_compat import answers, fixtures, repo, shapes
from standins.oc_compat.directives import Directives, parse
from standins.scripted_llm.request import STRUCTURED_TOOL, ChatRequest

TOOL_MARKER = "kodo-tool-ran.txt"
"""The file a scripted bash/write call would create: its absence proves a denial held."""

TITLE = "kodo scripted session"


@dataclass(frozen=True)
class Reply:
    """One model turn: text, or one tool call, or an HTTP error instead of a stream."""

    text: str | None = None
    tool: str | None = None
    arguments: str = "{}"
    http_status: int = 200
    error_message: str = ""
    usage: shapes.Usage | None = None
    slow_ms: int = 0

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool is not None else "stop"

    def call_id(self, seed: int, nth: int) -> str:
        return f"call_{sha256_hex(f'{seed}:{nth}:{self.tool}:{self.arguments}')[:8]}"


def _first_line(path: str) -> str:
    """An edit replaces the file's first line, as read now ("" for a missing file: create)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().rstrip("\n")
    except (OSError, UnicodeDecodeError):
        return ""


def tool_arguments(name: str, directory: Path, target: str | None = None) -> dict[str, Any]:
    """Plausible arguments for one of OpenCode's tools (a bash or write leaves a marker).

    ``target`` (from ``[oc:tool=NAME@PATH]``) aims a write, edit or read at PATH, taken
    relative to ``directory`` unless absolute and never normalised: ``../x`` stays as said.
    """
    aimed = None if target is None else os.path.join(directory, target)
    marker = aimed or str(directory / TOOL_MARKER)
    edited = aimed or str(directory / "README.md")
    first = _first_line(edited)
    plausible: dict[str, dict[str, Any]] = {
        "bash": {"command": f"touch {marker} && ls", "description": "list the files"},
        "write": {"filePath": marker, "content": "written by the scripted model\n"},
        "edit": {"filePath": edited, "oldString": first, "newString": f"{first} (edited)"},
        "read": {"filePath": edited},
        "glob": {"pattern": "*"},
        "grep": {"pattern": "def "},
        "list": {"path": aimed or str(directory)},
        "webfetch": {"url": "http://127.0.0.1:9/", "format": "text"},
        "task": {"description": "look around", "prompt": "List files.", "subagent_type": "general"},
    }
    return plausible.get(name, {})


def _usage(seed: int, prompt: str, produced: str) -> shapes.Usage:
    # kodo sends no extra ``system`` text, so the compat server sees "" there too.
    return shapes.usage_for(seed, prompt, "", produced)


_ERRORS = {"": (400, "scripted bad request"), "retryable": (503, "scripted overload")}


def _scripted_failure(directives: Directives, llm500: bool) -> Reply | None:
    if llm500:
        return Reply(http_status=500, error_message="scripted server error")
    if directives.api_error is not None:
        status, message = _ERRORS.get(directives.api_error, _ERRORS[""])
        return Reply(http_status=status, error_message=message)
    return None


def _called_path(arguments: str) -> str:
    try:
        value = json.loads(arguments)
    except ValueError:
        return ""
    path = value.get("filePath") if isinstance(value, dict) else None
    return path if isinstance(path, str) else ""


def _edit_call(directory: Path, change: repo.FileChange) -> tuple[str, dict[str, Any]] | None:
    """The tool call that makes ``change`` (None if it is made already, or is a delete or a
    rename, which the scripted model leaves to oc-compat's tests)."""
    path = str(directory / change.path)
    old = repo.read_text(directory, change.path)
    if change.change == "add" and old is None and not (directory / change.path).exists():
        return "write", {"filePath": path, "content": repo.new_file_text(change)}
    if change.change != "modify" or not old:
        return None
    new = change.new_text(old)
    if new == old:
        return None
    return "edit", {"filePath": path, "oldString": old, "newString": new}


def edit_turn(seed: int, request: ChatRequest, slow_ms: int = 0) -> Reply:
    """The build agent's turn, one tool call per request, as a real model edits: read a
    file, edit it, on to the next; then the EditReport naming the files it changed.

    Stateless: what remains is read from the working tree (a change already made is no
    change, see repo.FileChange), and a call already made this turn is not made again
    (a denied edit is reported, never retried in a loop). ``slow_ms`` holds the reply
    back (``[oc:slow]``: the caller passes it for the turn's first request only)."""
    directory = request.directory
    made = {(tool, _called_path(args)) for tool, args in request.turn_calls}
    changes = answers.scripted_changes(seed, directory, request.prompt)
    for change in changes:
        step = _edit_call(directory, change)
        if step is None or (step[0], step[1]["filePath"]) in made:
            continue
        tool, arguments = step
        if tool == "edit" and ("read", arguments["filePath"]) not in made:
            tool, arguments = "read", {"filePath": arguments["filePath"]}
        said = json.dumps(arguments)
        usage = _usage(seed, request.prompt, said)
        return Reply(tool=tool, arguments=said, usage=usage, slow_ms=slow_ms)
    edited = {path for tool, path in made if tool in ("edit", "write")}
    files = [c.path for c in changes if str(directory / c.path) in edited]
    report = {"summary": answers.scripted_patch_summary(changes), "files": files}
    said = json.dumps(report)
    usage = _usage(seed, request.prompt, said)
    return Reply(tool=STRUCTURED_TOOL, arguments=said, usage=usage, slow_ms=slow_ms)


def decide(seed: int, request: ChatRequest) -> Reply:
    """The reply to ``request``: see the package docstring for the directives."""
    if request.is_title_request:
        return Reply(text=TITLE, usage=_usage(seed, request.prompt, TITLE))
    directives = parse(request.prompt)
    failure = _scripted_failure(directives, "[oc:llm500]" in request.prompt)
    if failure is not None:
        return failure
    first = 1 if directives.spend else 0  # [oc:spend=N]: a costly read comes first
    if request.calls_this_turn == 0 and directives.spend:
        arguments = json.dumps(tool_arguments("read", request.directory))
        usage = shapes.Usage(input=directives.spend, output=0, reasoning=0, cache_read=0)
        return Reply(tool="read", arguments=arguments, usage=usage)
    slow = directives.slow_ms if request.calls_this_turn == first else 0
    nth = request.calls_this_turn - first
    if nth < len(directives.tools):
        name, target = directives.tool_calls[nth]
        arguments = json.dumps(tool_arguments(name, request.directory, target))
        usage = _usage(seed, request.prompt, arguments)
        return Reply(tool=name, arguments=arguments, usage=usage, slow_ms=slow)
    schema = request.structured_schema
    if schema is not None and fixtures.kind_of(schema) == "patch" and not directives.wants_invalid:
        return edit_turn(seed, request, slow)
    fmt = {"type": "json_schema", "schema": schema} if schema is not None else None
    answer = answers.answer(seed, request.directory, request.prompt, fmt, directives)
    if answer.structured is not None:
        arguments = json.dumps(answer.structured)
        usage = _usage(seed, request.prompt, arguments)
        return Reply(tool=STRUCTURED_TOOL, arguments=arguments, usage=usage, slow_ms=slow)
    text = answer.text or ""
    return Reply(text=text, usage=_usage(seed, request.prompt, text), slow_ms=slow)
