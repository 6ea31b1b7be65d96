"""A base commit's symlinks may not lead out of the worktree (rule ``symlink``).

A checked-out symlink is live for every agent turn: ``w -> ..`` lets the daemon's tools
reach every other run's worktree (the workspaces folder is writable to it), ``r -> /``
its own state. CompileST refuses such a base before any turn; the check resolves links
on disk, so a chain of links that are each harmless alone is caught too.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from services.worker.git_ops import ensure_worktree, escaping_links
from services.worker.runtime import Runtime
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.domain.run_machine import StepId
from tests.integration.worker.conftest import diagnostic, new_run, prompts_at_server

pytestmark = pytest.mark.integration


def _commit_links(repo: Path, links: dict[bytes, bytes]) -> str:
    for name, target in links.items():
        path = os.fsencode(repo) + b"/" + name
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "links"],
        cwd=repo,
        check=True,
    )
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize(
    ("links", "escaping"),
    [
        ({b"w": b".."}, ["w"]),
        ({b"r": b"/"}, ["r"]),
        ({b"sub/up": b"..", b"sub2/x": b"../sub/up/.."}, ["sub2/x"]),  # a chain
        ({b"\xff-name": b"../.."}, ["\udcff-name"]),  # not UTF-8: still found
        ({b"docs/readme": b"../README.md", b"here": b"."}, []),  # inside: allowed
    ],
    ids=["parent", "root", "chain", "non-utf8", "inside"],
)
def test_links_leading_out_of_the_worktree_are_found(
    repo: Path, tmp_path: Path, links: dict[bytes, bytes], escaping: list[str]
) -> None:
    commit = _commit_links(repo, links)
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", commit)
    assert [path for path, _ in escaping_links(tree, commit)] == escaping


def test_compile_refuses_such_a_base_before_any_agent_turn(rt: Runtime, repo: Path) -> None:
    _commit_links(repo, {b"w": b".."})
    run_id = new_run(rt, repo)
    before = prompts_at_server(rt)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"
    report = diagnostic(rt, run_id)
    assert report["rule"] == "symlink"
    assert report["links"] == [{"path": "w", "target": ".."}]
    assert "w -> .." in report["error"]
    assert prompts_at_server(rt) == before, "no agent turn ran on that checkout"


def test_the_staged_tree_is_judged_whole_when_a_link_is_added(repo: Path, tmp_path: Path) -> None:
    """``a -> b/..`` leads nowhere until ``b -> .`` is staged; the base stays remembered
    as clean, the staged tree (no commit given) is never taken from that memory."""
    commit = _commit_links(repo, {b"a": b"b/.."})
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", commit)
    worktree = tree.path
    assert escaping_links(tree, commit) == []
    os.symlink(".", worktree / "b")
    subprocess.run(["git", "add", "b"], cwd=worktree, check=True)
    assert escaping_links(tree) == [("a", "b/..")]
    assert escaping_links(tree, commit) == [], "the commit itself is still clean"
