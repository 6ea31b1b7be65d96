"""What git says a hostile patch changed, end to end: a real patch, applied by kodo's
``try_apply``, read back by ``staged_changes`` (the one parser, in shared/domain).

The patch text carries what a header scan gets wrong: quoted paths with spaces and
octal escapes, ``/dev/null`` sides, a rename, a binary file, a mode change. The
answer must name every path as it is on disk, with both sides of the rename.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import GitError, commit_diffstat, ensure_worktree, staged_changes
from shared.domain.change_check import check_changes, confinement_refusal
from shared.domain.policy import Policy
from tests.integration.worker.patching import try_apply

pytestmark = pytest.mark.integration

IDENT = ["-c", "user.name=t", "-c", "user.email=t@localhost", "-c", "core.quotepath=true"]
SPACED = 'my "notes" file.txt'
ACCENTED = "café.txt"


def plain_git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *IDENT, *args], cwd=repo, capture_output=True, check=True)
    return done.stdout.decode()


def hostile_patch(tmp_path: Path, repo: Path) -> str:
    """The diff a scratch clone shows after hostile edits (binary, with renames)."""
    scratch = tmp_path / "scratch"
    shutil.copytree(repo, scratch)
    (scratch / SPACED).write_text("spaces and quotes\n")
    (scratch / ACCENTED).write_text("octal-escaped in the header\n")
    (scratch / "logo.bin").write_bytes(bytes(range(256)))
    plain_git(scratch, "mv", "README.md", "docs guide.md")
    (scratch / "test_calc.py").unlink()
    (scratch / "calc.py").chmod(0o755)
    plain_git(scratch, "add", "-A")
    return plain_git(scratch, "diff", "--cached", "--binary", "-M", "HEAD")


def test_a_hostile_patch_is_read_back_path_by_path(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "calc")
    patch = hostile_patch(tmp_path, repo)
    for header in ('"a/caf\\303\\251.txt"', "--- /dev/null", "GIT binary patch", "rename from"):
        assert header in patch
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    wt = tree.path
    assert try_apply(wt, patch) is None

    changes = {c.path: c for c in staged_changes(tree)}
    assert sorted(changes) == sorted(
        [SPACED, ACCENTED, "logo.bin", "docs guide.md", "test_calc.py", "calc.py"]
    )
    assert (changes["docs guide.md"].status, changes["docs guide.md"].source) == ("R", "README.md")
    assert changes["test_calc.py"].status == "D"
    assert (changes["calc.py"].old_mode, changes["calc.py"].new_mode) == ("100644", "100755")
    # binary to git, its line feeds counted all the same (one, and a last line without)
    assert (changes["logo.bin"].added, changes["logo.bin"].removed) == (2, 0)
    assert (changes[SPACED].added, changes[ACCENTED].added) == (1, 1)

    files = [{"path": p, "change": "add", "why": ""} for p in (SPACED, ACCENTED, "logo.bin")]
    files += [
        {"path": "docs guide.md", "change": "rename", "from": "README.md", "why": ""},
        {"path": "test_calc.py", "change": "delete", "why": ""},
        {"path": "calc.py", "change": "modify", "why": ""},
    ]
    approved = {"design": "d", "files": files, "risks": [], "tests": []}
    report = check_changes(list(changes.values()), approved, Policy())
    assert report.violations == []
    assert report.executables == ("calc.py",)


def test_git_refusing_a_path_out_of_the_worktree_is_read_as_confinement(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "calc")
    wt = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD").path
    patch = (
        "diff --git a/../escape.txt b/../escape.txt\nnew file mode 100644\n"
        "--- /dev/null\n+++ b/../escape.txt\n@@ -0,0 +1 @@\n+out\n"
    )
    reason = try_apply(wt, patch)
    assert reason is not None
    refusal = confinement_refusal(reason)
    assert refusal is not None
    assert refusal.rule == "confinement"
    assert not (tmp_path / "ws" / "escape.txt").exists()


def test_paths_shaped_like_records_keep_their_counts_in_gits_one_answer(tmp_path: Path) -> None:
    """``--raw`` and ``--numstat`` come from one git process: a path that starts with a
    colon or looks like a count line is still one path, with its own line counts."""
    repo = create_sample_repo(tmp_path / "calc")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    wt = tree.path
    (wt / ":colon.txt").write_text("one\n")
    (wt / "1\t2\tcount.txt").write_text("one\ntwo\n")
    (wt / "-\t-\tbinary.txt").write_text("one\ntwo\nthree\n")
    plain_git(wt, "mv", "README.md", ":readme.md")
    plain_git(wt, "add", "-A")

    changes = {c.path: c for c in staged_changes(tree)}

    assert {p: (c.status, c.added, c.removed) for p, c in changes.items()} == {
        ":colon.txt": ("A", 1, 0),
        "1\t2\tcount.txt": ("A", 2, 0),
        "-\t-\tbinary.txt": ("A", 3, 0),
        ":readme.md": ("R", 0, 0),
    }
    assert changes[":readme.md"].source == "README.md"


def test_decide_sees_the_judged_commits_diffstat_read_once_per_commit(tmp_path: Path) -> None:
    """DecideST's prompt shows ``git diff --stat`` of the commit ApplyPatchST judged
    (not of a HEAD moved since), and builds it again at collection without git."""
    repo = create_sample_repo(tmp_path / "calc")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    wt = tree.path
    (wt / "calc.py").write_text((wt / "calc.py").read_text() + "\n# judged\n")
    plain_git(wt, "commit", "-qam", "judged")
    judged = plain_git(wt, "rev-parse", "HEAD").strip()
    expected = plain_git(wt, "diff", "--stat", "HEAD~1", "HEAD")
    (wt / "README.md").write_text("moved on\n")
    plain_git(wt, "commit", "-qam", "after the verdict")

    assert commit_diffstat(tree, judged) == expected
    assert "calc.py" in expected
    shutil.rmtree(wt)  # no git can answer now: the second read is the remembered one
    assert commit_diffstat(tree, judged) == expected
    with pytest.raises(GitError, match="not a commit id"):
        commit_diffstat(tree, "--output=/tmp/x")
