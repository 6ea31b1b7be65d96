"""ExecuteST end to end: the sandbox rule, its opt-out, the policy's allowlist, cancel."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import (
    GitError,
    PinUnavailable,
    ensure_worktree,
    exec_root,
    tree_git,
)
from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from services.worker.steps.execute import execute_step
from shared.db.engine import unit_of_work
from shared.domain.run_machine import StepId
from shared.service.runs import cancel_run
from tests.integration.worker.conftest import (
    RuntimeFactory,
    approve,
    diagnostic,
    new_run,
    prompts_at_server,
    step_in_background,
    uow,
)
from tests.integration.worker.test_sandbox import processes_with
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def decided(rt: Runtime, repo: Path, argv: list[str]) -> str:
    """A run at ``executing`` whose decision is ``argv`` (as a hostile model would answer)."""
    run_id = new_run(rt, repo)
    run_step(rt, StepId.COMPILE, run_id, compile_step)
    approve(rt, run_id)
    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "deciding"
    assert run_step(rt, StepId.DECIDE, run_id, decide_step) == "executing"
    with unit_of_work(rt.sessions) as s:
        s.execute(
            text(
                "UPDATE app.step_runs SET output = jsonb_set(output, '{argv}', CAST(:a AS jsonb))"
                " WHERE run_id = :r AND step_id = 'DecideST'"
            ),
            {"a": json.dumps(argv), "r": run_id},
        )
    return run_id


def step_output(rt: Runtime, run_id: str) -> dict[str, Any]:
    with rt.sessions() as s:
        out: dict[str, Any] = s.execute(
            text("SELECT output FROM app.step_runs WHERE run_id = :r AND step_id = 'ExecuteST'"),
            {"r": run_id},
        ).scalar_one()
    return out


def command_output(rt: Runtime, run_id: str) -> bytes:
    with rt.sessions() as s:
        body = s.execute(
            text(
                "SELECT content FROM app.artifacts"
                " WHERE run_id = :r AND name = 'command-output.txt'"
            ),
            {"r": run_id},
        ).scalar_one()
    return bytes(body)


PROBE = "import os; open('ran.txt', 'w').write(str(os.getuid())); print(os.getuid())"


def test_without_a_working_sandbox_the_command_never_runs_and_the_rule_is_named(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    run_id = decided(make_rt(), repo, ["python3", "-c", PROBE])
    rt = make_rt(sandbox_bwrap=str(tmp_path / "no-such-bwrap"))  # a worker without it
    assert run_step(rt, StepId.EXECUTE, run_id, execute_step) == "failed"
    report = diagnostic(rt, run_id)
    assert report["rule"] == "sandbox_required"
    assert report["error"].startswith("sandbox_required: bubblewrap")
    assert "KODO_SANDBOX=off" in report["error"]
    assert not (rt.settings.workspace_dir / run_id / "ran.txt").exists()


def test_without_bubblewrap_no_agent_edit_is_taken_and_the_rule_is_named(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """kodo's own git on a worktree's files is pinned by bubblewrap (git_ops), from the
    worktree's first checkout on: a worker without it refuses before any agent turn,
    long before an agent's edits would be staged or undone."""
    rt = make_rt(sandbox_bwrap=str(tmp_path / "no-such-bwrap"))
    run_id = new_run(rt, repo)
    prompts = prompts_at_server(rt)
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "failed"
    assert prompts_at_server(rt) == prompts
    report = diagnostic(rt, run_id)
    assert report["rule"] == "sandbox_required"
    assert "cannot pin the worktree's folder" in report["error"]
    assert "KODO_SANDBOX=off" in report["error"]


def test_the_opt_out_runs_unsandboxed_only_when_set_and_says_so(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    sandboxed = make_rt()
    run_id = decided(sandboxed, repo, ["python3", "-c", PROBE])
    assert run_step(sandboxed, StepId.EXECUTE, run_id, execute_step) == "succeeded"
    assert step_output(sandboxed, run_id)["sandbox"]["mode"] == "bubblewrap"
    assert command_output(sandboxed, run_id).strip() == b"65534"
    worktree = step_output(sandboxed, run_id)["sandbox"]["worktree"]
    if os.geteuid() == 0:  # the triage record says how the command's writes were bounded
        assert worktree == {
            "mode": "overlay",
            "limit_bytes": sandboxed.settings.exec_worktree_bytes,
        }
    else:
        assert worktree["mode"] == "copy"
        assert "not root" in worktree["note"]

    opted_out = make_rt(sandbox=False, sandbox_bwrap=str(tmp_path / "no-such-bwrap"))
    run_id = decided(opted_out, repo, ["python3", "-c", PROBE])
    assert run_step(opted_out, StepId.EXECUTE, run_id, execute_step) == "succeeded"
    note = step_output(opted_out, run_id)["sandbox"]
    assert note["mode"] == "off"
    assert "UNSANDBOXED" in note["warning"]


def test_the_runs_exec_allowlist_binds_execute_even_past_decide(rt: Runtime, repo: Path) -> None:
    """Defence in depth: DecideST already refuses such an answer; ExecuteST checks again."""
    run_id = decided(rt, repo, ["python3", "-c", PROBE])
    with unit_of_work(rt.sessions) as s:  # the run's pinned policy narrows to make only
        s.execute(
            text(
                "UPDATE app.step_runs SET output = jsonb_set(output, '{policy,exec_allowlist}',"
                " '[\"make\"]') WHERE run_id = :r AND step_id = 'CompileST'"
            ),
            {"r": run_id},
        )
    assert run_step(rt, StepId.EXECUTE, run_id, execute_step) == "failed"
    report = diagnostic(rt, run_id)
    assert "not on the allowlist (make)" in report["error"]
    assert not (rt.settings.workspace_dir / run_id / "ran.txt").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["git", "-c", "alias.x=!touch pwned", "x"],
        ["git", "--config-env=core.pager=HOME", "log"],
        ["git", "--exec-path=/tmp", "status"],
        ["git", "-C", "/", "status"],
        ["git", "--git-dir=/tmp/x", "status"],
        ["git", "--work-tree=/", "status"],
        ["git", "x"],
    ],
)
def test_git_options_and_aliases_are_refused_even_when_git_is_allowlisted(
    make_rt: RuntimeFactory, repo: Path, argv: list[str]
) -> None:
    rt = make_rt(exec_allowlist=("python3", "git"))
    run_id = decided(rt, repo, argv)
    assert run_step(rt, StepId.EXECUTE, run_id, execute_step) == "failed"
    error = diagnostic(rt, run_id)["error"]
    assert "git_options" in error or "git_alias" in error


def test_git_is_not_on_the_default_allowlist(rt: Runtime, repo: Path) -> None:
    run_id = decided(rt, repo, ["git", "status"])
    assert run_step(rt, StepId.EXECUTE, run_id, execute_step) == "failed"
    assert "'git' is not on the allowlist" in diagnostic(rt, run_id)["error"]


def test_the_artifact_keeps_the_first_bytes_and_says_it_was_cut(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(exec_output_cap=1000)
    run_id = decided(rt, repo, ["python3", "-c", "print('y' * 50000)"])
    assert run_step(rt, StepId.EXECUTE, run_id, execute_step) == "succeeded"
    body = command_output(rt, run_id)
    assert body.startswith(b"y" * 1000)
    assert b"output truncated: 50001 bytes written, the first 1000 kept" in body
    out = step_output(rt, run_id)
    assert out["truncated"] is True
    assert out["output_bytes"] == 50001


def executing_in_background(
    rt: Runtime, repo: Path, tag: str
) -> tuple[str, threading.Thread, list[str]]:
    """A run whose ExecuteST runs on a thread, its command holding a ``sleep <tag>`` child."""
    code = f"import subprocess, time; subprocess.Popen(['sleep', '{tag}']); time.sleep(120)"
    run_id = decided(rt, repo, ["python3", "-c", code])
    worker, result = step_in_background(rt, StepId.EXECUTE, run_id, execute_step)
    wait_until(lambda: processes_with(tag), 20, f"the command's `sleep {tag}` to start")
    return run_id, worker, result


def test_cancelling_a_run_kills_its_running_sandbox(rt: Runtime, repo: Path) -> None:
    tag = f"{2000 + time.time_ns() % 1000}.777"
    run_id, worker, result = executing_in_background(rt, repo, tag)
    with uow(rt) as work:
        cancel_run(work, run_id, now=rt.clock.now())
    began = time.monotonic()
    worker.join(20)
    assert result == ["superseded"]
    assert time.monotonic() - began < 5
    wait_until(lambda: processes_with(tag) == [], 5, f"every `sleep {tag}` to be gone")


READ_LATER = (
    "import os, time\n"
    "print('STARTED', os.getcwd(), flush=True)\n"
    "time.sleep(2)\n"
    "print('SAW', open('calc.py').read().count('FORGED'))\n"
)


def test_the_command_runs_on_a_private_checkout_another_agent_cannot_rewrite(
    rt: Runtime, repo: Path
) -> None:
    """While the command runs, something rewrites the run's worktree (as another run's
    agent could: the whole workspaces folder is writable to the daemon). The command
    reads the judged commit all the same, from a checkout outside the workspaces that
    is gone afterwards (found by a red-team pass: a verification was forged this way)."""
    run_id = decided(rt, repo, ["python3", "-c", READ_LATER])
    worktree = rt.settings.workspace_dir / run_id
    outcome: dict[str, str] = {}
    step = threading.Thread(
        target=lambda: outcome.update(status=run_step(rt, StepId.EXECUTE, run_id, execute_step))
    )
    step.start()
    private = exec_root(rt.settings.workspace_dir) / run_id
    wait_until(lambda: (private / "calc.py").exists(), 20, "the private checkout")
    time.sleep(0.5)  # the command is reading its tree by now; the rewrite lands meanwhile
    (worktree / "calc.py").write_text("FORGED = True\n")
    step.join(60)

    said = command_output(rt, run_id).decode()
    assert outcome["status"] == "succeeded", said
    assert "SAW 0" in said, said
    assert f"STARTED {private}" in said, "the command's folder is the private checkout"
    assert not private.exists(), "the private checkout is removed after the command"
    listed = subprocess.run(
        ["git", "worktree", "list", "--porcelain"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(private) not in listed, "git forgets it too"


def test_an_oversized_argument_list_is_not_called_a_missing_sandbox(tmp_path: Path) -> None:
    """exec refusing ~3 MB of arguments is git's failure, not bubblewrap's: the operator
    is never told to turn the sandbox off for it."""
    repo = create_sample_repo(tmp_path / "repo")
    tree = ensure_worktree(repo, tmp_path / "ws", "run-1", "HEAD")
    names = [f"{'a' * 250}/{'b' * 250}{i}" for i in range(6000)]
    with pytest.raises(GitError) as caught:
        tree_git(tree, "hash-object", "--no-filters", "--", *names)
    assert not isinstance(caught.value, PinUnavailable)
    assert "KODO_SANDBOX=off" not in str(caught.value)
