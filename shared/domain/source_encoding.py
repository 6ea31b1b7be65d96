"""Which text a file's own encoding declaration makes Python read. Pure: no IO.

Python decodes a source file with the codec a comment in its first two lines names
(PEP 263, ``# coding: <name>``) before it reads a token. Several codecs it accepts there
read bytes otherwise than the diff shows them: under ``unicode_escape`` (or
``raw_unicode_escape``) the six characters ``\\u000a`` in a comment are a line break,
under ``utf-7`` ``+AAo-`` is, so a line the approver reads as one comment was two lines
of code to the interpreter, and a pinned ``python3 -m unittest`` passed over a visible
``return a - b`` (red-team helpers 119 and 120). The approver's diff reads every file
as UTF-8: a change may declare UTF-8, latin-1 or ASCII, and in a file Python never
imports another single-byte codec that reads each ASCII byte as itself (rule
``source_encoding``).
"""

from __future__ import annotations

import codecs
import re

SOURCE_ENCODING_RULE = "source_encoding"
HEAD_BYTES = 1 << 20
"""The most of a file read for its declaration: its first two lines, up to this (a
blank first line of 300,000 spaces is a lexer's test, not an attack)."""
UNREAD = "?"
"""A declaration kodo could not read (the second line starts past HEAD_BYTES)."""
READABLE = frozenset({"utf-8", "ascii", "iso8859-1", "iso8859-15", "cp1252"})
"""Codecs (Python's canonical names) that read a file as the approver's diff shows it:
UTF-8 itself, and encodings that read every ASCII byte as itself, one byte at a time
(so far as the registry is Python's own: see :func:`unreadable_coding`)."""
IMPORTED_SUFFIXES = (".py", ".pyw")
"""Files Python imports as modules (a module imported before one may register codecs)."""

_COOKIE = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", re.ASCII)
_BLANK_OR_COMMENT = re.compile(rb"^[ \t\f]*(?:[#\r\n]|$)", re.ASCII)


def declared_coding(head: bytes, *, whole: bool) -> str | None:
    """The codec name the first two lines of a file declare, as written; None if none.

    ``head``: the file's first bytes; ``whole``: it is the whole file. Lines end at a
    line feed, a carriage return or both, as Python reads them. The second line counts
    if the first is blank or only a comment, as in Python. A line that may still hold a
    declaration past ``head`` (one that is blank or a comment so far) reads
    :data:`UNREAD`."""
    lines = _first_lines(head)
    for number in (0, 1):
        if number == len(lines):  # (the line starts past head)
            return None if whole else UNREAD
        line = lines[number]
        found = _COOKIE.match(line)
        if found is not None:
            return found.group(1).decode("ascii")
        quiet = _BLANK_OR_COMMENT.match(line) is not None
        ended = line.endswith((b"\n", b"\r")) or (whole and number == len(lines) - 1)
        if not ended:
            return UNREAD if quiet else None
        if not quiet:
            return None  # code on the first line: Python reads no declaration after it
    return None


_LINE_END = re.compile(rb"\r\n|\r|\n")


def _first_lines(head: bytes) -> list[bytes]:
    """The first two lines of ``head`` with their ends (the second may be cut short),
    found without splitting the rest."""
    lines: list[bytes] = []
    start = 0
    for end in _LINE_END.finditer(head):
        lines.append(head[start : end.end()])
        start = end.end()
        if len(lines) == 2:
            return lines
    if start < len(head):
        lines.append(head[start:])
    return lines


def unreadable_coding(name: str, *, importable: bool) -> str | None:
    """Why the codec ``name`` declares may read a file otherwise than the approver's diff
    shows it, or None if it cannot.

    Only UTF-8, latin-1 and ASCII are read without Python's codec registry (the
    tokenizer's own names and ``PyUnicode_Decode``'s fast paths, :data:`DIRECT`). Any
    other name is looked up when the file is read, and a module imported before it may
    have registered the name, or pointed ``encodings._cache['cp1252']`` at
    ``unicode_escape`` (red-team helper-121): in a file Python imports (``importable``)
    only those are allowed. A file run by its path is read before anything could
    register a codec: there a codec Python does not know refuses to run, and a known one
    must read ASCII as itself (:data:`READABLE`)."""
    if name == UNREAD:
        return "a first line longer than the part read (a declaration may follow)"
    normal = _normal_name(name)
    if _registry_free(normal):
        return None
    if importable:
        return (
            f"the encoding {name!r}, which Python looks up in a registry any earlier"
            " import may change"
        )
    try:
        canonical = codecs.lookup(normal).name
    except LookupError:
        return None
    return None if canonical in READABLE else f"the encoding {name!r} ({canonical})"


DIRECT = frozenset(
    {"utf_8", "utf8", "latin_1", "latin1", "iso_8859_1", "iso8859_1", "ascii", "us_ascii"}
)
"""Codec names Python 3.11 decodes a source with and never looks up, spelled as
``_Py_normalize_encoding`` spells them (lower case, each run of other characters ``_``)."""


def _registry_free(name: str) -> bool:
    spelled = re.sub(r"[^a-z0-9.]+", "_", name.lower()).strip("_")
    return spelled in DIRECT


def _normal_name(name: str) -> str:
    """The name as Python's tokenizer normalises it before it looks the codec up."""
    lowered = name.lower().replace("_", "-")
    if lowered == "utf-8" or lowered.startswith("utf-8-"):
        return "utf-8"
    for latin in ("latin-1", "iso-8859-1", "iso-latin-1"):
        if lowered == latin or lowered.startswith(f"{latin}-"):
            return "iso-8859-1"
    return name
