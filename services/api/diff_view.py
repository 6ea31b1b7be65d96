"""A run's patch as a reviewer reads it: per file, with a diffstat, highlighted lines.

The patch (``patch.diff``, ``patch.r2.diff``, ...) is ``git diff`` text the agent's
edits produced, so every byte of it is the attacker's. This module only splits it into
files, hunks and lines and tags each line's tokens with a syntax class (Pygments, which
``rich`` already brings, run in a child process with a deadline:
:mod:`services.api.highlighting`); it never builds HTML. The page renders each token through the
``shown_block`` filter, so escapes, bidi overrides and markup show as text.

A patch that does not read as a git diff is not guessed at: :func:`parse_patch` says
why (rule ``patch_unparsed``) and the page shows the text as it is, escaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from shared.domain.diff_modes import FileModes
from shared.domain.diff_names import file_line_name, git_name, header_sides
from shared.domain.display import visible

from .highlighting import Job, highlighted

LineKind = Literal["add", "del", "ctx", "note"]

HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
MAX_LINES_PER_FILE = 3000
"""Lines shown per file; past it the page says so and links the whole artifact."""
MAX_LINES_PER_PATCH = 10_000
"""Lines shown per patch (every file still has its diffstat line)."""
MAX_HIGHLIGHTED_CHARS = 400_000
"""Characters one page lexes; past it lines are shown plain (still escaped)."""
UNPARSED_RULE = "patch_unparsed"


@dataclass(frozen=True)
class Piece:
    """A run of text in one syntax class ('' for none)."""

    css: str
    text: str


@dataclass
class Line:
    kind: LineKind
    old_no: int | None
    new_no: int | None
    text: str
    pieces: list[Piece] = field(default_factory=list)


@dataclass
class Hunk:
    header: str
    lines: list[Line] = field(default_factory=list)

    def side_by_side(self) -> list[tuple[Line | None, Line | None]]:
        """Rows of (old, new): context on both sides, each run of removals beside the
        additions that follow it, a note under the side it belongs to."""
        rows: list[tuple[Line | None, Line | None]] = []
        removed: list[Line] = []
        added: list[Line] = []

        def flush() -> None:
            for index in range(max(len(removed), len(added))):
                left = removed[index] if index < len(removed) else None
                right = added[index] if index < len(added) else None
                rows.append((left, right))
            removed.clear()
            added.clear()

        for line in self.lines:
            if line.kind == "del" and not added:
                removed.append(line)
            elif line.kind == "add":
                added.append(line)
            elif line.kind == "note":
                flush()
                rows.append((None, line) if rows and rows[-1][1] is not None else (line, None))
            else:
                flush()
                if line.kind == "del":
                    removed.append(line)
                else:
                    rows.append((line, line))
        flush()
        return rows


@dataclass
class FileDiff:
    path: str
    old_path: str
    change: str  # modified, added, deleted, renamed, copied, binary
    added: int = 0
    removed: int = 0
    hunks: list[Hunk] = field(default_factory=list)
    truncated: int = 0  # lines not shown (past MAX_LINES_PER_FILE or MAX_LINES_PER_PATCH)
    room: int = MAX_LINES_PER_FILE  # lines it may still keep while it is read
    modes: FileModes = field(default_factory=FileModes)  # its mode lines (note: in words)

    @property
    def shown_lines(self) -> int:
        return sum(len(h.lines) for h in self.hunks)


@dataclass(frozen=True)
class ParsedPatch:
    files: list[FileDiff]
    unparsed: str | None = None  # why the text is not read as a git diff (then: files == [])

    @property
    def added(self) -> int:
        return sum(f.added for f in self.files)

    @property
    def removed(self) -> int:
        return sum(f.removed for f in self.files)


class _Unparsed(ValueError):
    pass


def _strip_prefix(raw: str, prefix: str) -> str:
    return raw[len(prefix) :] if raw.startswith(prefix) else raw


def _new_file(header: str) -> FileDiff:
    """The file a ``diff --git`` header names. A name may itself hold `` b/``, so the
    header alone is ambiguous: when both sides are one name (the usual case) that name
    is taken; otherwise the ``---``/``+++`` or ``rename``/``copy`` lines that follow
    decide (see :func:`_meta`)."""
    sides = header_sides(header)
    if sides is None:
        raise _Unparsed(f"a file header is not `diff --git a/... b/...`: {header[:80]!r}")
    return FileDiff(path=sides[1], old_path=sides[0], change="modified")


def _meta(current: FileDiff, line: str) -> None:
    """A line between a file header and its first hunk (mode, index, names, binary)."""
    if current.modes.feed(line):  # its mode and binary lines: FileModes reads them
        if current.modes.binary:
            # (``--binary``, as patch.diff is made: its literal or delta lines follow,
            # base85, which no reader reads; the file was shown "added +0 -0, no text
            # lines")
            current.change = "binary"
        elif current.modes.added:
            current.change = "added"
    elif line.startswith("deleted file mode"):
        current.change = "deleted"
    elif line.startswith("rename from ") or line.startswith("copy from "):
        # the old name, whole: the header's split at " b/" cannot tell where it ends
        current.change = "renamed" if line.startswith("rename") else "copied"
        current.old_path = git_name(line.split(" from ", 1)[1])
    elif line.startswith("rename to ") or line.startswith("copy to "):
        current.change = "renamed" if line.startswith("rename") else "copied"
        current.path = git_name(line.split(" to ", 1)[1])
    elif line.startswith("--- ") and line != "--- /dev/null":
        current.old_path = _strip_prefix(file_line_name(line[4:]), "a/")
    elif line.startswith("+++ ") and line != "+++ /dev/null":
        current.path = _strip_prefix(file_line_name(line[4:]), "b/")


def _keep(current: FileDiff, hunk: Hunk, line: Line) -> None:
    """Keep ``line`` while the file has room (only counted past it: a huge patch is
    read whole, never held whole)."""
    if current.room > 0:
        hunk.lines.append(line)
        current.room -= 1
    else:
        current.truncated += 1


def _hunk(current: FileDiff, header: str, lines: Iterator[str]) -> None:
    found = HUNK_HEADER.match(header)
    if found is None:
        raise _Unparsed(f"a hunk header is not `@@ -a,b +c,d @@`: {header[:80]!r}")
    old_no, new_no = int(found.group(1)), int(found.group(3))
    old_left = int(found.group(2)) if found.group(2) is not None else 1
    new_left = int(found.group(4)) if found.group(4) is not None else 1
    hunk = Hunk(header=header)
    current.hunks.append(hunk)
    while old_left > 0 or new_left > 0:
        line = next(lines, None)
        if line is None:
            raise _Unparsed(f"a hunk of {current.path!r} ends before its counted lines")
        sign, text = line[:1], line[1:]
        if sign == "\\":
            _keep(current, hunk, Line("note", None, None, line))
            continue
        if sign == "+" and new_left > 0:
            _keep(current, hunk, Line("add", None, new_no, text))
            new_no, new_left, current.added = new_no + 1, new_left - 1, current.added + 1
        elif sign == "-" and old_left > 0:
            _keep(current, hunk, Line("del", old_no, None, text))
            old_no, old_left, current.removed = old_no + 1, old_left - 1, current.removed + 1
        elif sign == " " and old_left > 0 and new_left > 0:
            _keep(current, hunk, Line("ctx", old_no, new_no, text))
            old_no, new_no, old_left, new_left = old_no + 1, new_no + 1, old_left - 1, new_left - 1
        else:
            raise _Unparsed(f"a line of {current.path!r} does not fit its hunk: {line[:80]!r}")


def _parse(text: str) -> list[FileDiff]:
    files: list[FileDiff] = []
    current: FileDiff | None = None
    patch_room = MAX_LINES_PER_PATCH
    lines = iter(text.removesuffix("\n").split("\n"))
    for line in lines:
        if line.startswith("diff --git "):
            if current is not None:
                patch_room -= current.shown_lines
            current = _new_file(line)
            current.room = min(MAX_LINES_PER_FILE, patch_room)
            files.append(current)
        elif current is None:
            if line.strip():
                raise _Unparsed(f"text before the first `diff --git` header: {line[:80]!r}")
        elif line.startswith("@@"):
            _hunk(current, line, lines)
        elif line.startswith("\\") and current.hunks:
            # "\ No newline at end of file" after a hunk's last counted line
            _keep(current, current.hunks[-1], Line("note", None, None, line))
        elif line:
            _meta(current, line)
    return files


def _sides(diff: FileDiff) -> list[list[Line]]:
    """The lines lexed together: per hunk, the new side (context and additions) and the
    old side (context and removals), each the text it reads as."""
    found: list[list[Line]] = []
    for hunk in diff.hunks:
        found.append([ln for ln in hunk.lines if ln.kind in ("ctx", "add")])
        found.append([ln for ln in hunk.lines if ln.kind == "del"])
    return found


def _highlight(files: list[FileDiff]) -> None:
    """Each line's pieces: plain, then the syntax classes the lexing child found
    (:mod:`services.api.highlighting`) for files within the page's character budget."""
    budget = MAX_HIGHLIGHTED_CHARS
    jobs: list[Job] = []
    lexed_files: list[FileDiff] = []
    for diff in files:
        for hunk in diff.hunks:
            for line in hunk.lines:
                line.pieces = [Piece("", line.text)]
        size = sum(len(ln.text) for h in diff.hunks for ln in h.lines)
        if size > budget:
            continue
        budget -= size
        # Lexed as shown: Pygments folds a CR into a newline, an escaped one is text.
        sides = [[visible(ln.text, multiline=True) for ln in side] for side in _sides(diff)]
        jobs.append((diff.path, sides))
        lexed_files.append(diff)
    for diff, answer in zip(lexed_files, highlighted(jobs), strict=True):
        for side, lexed in zip(_sides(diff), answer, strict=True):
            if lexed is None:
                continue
            for line, pieces in zip(side, lexed, strict=True):
                line.pieces = [Piece(css, text) for css, text in pieces]


def parse_patch(text: str) -> ParsedPatch:
    """``text`` as files, hunks and highlighted lines, or the reason it is not a git diff."""
    try:
        files = _parse(text)
    except _Unparsed as exc:
        return ParsedPatch([], f"{UNPARSED_RULE}: {exc}; shown as text")
    if not files and text.strip():
        return ParsedPatch([], f"{UNPARSED_RULE}: no `diff --git` header; shown as text")
    for diff in files:
        diff.hunks = [h for h in diff.hunks if h.lines]
    _highlight(files)
    return ParsedPatch(files)
