"""The two readers of a run's patch, the run page's (``services.api.diff_view``) and the
CLI's diffstat (``services.cli.review_views``), name every file and count its lines as
git itself does, on patches git writes as kodo writes ``patch.diff``.

A reviewer may read a run's change on either; if one of them named another file, or
counted fewer lines than the change holds, what an approver sees would depend on where
they looked. Each example is a real repository: a base commit, then a change made of
edits, new files, deletions, renames (some also edited), mode changes and binary files,
with names git must quote (spaces, quotes, tabs, newlines, non-ASCII, `` b/`` inside a
name) and lines that look like a patch's own (``++ b/x``, ``diff --git``, ``@@``). The
truth is ``git diff --numstat -z -M`` of the same two commits.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.api.diff_view import parse_patch
from services.cli.review_views import diffstat
from services.worker.git_ops import split_stat
from shared.gitcmd import run_git

NAMES = [
    "calc.py",
    "a b/x.py",
    "x b/y.py",
    "b/nested.py",
    'q"uote.py',
    "tab\there.py",
    "new\nline.py",
    "café.py",
    "日本/語.md",
    "-dash.py",
    "back\\slash.py",
    " lead.py",
    "trail .py",
    "dir/sub dir/f.txt",
]
LINES = [
    "x = 1",
    "++ b/calc.py",
    "-- a/calc.py",
    "+++ b/calc.py",
    "--- a/calc.py",
    "diff --git a/z b/z",
    "@@ -1 +1 @@",
    "\\ No newline at end of file",
    "rename to evil.py",
    "new file mode 100755",
    "Binary files a/x and b/y differ",
    "",
    " ",
    "\r",
    "+",
    "-",
    "déjà vu",
]

texts = st.builds(
    lambda lines, newline: "\n".join(lines) + ("\n" if newline else ""),
    st.lists(st.sampled_from(LINES), min_size=1, max_size=8),
    st.booleans(),
)
contents = st.one_of(
    texts.map(str.encode),
    st.binary(min_size=1, max_size=40).map(lambda b: b"\x00" + b),  # git: binary
)


@dataclass(frozen=True)
class Change:
    base: dict[str, bytes]
    edits: dict[str, bytes]  # a path of the base edited, or a new path added
    deleted: frozenset[str]
    renamed: dict[str, tuple[str, bytes | None]]  # old -> (new, new content or kept)
    executable: frozenset[str]


@st.composite
def changes(draw: st.DrawFn) -> Change:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True))
    split = draw(st.integers(min_value=1, max_value=len(names)))
    base = {name: draw(contents) for name in names[:split]}
    fresh = names[split:]
    edits: dict[str, bytes] = {}
    deleted: set[str] = set()
    renamed: dict[str, tuple[str, bytes | None]] = {}
    executable: set[str] = set()
    for name in base:
        fate = draw(st.sampled_from(["keep", "edit", "delete", "rename", "chmod"]))
        if fate == "edit":
            edits[name] = draw(contents)
        elif fate == "delete":
            deleted.add(name)
        elif fate == "rename" and fresh:
            new = fresh.pop()
            body = base[name] + b"tail\n" if draw(st.booleans()) else None
            renamed[name] = (new, body)
        elif fate == "chmod":
            executable.add(name)
    for name in fresh:
        if draw(st.booleans()):
            edits[name] = draw(contents)
    return Change(base, edits, frozenset(deleted), renamed, frozenset(executable))


def _git(repo: Path, *args: str) -> bytes:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo), *args],
        capture_output=True,
        check=True,
    )
    return done.stdout


def _write(repo: Path, name: str, content: bytes) -> None:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def _commits(repo: Path, change: Change) -> tuple[str, str]:
    _git(repo, "init", "-q", "-b", "main")
    for name, content in change.base.items():
        _write(repo, name, content)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base", "--allow-empty")
    old = _git(repo, "rev-parse", "HEAD").decode().strip()
    for name in change.deleted:
        (repo / name).unlink()
    for name, (new, body) in change.renamed.items():
        content = (repo / name).read_bytes()
        (repo / name).unlink()
        _write(repo, new, body if body is not None else content)
    for name, content in change.edits.items():
        _write(repo, name, content)
    for name in change.executable:
        os.chmod(repo / name, 0o755)  # noqa: S103 (a mode change, as an agent makes one)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "change", "--allow-empty")
    return old, _git(repo, "rev-parse", "HEAD").decode().strip()


def _kodo_patch(repo: Path, old: str, new: str) -> str:
    """``patch.diff`` as ``services.worker.git_ops._patch`` makes it (hardened git, the
    same options), decoded as both readers decode the artifact."""
    args = ["diff", "--no-ext-diff", "--no-textconv", "--stat", "--binary", "--full-index"]
    done = run_git(repo, [*args, "-M", old, new, "--"])
    assert done.returncode == 0, done.stderr
    return split_stat(done.stdout).diff.decode("utf-8", errors="replace")


def _numstat(repo: Path, old: str, new: str) -> list[tuple[str, int | None, int | None]]:
    """git's own count per file: (new name, added, removed); None for a binary file."""
    done = run_git(
        repo, ["diff", "--no-ext-diff", "--no-textconv", "--numstat", "-z", "-M", old, new]
    )
    assert done.returncode == 0, done.stderr
    fields = done.stdout.decode("utf-8", errors="replace").split("\0")
    found: list[tuple[str, int | None, int | None]] = []
    at = 0
    while at < len(fields) - 1:
        added, removed, name = fields[at].split("\t", 2)
        at += 1
        if not name:  # a rename: the old name, then the new one, each a field
            name = fields[at + 1]
            at += 2
        found.append(
            (name, None if added == "-" else int(added), None if removed == "-" else int(removed))
        )
    return found


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(changes())
def test_the_page_and_the_cli_count_each_file_as_git_does(change: Change) -> None:
    with tempfile.TemporaryDirectory(prefix="kodo-views-") as where:
        repo = Path(where)
        old, new = _commits(repo, change)
        patch = _kodo_patch(repo, old, new)
        truth = _numstat(repo, old, new)

    page = parse_patch(patch)
    assert page.unparsed is None, page.unparsed
    page_rows = [(f.path, f.added, f.removed) for f in page.files]
    cli_rows = [(s.path, s.added, s.removed) for s in diffstat(patch)]
    # a binary file: no text lines on either reader
    expected = [(name, added or 0, removed or 0) for name, added, removed in truth]
    assert page_rows == expected
    assert cli_rows == expected
    # (git counts a binary file whose mode alone changed as binary too: no content shown)
    binary = {name for name, added, _ in truth if added is None}
    assert {f.path for f in page.files if f.change == "binary"} <= binary
