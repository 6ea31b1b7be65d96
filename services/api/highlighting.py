"""Syntax classes for a patch's lines, lexed in a child process that is killed at a deadline.

The lexer is chosen by a file name the agent chose, and it lexes text the agent wrote.
Many Pygments lexers are quadratic on some text, some inside one token: 80 kB of spaces
on one line of a ``Makefile`` is a single token that took 2.75 s (400 kB: about 70 s),
and 20 kB of blank-ish lines in an ``*.au3`` file took 78 s. Lexed in the API worker,
such a patch held the event loop past gunicorn's 30 s timeout: the worker was killed
with every stream it served, and the run's page could never be opened (a red-team
pass). Python's regex engine cannot be interrupted, so the lexing runs in a child
process (``python -m services.api.highlighting``, started with ``posix_spawn`` from a
gevent worker) that is killed at :data:`TIMEOUT_S`; whatever it did not lex is shown
plain. The child stops itself between tokens a little earlier, so files lexed in time
keep their colours. Results are cached by the request's digest: a run's page reloads
as the run moves, and its patches never change.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

import structlog
from pygments.token import STANDARD_TYPES, Token  # type: ignore[import-untyped]

from shared import cospawn
from shared.apart import run_apart

log = structlog.get_logger("kodo.api.highlight")

TIMEOUT_S = 2.0
"""Wall time the child may take for one page's patches; it is killed past it."""
CHILD_BUDGET_S = 1.5
"""When the child stops lexing (checked between tokens) and answers with what it has."""
CACHED = 16
"""Pages' results kept per API process (each at most :data:`CACHED_CHARS` of JSON)."""
CACHED_CHARS = 2_000_000

Job = tuple[str, list[list[str]]]
"""A file's path (which picks the lexer) and its sides: each a list of line texts,
lexed as one document (so a string spanning lines stays one)."""
Lexed = list[list[list[str]]] | None
"""A side's lines, each a list of ``[css, text]`` pieces; None: shown plain."""

_FAMILIES = (
    Token.Keyword,
    Token.Name.Builtin,
    Token.Name.Function,
    Token.Name.Class,
    Token.Name.Decorator,
    Token.Literal.String,
    Token.Literal.Number,
    Token.Comment,
    Token.Operator,
)
"""The token families the page colours; any other token takes its nearest family's class."""
_cache: OrderedDict[str, list[list[Lexed]]] = OrderedDict()
_lock = threading.Lock()


def highlighted(jobs: list[Job], *, timeout_s: float = TIMEOUT_S) -> list[list[Lexed]]:
    """Each job's sides lexed, in order; a side the child did not lex (no lexer for the
    name, the lexer changed the text, out of time, the child failed) is None."""
    plain: list[list[Lexed]] = [[None] * len(sides) for _, sides in jobs]
    if not jobs:
        return plain
    request = json.dumps({"budget_s": min(CHILD_BUDGET_S, timeout_s * 0.75), "jobs": jobs}).encode()
    key = hashlib.sha256(request).hexdigest()
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    try:
        done = _run_child(request, timeout_s)
    except subprocess.TimeoutExpired:
        log.info("highlight.cut", files=len(jobs), timeout_s=timeout_s)  # the agent's text
        return plain
    except OSError as exc:
        log.warning("highlight.unavailable", error=str(exc))
        return plain
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace")[-300:]
        log.warning("highlight.failed", exit_code=done.returncode, stderr=said)
        return plain
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        answer = None
    if not _fits(answer, jobs):
        log.warning("highlight.unreadable", stdout_bytes=len(done.stdout))
        return plain
    if len(done.stdout) <= CACHED_CHARS:
        with _lock:
            _cache[key] = answer
            while len(_cache) > CACHED:
                _cache.popitem(last=False)
    return list(answer)


def _fits(answer: object, jobs: list[Job]) -> bool:
    """The child's answer has one entry per side of each job, each None or one line per
    line of that side (anything else is not used)."""
    if not isinstance(answer, list) or len(answer) != len(jobs):
        return False
    for sides, (_, texts) in zip(answer, jobs, strict=True):
        if not isinstance(sides, list) or len(sides) != len(texts):
            return False
        for side, lines in zip(sides, texts, strict=True):
            if side is not None and (not isinstance(side, list) or len(side) != len(lines)):
                return False
    return True


def _run_child(request: bytes, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "services.api.highlighting"]
    env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONDONTWRITEBYTECODE": "1"}
    if cospawn.cooperative():  # a gevent worker: no fork of it, a cooperative wait
        return cospawn.run(argv, env=env, stdin=request, timeout_s=timeout_s)
    return run_apart(argv, input=request, capture_output=True, timeout=timeout_s, env=env)


# -- the child ---------------------------------------------------------------------------


class _OutOfTime(Exception):
    pass


def _css(kind: Any) -> str:
    for family in _FAMILIES:
        if kind in family:
            return f"tok-{STANDARD_TYPES[family]}"
    return ""


def _lexer(path: str) -> Any:
    from pygments.lexers import get_lexer_for_filename  # type: ignore[import-untyped]
    from pygments.util import ClassNotFound  # type: ignore[import-untyped]

    try:
        return get_lexer_for_filename(path, stripnl=False, stripall=False, ensurenl=False)
    except ClassNotFound:
        return None


def _split_lines(lexer: Any, texts: list[str], deadline: float) -> list[list[list[str]]]:
    """Tokens of ``texts`` lexed as one document, cut back into the original lines."""
    result: list[list[list[str]]] = [[]]
    for n, (kind, value) in enumerate(lexer.get_tokens("\n".join(texts))):
        if n % 32 == 0 and time.monotonic() > deadline:
            raise _OutOfTime
        parts = value.split("\n")
        for index, part in enumerate(parts):
            if index:
                result.append([])
            if not part:
                continue
            css, last = _css(kind), result[-1]
            if last and last[-1][0] == css:  # one span per run of a class
                last[-1] = [css, last[-1][1] + part]
            else:
                last.append([css, part])
    return result[: len(texts)] + [[] for _ in range(len(texts) - len(result))]


def lex(jobs: list[Job], budget_s: float) -> list[list[Lexed]]:
    """What the child answers: each side lexed, or None (see :func:`highlighted`)."""
    deadline = time.monotonic() + budget_s
    answer: list[list[Lexed]] = []
    for path, sides in jobs:
        lexer = _lexer(path) if time.monotonic() < deadline else None
        done: list[Lexed] = []
        for texts in sides:
            lexed: Lexed = None
            if lexer is not None:
                try:
                    pieces = _split_lines(lexer, texts, deadline)
                except _OutOfTime:
                    lexer = None
                else:
                    same = all(
                        "".join(p[1] for p in line) == text
                        for line, text in zip(pieces, texts, strict=True)
                    )
                    lexed = pieces if same else None  # never a different text
            done.append(lexed)
        answer.append(done)
    return answer


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    jobs = [
        (str(path), [[str(t) for t in side] for side in sides]) for path, sides in request["jobs"]
    ]
    sys.stdout.write(json.dumps(lex(jobs, float(request["budget_s"]))))


if __name__ == "__main__":
    main()
