"""How deep and how many containers a JSON text holds, read before it is parsed (pure).

A byte cap bounds an answer's size, not its shape: 4 MB of ``[[[...]]]`` is two and a
half million lists, about a gigabyte once parsed, redacted, recorded and read back, and
at a few hundred levels recursion in Python breaks. A plan, a patch or a decision is a
handful of objects around long strings, so :func:`shape_problem` refuses a text deeper
than :data:`MAX_DEPTH` or with more than :data:`MAX_CONTAINERS` arrays and objects,
counting only outside strings, with linear C-speed passes (regexes and
``bytes.translate``). A body that is not UTF-8 is refused: the count reads UTF-8 bytes.

So is one whose strings escape a lone UTF-16 surrogate (``"\\ud800"`` with no low half
after it): the JSON spelling of text that is not Unicode, which no model writes by
accident (a file a tool reads is decoded with replacement) and which Python would
carry as a str that cannot be encoded, hashed or stored.

:func:`strict_loads` then parses what passed, held to JSON: Python's own ``json.loads``
also reads ``NaN``, ``Infinity`` and a number past a double's range (as ``inf``), which
no JSON daemon writes and Postgres's ``jsonb`` refuses.
"""

from __future__ import annotations

import json
import math
import re

MAX_DEPTH = 64
MAX_CONTAINERS = 100_000

_STRING = re.compile(rb'"[^"]*"')
_NOT_MARKS = bytes(b for b in range(256) if b not in b'"[]{}')
_WINDOW = 1 << 16
_OPEN = frozenset(b"[{")
_SURROGATE_HINT = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile(rb"(?<!\\)(?:\\\\)*\\u[dD]([89a-fA-F])[0-9a-fA-F]{2}")
"""A surrogate escape of its own (after an even run of backslashes); group 1 tells a
high half (8-B) from a low one (C-F)."""
_HIGH = frozenset(b"89abAB")


def shape_problem(
    body: bytes, *, max_depth: int = MAX_DEPTH, max_containers: int = MAX_CONTAINERS
) -> str | None:
    """Why the JSON text ``body`` is too deep or holds too many containers, or None.

    An unterminated string hides the rest of the text from the count; json.loads
    refuses such a text anyway.
    """
    if b"\0" in body:  # never in JSON text; UTF-16 and 32 are full of them
        return "is not UTF-8 JSON text (a NUL byte)"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "is not UTF-8 text"  # json.loads would guess UTF-16 or 32 on its own
    if _SURROGATE_HINT.search(body) and _lone_surrogate(body):
        return "escapes a lone UTF-16 surrogate (text that is not Unicode)"
    skeleton = _skeleton(body)
    containers = skeleton.count(b"[") + skeleton.count(b"{")
    if containers > max_containers:
        return f"holds {containers} arrays and objects (at most {max_containers})"
    depth = 0
    for byte in skeleton:
        if byte in _OPEN:
            depth += 1
            if depth > max_depth:
                return f"nests arrays and objects deeper than {max_depth} levels"
        else:
            depth -= 1
    return None


def _skeleton(body: bytes) -> bytes:
    """The brackets of ``body`` outside its strings, in order.

    Escapes go first (so an escaped quote is no quote): escaped backslashes, then
    escaped quotes, each a ``bytes.replace``; what other escapes leave is inside a string
    (a backslash anywhere else is not JSON, refused by the parser). Then only quotes and
    brackets are kept, and the strings are dropped a window at a time, the window's
    quote parity carried to the next. Each pass is linear and at C speed, and what it
    holds is bounded by the body: ``re.sub`` over the whole body had kept one object per
    escape or string until its join, 44 to 59 times an 8 MiB body of ``\\n`` escapes or
    of empty strings (red-team helper-128). One pattern for strings with escapes had
    rescanned to the end from every quote of an unterminated string: quadratic.
    """
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = unescaped.translate(None, _NOT_MARKS)  # quotes and brackets only
    kept: list[bytes] = []
    inside = False  # the window starts inside a string
    for start in range(0, len(marks), _WINDOW):
        window = marks[start : start + _WINDOW]
        if inside:
            closing = window.find(b'"')
            if closing < 0:
                continue  # the whole window is inside the string
            window = window[closing + 1 :]
        if window.count(b'"') % 2:  # a string runs on into the next window
            window = window[: window.rfind(b'"')]
            inside = True
        else:
            inside = False
        kept.append(_STRING.sub(b"", window))
    return b"".join(kept)


def _lone_surrogate(body: bytes) -> bool:
    """Does a surrogate escape lack its other half (a high one a low one right after it)?"""
    pending_high = -1  # where the escape after an unpaired high one must start
    for found in _SURROGATE.finditer(body):
        start = found.end() - 6  # the escape itself, after its run of backslashes
        high = found.group(1)[0] in _HIGH
        if pending_high >= 0:
            if high or start != pending_high:
                return True
            pending_high = -1
        elif not high:
            return True
        else:
            pending_high = found.end()
    return pending_high >= 0


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is past a double's range")
    return value


_STRICT = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def strict_loads(text: str) -> object:
    """``json.loads(text)`` held to JSON: ``NaN``, ``Infinity``, ``-Infinity`` and a
    number past a double's range (``1e400``) raise ValueError, as other non-JSON does."""
    return _STRICT.decode(text)


def parse_failure(exc: ValueError | RecursionError) -> str:
    """Why :func:`strict_loads` refused a text, in the parser's words only (a
    JSONDecodeError's message without the document; a number's text is JSON number
    characters alone)."""
    if isinstance(exc, RecursionError):
        return "nested too deep to parse"
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at character {exc.pos}"
    return str(exc)[:120]
