"""The build agent's edits: the scripted change performed on the session's directory the
way the daemon's edit tools would leave it, and the tool uses the turn reports.

The change is scripted as a git diff (:func:`standins.oc_compat.answers.edit_diff`, or a
hostile fixture's), performed with ``git apply`` without the index (file by file where
one fails): modes, symlinks, renames and deletions land on disk as a daemon that
ignored its own rules could leave them. A file git refuses to write (a path into
``.git``, out of the directory, through a symlink) is a failed tool use naming that
path, as a denied edit is in the daemon's turn; nothing outside the directory is ever
written.
"""

from __future__ import annotations

import re
import subprocess
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

    tool: str  # "write" (a new file), "edit" (a change), "apply_patch" (delete, rename, mode)
    path: str  # as the agent named it: the directory joined with the diff's path
    ok: bool
    output: str
    source: str | None = None  # a rename's old path, named like ``path``
    verb: str = "Update"  # apply_patch's header: Delete for a deletion

    @property
    def tool_input(self) -> dict[str, str]:
        """The part's ``input`` as the daemon records it for this tool."""
        if self.tool != "apply_patch":
            return {"filePath": self.path}
        if self.source is not None:
            body = f"*** Update File: {self.source}\n*** Move to: {self.path}"
        else:
            body = f"*** {self.verb} File: {self.path}"
        return {"patchText": f"*** Begin Patch\n{body}\n*** End Patch"}


def split_diff(diff: str) -> list[str]:
    """The diff's per-file chunks: each starts at ``diff --git``, or (a headerless diff)
    at a ``---``/``+++`` pair that does not belong to the header before it."""
    chunks: list[list[str]] = []
    named = False  # the current chunk has its ``---`` line (kept, not searched: linear)
    lines = diff.splitlines(keepends=True)
    for i, line in enumerate(lines):
        awaiting_names = bool(chunks) and chunks[-1][0].startswith("diff --git ") and not named
        pair = line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")
        if not chunks or line.startswith("diff --git ") or (pair and not awaiting_names):
            chunks.append([])
            named = False
        chunks[-1].append(line)
        named = named or line.startswith("--- ")
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
        return "apply_patch"
    return "edit"


def _nested_repository(directory: Path, path: str) -> ToolUse:
    """What an agent ignoring its rules writes to make a submodule: a ``.git`` of its own
    (git stages the folder as a gitlink). Refused paths leave nothing."""
    target = directory / path
    head = f"{target}/.git/HEAD"
    try:
        target.resolve().relative_to(directory.resolve())
        target.mkdir(parents=True, exist_ok=False)
    except (OSError, ValueError) as exc:
        return ToolUse("write", head, False, f"Error: {exc}")
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "vendored"]):
        run_git(
            target, args, timeout_s=GIT_TIMEOUT_S, config={"user.name": "x", "user.email": "x@x"}
        )
    return ToolUse("write", head, True, "Wrote file successfully.")


def perform(
    directory: Path, diff: str, pause: Callable[[int], bool] | None = None
) -> list[ToolUse]:
    """Apply ``diff`` file by file; ``pause(i)`` runs before file i>0 and returning True
    stops there (an abort mid-edit): the files before it stay changed.

    Without ``pause`` the whole diff is tried in one ``git apply`` first, which writes
    every file or none: if it lands, each file's use is reported as applying it alone
    would have; if not, the files are applied one by one, so each refusal names its file.
    """
    chunks = split_diff(diff)
    if pause is None and len(chunks) > 1 and not any(_GITLINK in c for c in chunks):
        whole = _apply(directory, diff)
        if whole.returncode == 0:
            return [_use(directory, chunk, whole) for chunk in chunks]
    uses: list[ToolUse] = []
    for i, chunk in enumerate(chunks):
        if i and pause is not None and pause(i):
            break
        if _GITLINK in chunk:  # a gitlink: plant a repository of its own
            uses.append(_nested_repository(directory, chunk_paths(chunk)[0]))
            continue
        uses.append(_use(directory, chunk, _apply(directory, chunk)))
    return uses


_GITLINK = "new file mode 160000"


def _apply(directory: Path, diff: str) -> subprocess.CompletedProcess[bytes]:
    return run_git(
        directory,
        ["apply", "--whitespace=nowarn", "-"],
        stdin=diff.encode(),
        timeout_s=GIT_TIMEOUT_S,
    )


def _use(directory: Path, chunk: str, proc: subprocess.CompletedProcess[bytes]) -> ToolUse:
    """The tool use reporting ``chunk``'s file, as ``git apply`` (``proc``) left it."""
    said = proc.stderr.decode(errors="replace").strip()
    ok = proc.returncode == 0
    output = "Edit applied successfully." if ok else f"Error: {said or 'edit refused'}"
    paths = [f"{directory}/{path}" for path in chunk_paths(chunk)]
    source = paths[1] if len(paths) > 1 else None
    verb = "Delete" if "deleted file mode" in chunk else "Update"
    return ToolUse(_tool_of(chunk), paths[0], ok, output, source, verb)
