"""git's C-style quoting of a name, read back (``quote_c_style`` in git's quote.c).

git writes a name holding a byte past ASCII (with ``core.quotePath``), a ``"``, a ``\\``
or a control character between double quotes, with ``\\t``-style and ``\\ooo`` octal
escapes: in a diff's headers and in ``objects/info/alternates`` alike.
"""

from __future__ import annotations

_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}
_OCTAL = frozenset("01234567")


def c_unquoted(text: str, start: int = 0, *, encoding: str = "utf-8") -> tuple[bytes, int] | None:
    """The bytes the quoted string at ``text[start]`` (a ``"``) spells, and the index just
    past its closing quote; None if it is not one (an escape git never writes, no closing
    quote). Unescaped characters count as ``encoding`` gives them (``latin-1`` for text
    that was bytes)."""
    out = bytearray()
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return bytes(out), i + 1
        if ch != "\\":
            out += ch.encode(encoding, errors="surrogateescape")
            i += 1
            continue
        escape = text[i + 1 : i + 2]
        octal = text[i + 1 : i + 4]
        if escape in _ESCAPES:
            out.append(_ESCAPES[escape])
            i += 2
        elif len(octal) == 3 and set(octal) <= _OCTAL and int(octal, 8) < 256:
            out.append(int(octal, 8))
            i += 4
        else:
            return None
    return None
