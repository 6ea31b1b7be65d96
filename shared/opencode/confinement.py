"""Path confinement of a turn: every file a tool part names must lie in the session's worktree.

The daemon's ``external_directory`` rule is not trusted alone (``docs/opencode-confinement.md``):
1.18.33 writes through a symlink inside the worktree to anywhere the symlink points,
always lets the build agent write into its own ``tool-output`` folder, and its tracker
reports more bypasses. So the call protocol reads every tool part of the turn, whatever
its status says (a denied escape is still an attempted escape), resolves the path it
names the way the filesystem would (symlinks followed, ``..`` collapsed, relative to
the session's directory) and fails the call closed:

* ``PathOutsideWorktree``: the path resolves outside the directory (another run's
  worktree, the source repository, the daemon's HOME...);
* ``GitMetadataForbidden``: the path goes into a ``.git`` (hooks and config there run
  code in kodo's later git commands);
* ``ToolPathUnreadable``: a writing tool's part names no path we can read, or any part
  names one holding a NUL byte (no file can be named so; the kernel would cut it there),
  or one no file can be opened by: longer than ``PATH_MAX`` or with a part longer than
  ``NAME_MAX`` (resolving an 800 kB name cost a minute of CPU per attempt; red-team
  helper-126).

Reading tools (read, list, glob, grep) are held to the same rules: what lies outside
the worktree (kodo's state, other runs) is not the agent's to see either.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from shared.real_path import Resolver

WRITING_TOOLS: Mapping[str, tuple[str, ...]] = {
    "edit": ("filePath",),
    "write": ("filePath",),
    "multiedit": ("filePath",),
}
PATCH_TOOLS = frozenset({"patch", "apply_patch"})
READING_TOOLS: Mapping[str, tuple[str, ...]] = {
    "read": ("filePath",),
    "list": ("path",),
    "glob": ("path",),
    "grep": ("path",),
}
RULES = frozenset({"PathOutsideWorktree", "GitMetadataForbidden", "ToolPathUnreadable"})
"""The violations of rule ``confinement``: the call is refused, never retried."""

_PATCH_HEADERS = ("*** Add File:", "*** Update File:", "*** Delete File:", "*** Move to:")


@dataclass(frozen=True)
class Violation:
    rule: str  # PathOutsideWorktree | GitMetadataForbidden | ToolPathUnreadable
    tool: str
    path: str
    status: str

    def describe(self) -> str:
        shown = shown_path(self.path)
        return (
            f"{shown_path(self.tool, SHOWN_NAME)} ({shown_path(self.status, SHOWN_NAME)}) {shown!r}"
        )


SHOWN_PATH = 120
SHOWN_NAME = 40
"""How much of a path (a tool's or status's name) a refusal shows: the model chose it,
and a turn that read where it must not may spell what it read into one."""


def shown_path(text: str, limit: int = SHOWN_PATH) -> str:
    """``text`` if short, else its first ``limit`` characters and its length."""
    return text if len(text) <= limit else f"{text[:limit]}...[{len(text)} chars]"


_JS_BLANKS = "\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff" + "".join(
    chr(c) for c in range(0x2000, 0x200B)
)
"""What JavaScript's ``String.prototype.trim`` strips: its WhiteSpace (tab, VT, FF,
space, NBSP, BOM and every Zs space) and LineTerminator (LF, CR, LS, PS)."""


def _js_trim(text: str) -> str:
    return text.strip(_JS_BLANKS)


def patch_paths(text: str) -> list[str]:
    """The files an ``apply_patch`` text adds, updates, deletes or moves to, read as the
    daemon reads them: lines split at ``\n`` only, each path trimmed as JavaScript's
    ``trim`` does. Python's ``splitlines`` and ``strip`` had read ``*** Add File:
    \r<path>`` as a header naming nothing (the worktree itself) where the daemon wrote
    ``<path>`` (red-team helper-110). A line is a header trimmed or not (judging more
    never misses the daemon's reading)."""
    found = []
    for line in text.split("\n"):
        trimmed = _js_trim(line)
        for header in _PATCH_HEADERS:
            if trimmed.startswith(header):
                found.append(_js_trim(trimmed[len(header) :]))
    return found


def _named_paths(tool: str, given: object) -> list[str] | None:
    """The paths a tool part names (None: a writing tool whose input names none)."""
    tool_input = given if isinstance(given, dict) else {}
    if tool in PATCH_TOOLS:
        text = tool_input.get("patchText", tool_input.get("patch"))
        paths = patch_paths(text) if isinstance(text, str) else []
        return paths if paths and all(paths) else None  # a header naming nothing: unreadable
    if tool in WRITING_TOOLS:
        named = [tool_input.get(key) for key in WRITING_TOOLS[tool]]
        paths = [p for p in named if isinstance(p, str) and p]
        return paths if len(paths) == len(named) else None
    keys = READING_TOOLS.get(tool, ())
    paths = [p for p in (tool_input.get(k) for k in keys) if isinstance(p, str) and p]
    pattern = tool_input.get("pattern") if tool == "glob" else None
    if isinstance(pattern, str) and (os.path.isabs(pattern) or ".." in pattern.split("/")):
        paths.append(pattern)
    return paths


def _patched_files(state: Mapping[str, object]) -> list[str]:
    """The files the daemon says a patch part touched (``metadata.files[]``'s
    ``filePath`` and ``movePath``): judged beside what kodo reads in the patch text, so
    a reading of the text that differs from the daemon's cannot hide where it wrote."""
    metadata = state.get("metadata")
    files = metadata.get("files") if isinstance(metadata, dict) else None
    found = []
    for item in files if isinstance(files, list) else []:
        if isinstance(item, dict):
            found += [item[k] for k in ("filePath", "movePath") if isinstance(item.get(k), str)]
    return [path for path in found if path]


def tool_uses(parts: Iterable[Mapping[str, object]]) -> list[tuple[str, str, list[str]]]:
    """(tool, status, the paths it names) for every tool part (StructuredOutput aside)."""
    found = []
    for part in parts:
        tool = part.get("tool")
        if part.get("type") != "tool" or not isinstance(tool, str) or tool == "StructuredOutput":
            continue
        state = part.get("state")
        state = state if isinstance(state, dict) else {}
        found.append(
            (tool, str(state.get("status", "?")), _named_paths(tool, state.get("input")) or [])
        )
    return found


PATHS_JUDGED_MAX = 10_000
"""The most paths one turn's tool parts may name: past it the turn is refused
(``ToolPathUnreadable``) rather than judged. A turn is at most 40 steps and a patch at
most ``max_files`` files; 60,000 names in one patch text (2.2 MB, a quarter of an
answer) cost 5 s to judge before each path took a few system calls, and 1 s after
(red-team helper-128)."""

PATH_MAX = 4096
"""Linux's bound on a path given to one system call, its closing NUL included."""
NAME_MAX = 255
"""Linux's bound on one part of a path (every filesystem kodo runs on)."""


def _unopenable(path: str) -> bool:
    """Whether no call can open ``path`` (ENAMETOOLONG), the daemon's included: its bytes
    reach ``PATH_MAX`` or one of its parts passes ``NAME_MAX``. Judged on the text alone,
    in time linear in it: Python's ``realpath`` walk, which the kernel leaves such a path
    to, copies the path once per part."""
    encoded = path.encode("utf-8", "surrogatepass")
    return len(encoded) >= PATH_MAX or any(len(part) > NAME_MAX for part in encoded.split(b"/"))


def _judge(root: str, raw: str, resolve: Callable[[str], str]) -> str | None:
    """The rule ``raw`` breaks, judged both ways it may be opened: the kernel's (links
    followed, then ``..``) and the daemon's (Node's ``path.resolve`` collapses ``..``
    first, by text, and the kernel follows links in what is left). Through a link to a
    folder deep in the worktree, ``hop/../../..`` stayed inside for the first and
    reached the daemon's tool-output folder for the second (red-team helper-114)."""
    if "\0" in raw:
        return "ToolPathUnreadable"
    joined = raw if os.path.isabs(raw) else os.path.join(root, raw)
    if _unopenable(joined):  # before any walk: resolving it is quadratic in its length
        return "ToolPathUnreadable"
    lexical = os.path.normpath(joined)
    kernel = resolve(joined)
    kernels = (kernel, kernel if lexical == joined else resolve(lexical))
    inside = root.rstrip(os.sep) + os.sep
    for opened in kernels:
        if opened != root and not opened.startswith(inside):
            return "PathOutsideWorktree"
    for opened in (*kernels, lexical):
        # what lies under the root is read off its text; anything else the long way
        under = opened[len(inside) :] if opened.startswith(inside) else None
        relative = under if under is not None else os.path.relpath(opened, root)
        if ".git" in relative.split(os.sep):
            return "GitMetadataForbidden"
    return None


def violations(
    directory: str,
    parts: Iterable[Mapping[str, object]],
    *,
    resolve: Callable[[str], str] | None = None,
) -> list[Violation]:
    """Every tool part of ``parts`` that names a path outside ``directory`` or in a
    ``.git``, or a writing tool's part that names none; ``resolve`` maps a path to what
    the filesystem would open (symlinks followed; by default one :class:`Resolver` for
    the whole turn, a few system calls a path however deep)."""
    if resolve is None:
        resolve = Resolver()
    root = resolve(directory)
    found = []
    judged = 0
    for part in parts:
        tool = part.get("tool")
        if part.get("type") != "tool" or not isinstance(tool, str):
            continue
        state = part.get("state")
        state = state if isinstance(state, dict) else {}
        status = str(state.get("status", "?"))
        paths = _named_paths(tool, state.get("input"))
        if paths is None:
            found.append(Violation("ToolPathUnreadable", tool, "", status))
            continue
        for raw in paths + (_patched_files(state) if tool in PATCH_TOOLS else []):
            judged += 1
            if judged > PATHS_JUDGED_MAX:  # fail closed: the rest are never judged
                past = f"(more than {PATHS_JUDGED_MAX} paths named in one turn)"
                found.append(Violation("ToolPathUnreadable", tool, past, status))
                return found
            rule = _judge(root, raw, resolve)
            if rule is not None:
                found.append(Violation(rule, tool, raw, status))
    return found
