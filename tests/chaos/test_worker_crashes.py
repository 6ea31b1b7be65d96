"""A worker SIGKILLed mid-step is replaced, and its run finishes without a paid-twice call."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.chaos.conftest import Scenario
from tests.chaos.harness import BASE_WORKER, Chaos, branch_commits, new_repo, title
from tests.waiting import wait_until

pytestmark = pytest.mark.chaos


def _wait_prompted(chaos: Chaos, session_title: str, deadline_s: float = 20.0) -> None:
    """Until oc-compat has received the prompt of that session (the call is in flight)."""
    wait_until(
        lambda: chaos.prompts_by_title()[session_title],
        deadline_s,
        f"{session_title!r} to reach oc-compat",
        detail=chaos.logs,
    )


def _wait_file(chaos: Chaos, path: Path, deadline_s: float) -> str:
    """The text of ``path`` once it exists (a held worker writes it at its hold)."""
    wait_until(path.exists, deadline_s, f"{path.name} to be written", detail=chaos.logs)
    return path.read_text()


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
    ).stdout


def staged(worktree: Path) -> str:
    """``git diff --cached --name-only`` in ``worktree``: what is in its index."""
    return _git(worktree, "diff", "--cached", "--name-only")


def unstaged(worktree: Path) -> list[str]:
    """Paths the worktree changes against HEAD, not staged (the agent's edits)."""
    return [line[3:] for line in _git(worktree, "status", "--porcelain").splitlines()]


def _edited_so_far(worktree: Path) -> list[str] | None:
    """The agent's edits, or None while the worktree is still being made. Read without
    git's optional index lock: a status refreshing the index took ``index.lock`` while
    kodo's step checked out, which refused the run (``worktree_index_lock``, CI)."""
    done = subprocess.run(
        ["git", "--no-optional-locks", "status", "--porcelain"],
        cwd=worktree if worktree.exists() else None,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if not worktree.exists() or done.returncode != 0:
        return None
    return [line[3:] for line in done.stdout.splitlines()]


def committed_files(repo: Path, run_id: str) -> list[str]:
    """Paths the run's branch changes against ``main``."""
    return _git(repo, "diff", "--name-only", f"main...kodo/{run_id}").splitlines()


BLOCKING = {"OC_ASYNC": "0"}
"""A worker whose provider calls block its thread (OC_ASYNC=0): killed mid-call, the
call is unknown and the next attempt is paid."""


def _blocking_worker(chaos: Chaos) -> str:
    chaos.stop_worker(BASE_WORKER)
    chaos.start_worker("blocking", env=BLOCKING)
    return "blocking"


def test_a_worker_killed_while_the_model_thinks_loses_nothing_the_answer_is_collected(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "SIGKILL worker while CompileST's sent call is thinking (async)"
    run_id = chaos.submit("Add a note to README.md [oc:slow=4000]")
    scenario.track(run_id)
    _wait_prompted(chaos, title("CompileST", run_id, 1))
    wait_until(chaos.in_flight_at_oc, 5, "the prompt to be held open", detail=chaos.logs)
    chaos.kill_worker()
    assert chaos.in_flight_at_oc() == 1, "the model still thinks; no worker is alive"
    chaos.start_worker(BASE_WORKER)

    chaos.wait_status(run_id, {"waiting_input"}, deadline_s=45)
    compile_calls = [(c.attempt, c.status) for c in chaos.ledger(run_id, "CompileST")]
    assert compile_calls == [(1, "succeeded")], chaos.explain([run_id])
    assert chaos.prompts_by_title()[title("CompileST", run_id, 1)] == 1, "paid once"
    assert chaos.prompts_by_title()[title("CompileST", run_id, 2)] == 0, "never asked again"
    assert chaos.approve(run_id).status_code == 200
    chaos.wait_status(run_id, {"succeeded"}, deadline_s=45)
    assert len(branch_commits(chaos.repo_of(run_id), run_id)) == 1
    chaos.assert_exactly_once([run_id])


def test_a_worker_killed_during_compile_s_provider_call_leaves_an_unknown_call_and_a_retry(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "SIGKILL worker during CompileST call (blocking calls, OC_ASYNC=0)"
    worker = _blocking_worker(chaos)
    run_id = chaos.submit("Add a note to README.md [oc:slow=3000]")
    scenario.track(run_id)
    _wait_prompted(chaos, title("CompileST", run_id, 1))
    wait_until(chaos.in_flight_at_oc, 5, "the prompt to be held open", detail=chaos.logs)
    chaos.kill_worker(worker)
    chaos.start_worker(worker, env=BLOCKING)

    chaos.wait_status(run_id, {"waiting_input"}, deadline_s=45)
    compile_calls = [(c.attempt, c.status) for c in chaos.ledger(run_id, "CompileST")]
    assert compile_calls == [(1, "unknown"), (2, "succeeded")], chaos.explain([run_id])
    assert branch_commits(chaos.repo_of(run_id), run_id) == [], "no code before approval"

    assert chaos.approve(run_id).status_code == 200
    chaos.wait_status(run_id, {"succeeded"}, deadline_s=45)
    assert len(branch_commits(chaos.repo_of(run_id), run_id)) == 1
    chaos.assert_exactly_once([run_id])


def test_a_worker_killed_after_the_agents_edits_commits_them_once_as_they_lie(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "SIGKILL worker between the agent's edits and ApplyPatchST's commit"
    chaos.stop_worker(BASE_WORKER)
    held = chaos.start_worker_held_before_apply("held")
    run_id = chaos.submit("Add a note to README.md")
    scenario.track(run_id)
    chaos.wait_status(run_id, {"waiting_input"}, deadline_s=30)
    assert chaos.approve(run_id).status_code == 200
    worktree = Path(_wait_file(chaos, held, deadline_s=30))
    applied = [c for c in chaos.ledger(run_id, "ApplyPatchST") if c.status == "succeeded"]
    assert len(applied) == 1, "the patch was paid for before the hold"
    chaos.kill_worker("held")
    repo = chaos.repo_of(run_id)
    assert branch_commits(repo, run_id) == [], "killed before the commit"
    assert staged(worktree) == "", "killed before staging"
    edited = unstaged(worktree)
    assert edited, "the agent's edits lie in the worktree"
    chaos.start_worker(BASE_WORKER)

    chaos.wait_status(run_id, {"succeeded"}, deadline_s=45)
    commits = branch_commits(repo, run_id)
    assert len(commits) == 1, commits
    assert commits[0].startswith("kodo: ")
    apply_calls = [(c.attempt, c.status) for c in chaos.ledger(run_id, "ApplyPatchST")]
    assert apply_calls == [(1, "succeeded")], "the recorded answer is replayed, not asked again"
    assert sorted(committed_files(repo, run_id)) == sorted(edited), "taken as they lay"
    apply_step = chaos.step_run(run_id, "ApplyPatchST")
    assert apply_step.status == "succeeded"
    assert apply_step.deliveries >= 2, "the killed delivery and the one that finished"
    chaos.assert_exactly_once([run_id])


def test_a_worker_killed_mid_edit_never_commits_the_half_edited_tree(
    chaos: Chaos, scenario: Scenario
) -> None:
    """The worker dies while the daemon is between two files; the daemon goes on. The next
    delivery declares the call unknown, aborts its session and sees it idle before it
    resets the worktree; attempt 2 edits from HEAD and is committed once."""
    scenario.name = "SIGKILL worker while the agent is mid-edit (blocking calls, OC_ASYNC=0)"
    worker = _blocking_worker(chaos)
    run_id = chaos.submit("Add a note to README.md and notes.md [oc:slow-edit=30000]")
    scenario.track(run_id)
    chaos.wait_status(run_id, {"waiting_input"}, deadline_s=30)
    assert chaos.approve(run_id).status_code == 200
    worktree = chaos.root / "workspaces" / run_id
    wait_until(
        lambda: _edited_so_far(worktree) == ["README.md"],
        30,
        "the agent to have edited README.md, not yet notes.md",
        detail=chaos.logs,
    )
    chaos.kill_worker(worker)
    assert chaos.in_flight_at_oc() == 1, "the daemon is still editing"
    chaos.start_worker(worker, env=BLOCKING)

    chaos.wait_status(run_id, {"succeeded"}, deadline_s=60)
    repo = chaos.repo_of(run_id)
    assert len(branch_commits(repo, run_id)) == 1
    assert sorted(committed_files(repo, run_id)) == ["README.md", "notes.md"]
    readme = _git(repo, "show", f"kodo/{run_id}:README.md")
    assert readme.count("kodo note") == 1, readme
    apply_calls = [(c.attempt, c.status) for c in chaos.ledger(run_id, "ApplyPatchST")]
    assert apply_calls == [(1, "unknown"), (2, "succeeded")], chaos.explain([run_id])
    assert chaos.oc_stats()["aborts"] >= 1, "the abandoned session was aborted"
    chaos.assert_exactly_once([run_id])


def test_a_worker_killed_mid_call_leaks_no_reservation_and_the_budget_holds(
    chaos: Chaos, scenario: Scenario
) -> None:
    """A budget with room for one call in flight at a time ($3.00 reserved per call, a few
    tenths of a cent spent each): the killed worker's call is collected and settled once,
    so every later call still fits; a leaked (or doubled) reservation would stop the run."""
    scenario.name = "SIGKILL worker mid-call under a budget that fits one call at a time"
    created = chaos.http.post(
        "/intents",
        json={
            "repo": str(new_repo(chaos.repos)),
            "goal": "Add a note to README.md [oc:slow=3000]",
            "budget_usd": 3.05,
        },
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["intentId"]
    assert chaos.http.post(f"/intents/{run_id}/run").status_code == 202
    scenario.track(run_id)
    _wait_prompted(chaos, title("CompileST", run_id, 1))
    wait_until(chaos.in_flight_at_oc, 5, "the prompt to be held open", detail=chaos.logs)
    chaos.kill_worker()
    chaos.start_worker(BASE_WORKER)

    final = chaos.drive([run_id], 90)[run_id]

    assert final == "succeeded", chaos.explain([run_id])
    budget = chaos.http.get(f"/runs/{run_id}").json()["budget"]["usd"]
    assert budget["reserved"] == 0
    assert 0 < budget["spent"] <= budget["limit"] == 3.05
    assert all(c.status == "succeeded" for c in chaos.ledger(run_id)), chaos.explain([run_id])
    chaos.assert_exactly_once([run_id])
    scenario.note = f"spent ${budget['spent']:.4f} of ${budget['limit']}"


def test_a_cancelled_runs_call_whose_claimant_died_before_parking_is_settled(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "cancel, then SIGKILL the worker between the prompt and its park"
    chaos.stop_worker(BASE_WORKER)
    marker = chaos.start_worker_held_before_park("held")
    run_id = chaos.submit("Add a note to README.md [oc:slow=20000]")
    scenario.track(run_id)
    _wait_file(chaos, marker, 30)
    assert chaos.prompts_by_title()[title("CompileST", run_id, 1)] == 1, "the prompt was sent"
    assert chaos.http.post(f"/runs/{run_id}/cancel", json={}).status_code == 200
    wait_until(lambda: chaos.in_flight_at_oc() == 0, 10, "the cancel's abort", detail=chaos.logs)
    chaos.kill_worker("held")
    chaos.start_worker(BASE_WORKER)

    # the step's lease (KODO_STEP_LEASE_S, 4 s here) lapses with its claimant, then the
    # reconciler's sweep (every KODO_RECONCILE_S, 1 s here) takes the call
    chaos.assert_exactly_once([run_id], settle_s=10)
    calls = chaos.ledger(run_id)
    assert [(c.status, c.error_name) for c in calls] == [("aborted", "RunCancelled")], (
        chaos.explain([run_id])
    )
    budget = chaos.http.get(f"/runs/{run_id}").json()["budget"]["usd"]
    assert budget["reserved"] == 0, "the call's reservation is settled"
    assert budget["spent"] > 0, "at least its reservation is spent: its turn was cut short"
    scenario.note = f"aborted and settled; spent ${budget['spent']:.4f}"
