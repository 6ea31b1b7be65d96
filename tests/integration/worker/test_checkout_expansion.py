"""``checkout_refusal`` weighs the blobs, but git writes them through the commit's own
``.gitattributes`` (red-team helper-117 on helper-116's checkout bound).

``ident`` expands each 4-byte ``$Id$`` to the 47-byte ``$Id: <blob id> $``, and
``working-tree-encoding=UTF-32`` writes each of those bytes as four: a 1 MiB blob (a few
kB of objects) passes a bound of 8 MiB and the verification's private checkout writes
~47 MiB of it to the host's disk before ``unfaithful_checkout`` looks (the same tree
through ``checkout_head`` in CompileST, which never looks). Safe: a tree whose checkout
would write past the bound is refused before a byte is written.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.worker import git_ops
from services.worker.git_ops import CheckoutBounds, UnfaithfulCheckout, checkout_refusal

pytestmark = pytest.mark.integration

BOUND = 8 << 20


def _git(cwd: Path, *args: str, data: bytes | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, input=data)
    return done.stdout.decode().strip()


def _bomb_repo(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    attrs = _git(
        repo, "hash-object", "-w", "--stdin", data=b"bomb.txt ident working-tree-encoding=UTF-32\n"
    )
    bomb = _git(repo, "hash-object", "-w", "--stdin", data=b"$Id$" * (1 << 18))  # 1 MiB
    tree = _git(
        repo,
        "mktree",
        data=f"100644 blob {attrs}\t.gitattributes\n100644 blob {bomb}\tbomb.txt\n".encode(),
    )
    commit = _git(
        repo, "-c", "user.name=a", "-c", "user.email=a@b", "commit-tree", tree, "-m", "base"
    )
    _git(repo, "update-ref", "refs/heads/main", commit)
    return repo, commit


def test_a_tree_its_attributes_expand_past_the_bound_is_refused_before_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, commit = _bomb_repo(tmp_path)
    workspace = tmp_path / "workspaces"
    workspace.mkdir()
    refusal = checkout_refusal(repo, commit, CheckoutBounds.of_worktree(BOUND))

    written: list[int] = []
    judge = git_ops.unfaithful_checkout

    def measured(checkout: git_ops.PrivateCheckout, judged: str) -> list[str]:
        written.append((checkout.path / "bomb.txt").stat().st_size)
        return judge(checkout, judged)

    monkeypatch.setattr(git_ops, "unfaithful_checkout", measured)
    if refusal is None:
        with (
            pytest.raises(UnfaithfulCheckout),
            git_ops.private_checkout(repo, workspace, "run-1", commit),
        ):
            pass
    assert refusal is not None, (
        f"checkout_refusal passed a 1 MiB blob under a {BOUND}-byte bound; the private"
        f" checkout then wrote {written} bytes of it before anything was judged"
    )
