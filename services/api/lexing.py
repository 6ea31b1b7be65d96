"""The lexing child: one page's patches in, their syntax classes out, one JSON line each.

Run as ``python -m services.api.lexing`` by :mod:`services.api.highlighting`, which
kills it at its deadline. It lives on between pages (starting Python and Pygments cost
about half a second of CPU per page when a child was started for each), so it imports
nothing but Pygments: no structlog, no kodo module, nothing a request could change
for the next one but the lexer classes Pygments caches.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from pygments.token import STANDARD_TYPES, Token  # type: ignore[import-untyped]

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
    """Each job's sides lexed, or None where no lexer fits the name, the lexer changed
    the text, or the budget ran out (checked between tokens)."""
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


def answer(line: bytes) -> bytes:
    """One request line (``{"budget_s": s, "jobs": [...]}``) to its answer line."""
    request = json.loads(line)
    jobs = [
        (str(path), [[str(t) for t in side] for side in sides]) for path, sides in request["jobs"]
    ]
    return json.dumps(lex(jobs, float(request["budget_s"]))).encode() + b"\n"


READY = b"ready\n"
"""The child's first line, once Pygments is loaded: a page's deadline starts after it."""


def main() -> None:
    """Load Pygments (its lexer table, the plugin scan), say :data:`READY`, then answer
    each line of stdin until it ends (the API process closed it, or died)."""
    _lexer("warm.py")
    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()
    for line in sys.stdin.buffer:
        sys.stdout.buffer.write(answer(line))
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
