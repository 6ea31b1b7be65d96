"""Another run's agent cannot change what a run's verification judges.

Every run's worktree lies in the daemon's one writable folder, so another run's agent
(or a daemon still writing) can rewrite it at any moment. Found by a red-team pass:
ExecuteST checked the worktree, then ran the command on it, and a write landing in
between made a buggy commit pass its verification. The command now runs on a private
checkout of the judged commit, out of the daemon's sight.
"""

from __future__ import annotations

import time

import pytest

from devstack.sample_repo import FILES
from tests.security import attacks
from tests.security.harness import MARK, Hostile, git

pytestmark = pytest.mark.security

CALC = FILES["calc.py"]
BUGGY = CALC.replace("return a + b", "return a - b")
CHECK = (
    "import sys, time\n"
    "time.sleep(3)  # a test suite that takes a while\n"
    "import calc\n"
    "print('add(2, 3) =', calc.add(2, 3))\n"
    "sys.exit(0 if calc.add(2, 3) == 5 else 1)\n"
)


def _rewrite(path: str, old: str, new: str) -> str:
    before, after = old.splitlines(), new.splitlines()
    body = "".join(f"-{x}\n" for x in before) + "".join(f"+{x}\n" for x in after)
    hunk = f"@@ -1,{len(before)} +1,{len(after)} @@\n"
    return f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n{hunk}{body}"


def test_a_write_into_the_worktree_during_the_command_cannot_forge_its_verdict(
    hostile: Hostile,
) -> None:
    marker = f"{MARK}-verify-{hostile.nonce}"
    repo = hostile.repo("victim-verify")
    fixture = hostile.fixture(
        "victim-verify",
        plan=attacks.plan(("calc.py", "modify"), ("check.py", "add"), design="Tweak add."),
        patch=attacks.patch(_rewrite("calc.py", CALC, BUGGY), attacks.add_file("check.py", CHECK)),
        build=attacks.build("python3", "check.py", marker),
    )
    run_id = hostile.submit(repo, fixture)
    assert hostile.wait(run_id, {"waiting_input"})["status"] == "waiting_input"
    assert hostile.approve(run_id).status_code == 200
    # The run's progress is in the failure: under a loaded CI the 90 s ran out once.
    started = hostile.wait_for(lambda: bool(hostile.attack_pids(marker)), run_id, 90)
    assert started, f"the run's command never started: {hostile.describe(run_id)}"
    time.sleep(0.5)
    (hostile.workspaces / run_id / "calc.py").write_text(CALC)  # "run A" fixes add
    hostile.wait(run_id, set(), 120)
    outcome = hostile.collect(run_id)

    committed = git(repo, "show", f"kodo/{run_id}:calc.py")
    assert "return a - b" in committed, "the judged commit is the buggy one"
    assert "add(2, 3) = -1" in outcome.command_output(), outcome.describe()
    assert outcome.status == "failed", outcome.describe()
