"""The build agent's edits: the scripted change performed on the session's directory the
way the daemon's edit tools would leave it, and the tool uses the turn reports.

The change is scripted as a git diff (:func:`standins.oc_compat.answers.edit_diff`, or a
hostile fixture's), performed file by file with ``git apply`` without the index: modes,
symlinks, renames and deletions land on disk as a daemon that ignored its own rules
could leave them. A file git refuses to write (a path into ``.git``, out of the
directory, through a symlink) is a failed tool use naming that path, as a denied edit
is in the daemon's turn; nothing outside the directory is ever written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.gitcmd import run_git

_HEADER = re.compile(r"^diff --git a/(\S+) b/(\S+)$")
_PLUS = re.compile(r"^\+\+\+ (?:b/)?(\S+)")
_MINUS = re.compile(r"^--- (?:a/)?(\S+)")
GIT_TIMEOUT_S = 30


@dataclass(frozen=True)
class ToolUse:
    """One edit tool call of the turn: what it named, whether it landed, what it said."""

    tool: str  # "write" (a new file), "edit" (a change), "patch" (delete, rename, mode)
    path: str  # as the agent named it: the directory joined with the diff's path
    ok: bool
    output: str


def split_diff(diff: str) -> list[str]:
    """The diff's per-file chunks: each starts at ``diff --git``, or (a headerless diff)
    at a ``---``/``+++`` pair that does not belong to the header before it."""
    chunks: list[list[str]] = []
    lines = diff.splitlines(keepends=True)
    for i, line in enumerate(lines):
        current = chunks[-1] if chunks else []
        awaiting_names = bool(current) and current[0].startswith("diff --git ")
        awaiting_names = awaiting_names and not any(x.startswith("--- ") for x in current)
        pair = line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")
        if not chunks or line.startswith("diff --git ") or (pair and not awaiting_names):
            chunks.append([])
        chunks[-1].append(line)
    return ["".join(c) for c in chunks if "".join(c).strip()]


def chunk_paths(chunk: str) -> list[str]:
    """The paths a chunk names (the new one first; a rename's old one after it)."""
    first = chunk.splitlines()[0] if chunk else ""
    header = _HEADER.match(first)
    if header:
        old, new = header.group(1), header.group(2)
        return [new] if new == old else [new, old]
    paths = [m.group(1) for line in chunk.splitlines() for m in [_PLUS.match(line)] if m]
    return [p for p in paths if p != "/dev/null"][:1] or ["(unnamed)"]


def _tool_of(chunk: str) -> str:
    if "new file mode" in chunk:
        return "write"
    if any(k in chunk for k in ("deleted file mode", "rename from", "old mode", "copy from")):
        return "patch"
    return "edit"


def perform(
    directory: Path, diff: str, pause: Callable[[int], bool] | None = None
) -> list[ToolUse]:
    """Apply ``diff`` file by file; ``pause(i)`` runs before file i>0 and returning True
    stops there (an abort mid-edit): the files before it stay changed."""
    uses: list[ToolUse] = []
    for i, chunk in enumerate(split_diff(diff)):
        if i and pause is not None and pause(i):
            break
        proc = run_git(
            directory,
            ["apply", "--whitespace=nowarn", "-"],
            stdin=chunk.encode(),
            timeout_s=GIT_TIMEOUT_S,
        )
        said = proc.stderr.decode(errors="replace").strip()
        ok = proc.returncode == 0
        output = "Edit applied successfully." if ok else f"Error: {said or 'edit refused'}"
        for path in chunk_paths(chunk)[:1]:
            uses.append(ToolUse(_tool_of(chunk), f"{directory}/{path}", ok, output))
    return uses
