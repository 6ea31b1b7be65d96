"""What the scripted model reads from, and writes against, the target repository.

Everything here reads the working tree as it is now (not HEAD), so a diff it
writes applies with ``git apply --check`` in that tree. Paths that escape the
directory, point into ``.git`` or are not UTF-8 text files are never touched.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_PATH_TOKEN = re.compile(r"[A-Za-z0-9_./-]+\.[A-Za-z0-9]+")
_MAX_PLANNED = 5
NOTES_FILE = "KODO_NOTES.md"


def safe_relative(directory: Path, candidate: str) -> str | None:
    """``candidate`` as a clean relative POSIX path inside ``directory``, else None."""
    pure = PurePosixPath(candidate)
    if not candidate or pure.is_absolute() or ".." in pure.parts or "\\" in candidate:
        return None
    if not pure.parts or pure.parts[0] == ".git":
        return None
    target = (directory / pure).resolve()
    root = directory.resolve()
    if target != root and root not in target.parents:
        return None
    return pure.as_posix()


def read_text(directory: Path, relative: str) -> str | None:
    """The file's text if it is a regular UTF-8 file (no symlink); None otherwise."""
    path = directory / relative
    try:
        if path.is_symlink() or not path.is_file():
            return None
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def named_files(directory: Path, prompt: str) -> list[str]:
    """Existing text files the prompt names, in order of first mention."""
    found: list[str] = []
    for token in _PATH_TOKEN.findall(prompt):
        relative = safe_relative(directory, token.removeprefix("./"))
        if relative and relative not in found and read_text(directory, relative) is not None:
            found.append(relative)
        if len(found) >= _MAX_PLANNED:
            break
    return found


def has_unittest_files(directory: Path) -> bool:
    """True if any ``test_*.py`` lives in the tree (outside ``.git``)."""
    for _root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if d != ".git"]
        if any(f.startswith("test_") and f.endswith(".py") for f in files):
            return True
    return False


@dataclass(frozen=True)
class FileChange:
    """One planned change: ``add`` or ``modify`` appends ``lines`` (or applies ``rewrite``
    to the old text); ``delete`` removes; ``rename`` moves ``source`` to ``path`` unchanged.

    A change already made is no change: ``modify`` leaves a file that already ends with
    its lines (or that ``rewrite`` leaves alone), so an agent taking its edits one tool
    call at a time can ask what remains."""

    path: str
    change: str
    lines: tuple[str, ...] = ()
    source: str | None = None
    rewrite: Callable[[str], str] | None = None

    def new_text(self, old: str) -> str:
        if self.rewrite is not None:
            return self.rewrite(old)
        block = "".join(f"{line}\n" for line in self.lines)
        if self.change == "modify" and block and old.endswith(block):
            return old
        return _appended(old, self.lines)


def _file_mode(path: Path) -> str:
    try:
        return "100755" if path.stat().st_mode & stat.S_IXUSR else "100644"
    except OSError:
        return "100644"


def _hunks(old: str, new: str) -> list[str]:
    """difflib hunks, with git's marker for a last line that has no newline."""
    out: list[str] = []
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), n=3, lineterm="\n"
    )
    for index, line in enumerate(lines):
        if index < 2:  # difflib's ---/+++ headers; git wants its own
            continue
        if line.endswith("\n"):
            out.append(line)
        else:
            out.append(line + "\n\\ No newline at end of file\n")
    return out


def _appended(old: str, lines: tuple[str, ...]) -> str:
    glue = "" if not old or old.endswith("\n") else "\n"
    return old + glue + "".join(f"{line}\n" for line in lines)


def _rename_diff(directory: Path, change: FileChange) -> str:
    source = change.source
    if source is None or read_text(directory, source) is None:
        return ""
    if (directory / change.path).exists() or os.path.lexists(directory / change.path):
        return ""
    return (
        f"diff --git a/{source} b/{change.path}\nsimilarity index 100%\n"
        f"rename from {source}\nrename to {change.path}\n"
    )


def file_diff(directory: Path, change: FileChange) -> str:
    """A git-style diff for one change against the current working tree ('' if none).

    The diff does exactly the kind of change named, or nothing: ``modify`` never
    creates a file and ``add`` never edits one, so a patch agrees with its plan.
    """
    if change.change == "rename":
        return _rename_diff(directory, change)
    old = read_text(directory, change.path)
    exists = os.path.lexists(directory / change.path)
    a, b = f"a/{change.path}", f"b/{change.path}"
    if change.change == "delete":
        if old is None:
            return ""
        mode = _file_mode(directory / change.path)
        head = f"diff --git {a} {b}\ndeleted file mode {mode}\n"
        if old == "":
            return head
        return head + f"--- {a}\n+++ /dev/null\n" + "".join(_hunks(old, ""))
    if change.change == "add":
        if exists:  # the plan says add: never edit what is there
            return ""
        head = f"diff --git {a} {b}\nnew file mode 100644\n--- /dev/null\n+++ {b}\n"
        return head + "".join(_hunks("", new_file_text(change)))
    if old is None or change.change != "modify":  # missing, binary, symlink: leave it alone
        return ""
    new = change.new_text(old)
    if new == old:
        return ""
    head = f"diff --git {a} {b}\n--- {a}\n+++ {b}\n"
    return head + "".join(_hunks(old, new))


def new_file_text(change: FileChange) -> str:
    """The content an ``add`` creates (a new file starts with content, not spacing)."""
    if change.rewrite is not None:
        return change.rewrite("")
    lines = tuple(change.lines)
    while lines and not lines[0]:
        lines = lines[1:]
    return _appended("", lines)


def tree_diff(directory: Path, changes: list[FileChange]) -> str:
    """One diff for all changes, skipping the ones that would be empty."""
    return "".join(file_diff(directory, change) for change in changes)
