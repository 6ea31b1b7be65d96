"""The hostile campaign against a worker that is NOT root, end to end.

CI runs the security suite as root, whose sandbox mounts an overlay and runs the
command as a uid of its own. A worker that is not root (the Dockerfile's ``kodo``
user, a developer's ``kodo up``) builds another sandbox: the command runs as the
worker's own uid on the host (mapped to 65534 inside), on a copy of the checkout in a
bounded tmpfs, with no cgroup of its own. Here every kodo process runs as
``WORKER_UID`` (``setpriv``), and that uid owns everything a deployment gives it: the
repositories, the workspaces, KODO_HOME with its 0600 token and state files, the
canary folder and the sibling run. So file permissions protect none of them from the
command: only the sandbox does.

The sandbox module's attacks run again here as they are (imported: same scripts, same
assertions), with those of the resource bounds that differ without root, and attacks
aimed at what only copy mode has: the read-only checkout the copy is made from, the
worker's uid shared with the command.

Found here: the copy script's pipe was numbered past what /bin/sh (dash) can name, so
no command of a non-root worker ran; and empty files were unbounded in the worktree's
copy and in /tmp (both tmpfs bounded in bytes only, an empty file taking no byte but an
inode of host kernel memory, which a non-root worker has no cgroup to count: 100,000 in
under two seconds). Both are fixed in services/worker/sandbox (layout.COPY_SCRIPT).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.security import attacks, test_cross_run, test_resource_bounds, test_sandbox
from tests.security.harness import (
    WORKTREE_BYTES,
    Hostile,
    Outcome,
    can_run_as,
    git,
    script_attack,
)

WORKER_UID = 65534
"""The uid every kodo process of this module's stack runs as (it has a passwd entry
everywhere: ``nobody``)."""
NONROOT_REDIS_DB = 4  # of the session's own Redis: this module's broker alone
TMP_BYTES = 32 << 20
"""KODO_EXEC_TMP_BYTES here: small, so the /tmp floods are quick."""

pytestmark = [
    pytest.mark.security,
    pytest.mark.skipif(can_run_as(WORKER_UID) is not None, reason=str(can_run_as(WORKER_UID))),
]


@pytest.fixture(scope="module")
def hostile(database_url: str, redis_url: str) -> Iterator[Hostile]:
    # Not under pytest's basetemp (0700, root's): the stack's user walks to its folders.
    root = Path(tempfile.mkdtemp(prefix="kodo-hostile-nonroot-"))
    root.chmod(0o755)
    stack = Hostile(
        root=root,
        database_url=database_url,
        redis_url=f"{redis_url.rpartition('/')[0]}/{NONROOT_REDIS_DB}",
        run_as=WORKER_UID,
    )
    stack.stack.env["KODO_EXEC_TMP_BYTES"] = str(TMP_BYTES)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        subprocess.run(["rm", "-rf", "--", str(root)], check=False, timeout=120)


def _execute_output(hostile: Hostile, outcome: Outcome) -> dict[str, Any]:
    with hostile.engine.connect() as conn:
        output = conn.execute(
            text("SELECT output FROM app.step_runs WHERE run_id = :r AND step_id = 'ExecuteST'"),
            {"r": outcome.run_id},
        ).scalar_one()
    assert isinstance(output, dict), output
    return output


def _uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
    assert found is not None, status
    return int(found.group(1))


def test_the_stack_runs_as_the_unprivileged_uid_and_a_legit_run_succeeds_in_copy_mode(
    hostile: Hostile,
) -> None:
    """The premise of the module, and the honest case: the scripted model's recipe
    (a function and its passing test) succeeds on a non-root worker's sandbox."""
    for proc in hostile.stack.procs:
        assert _uid_of(proc.pid) == WORKER_UID, f"{proc.name} does not run as {WORKER_UID}"
    repo = hostile.repo("legit")
    run_id = hostile.submit(repo, hostile.fixture("legit"))
    hostile.wait(run_id, {"waiting_input"})
    assert hostile.approve(run_id).status_code == 200
    hostile.wait(run_id, set(), 120)
    outcome = hostile.collect(run_id)
    assert outcome.status == "succeeded", outcome.describe()
    sandbox = _execute_output(hostile, outcome)["sandbox"]
    assert sandbox["mode"] == "bubblewrap", sandbox
    assert sandbox["worktree"]["mode"] == "copy", sandbox
    assert hostile.branch_files(repo, run_id), "the run's branch holds its commit"


# -- test_sandbox's campaign, unchanged, against this stack --------------------------------

launched = test_sandbox.launched
test_the_command_cannot_read_the_workers_environment = (
    test_sandbox.test_the_command_cannot_read_the_workers_environment
)
test_the_command_cannot_read_the_token_file_or_state_files = (
    test_sandbox.test_the_command_cannot_read_the_token_file_or_state_files
)
test_the_command_cannot_reach_postgres_over_tcp_or_the_unix_socket = (
    test_sandbox.test_the_command_cannot_reach_postgres_over_tcp_or_the_unix_socket
)
test_nothing_outside_the_worktree_is_written = (
    test_sandbox.test_nothing_outside_the_worktree_is_written
)
test_a_setsid_daemon_does_not_outlive_the_command = (
    test_sandbox.test_a_setsid_daemon_does_not_outlive_the_command
)
test_other_runs_worktrees_are_invisible = test_sandbox.test_other_runs_worktrees_are_invisible
test_the_command_has_no_network_to_the_broker_or_the_api = (
    test_sandbox.test_the_command_has_no_network_to_the_broker_or_the_api
)
test_no_attack_added_a_row_to_the_token_table = (
    test_sandbox.test_no_attack_added_a_row_to_the_token_table
)
test_a_hook_planted_by_the_command_never_runs_in_a_later_run = (
    test_sandbox.test_a_hook_planted_by_the_command_never_runs_in_a_later_run
)
test_shell_metacharacters_in_argv_are_just_text = (
    test_sandbox.test_shell_metacharacters_in_argv_are_just_text
)

# -- the resource bounds that differ without root (no cgroup: rlimits and the pid ns) -----

test_a_fork_bomb_is_stopped_and_leaves_nothing_running = (
    test_resource_bounds.test_a_fork_bomb_is_stopped_and_leaves_nothing_running
)
test_a_command_that_never_ends_is_killed_with_its_whole_tree = (
    test_resource_bounds.test_a_command_that_never_ends_is_killed_with_its_whole_tree
)

# -- the private checkout (the copy is made from it) ---------------------------------------

test_a_write_into_the_worktree_during_the_command_cannot_forge_its_verdict = (
    test_cross_run.test_a_write_into_the_worktree_during_the_command_cannot_forge_its_verdict
)


# -- what only copy mode has ---------------------------------------------------------------


def _count(label: str, output: str) -> int:
    found = re.search(rf"^{label} (\d+)$", output, re.MULTILINE)
    assert found is not None, output
    return int(found.group(1))


def test_a_command_filling_its_copy_stops_at_the_bound_in_bytes_and_in_files(
    hostile: Hostile,
) -> None:
    """The root module's fill, against the copy: 4x the worktree bound in 1 MB files,
    then a hundred thousand empty files (each costs the host kernel memory that no
    byte bound counts, and a non-root worker has no cgroup to count it): both stop at
    ENOSPC within the bound, and nothing reaches the host's worktree."""
    outcome = script_attack(
        hostile, "fill", attacks.FILL_WORKTREE, megabytes=4 * (WORKTREE_BYTES >> 20), files=100_000
    )
    output = outcome.command_output()
    assert outcome.status == "succeeded", outcome.describe()
    assert "FILL-STOPPED ENOSPC" in output, outcome.describe()
    # the copy's tmpfs holds the checkout's pages too, and no cgroup: KODO_EXEC_TMP_BYTES
    assert _count("FILLED-MB", output) <= min(WORKTREE_BYTES, TMP_BYTES) >> 20
    assert "FILES-STOPPED ENOSPC" in output, outcome.describe()
    assert _count("MADE-FILES", output) <= min(WORKTREE_BYTES, TMP_BYTES) // 4096
    worktree = hostile.workspaces / outcome.run_id
    assert not list(worktree.glob("fill-*")), "the command's files reached the host"
    assert not (worktree / "deep").exists(), "the command's files reached the host"


def test_a_command_filling_tmp_with_empty_files_stops_at_the_bound(hostile: Hostile) -> None:
    """The sandbox's /tmp is a tmpfs of KODO_EXEC_TMP_BYTES; empty files take no byte
    of it, only inodes (host kernel memory, counted by no cgroup here): bounded too."""
    outcome = script_attack(hostile, "tmp-inodes", attacks.TMP_INODES, files=100_000)
    output = outcome.command_output()
    assert outcome.status == "succeeded", outcome.describe()
    assert "TMP-STOPPED ENOSPC" in output, outcome.describe()
    assert _count("TMP-FILES", output) <= TMP_BYTES // 4096


def test_the_checkout_the_copy_is_made_from_stays_read_only(hostile: Hostile) -> None:
    """Copy mode keeps the private checkout bound (read-only) at /.kodo/lower; its files
    look like the command's own there (both are the worker's uid on the host)."""
    outcome = script_attack(hostile, "lower", attacks.WRITE_LOWER)
    said = outcome.command_output()
    assert "DID list-lower" in said, outcome.describe()  # the attack reached its target
    for label in ("write-lower", "new-in-lower", "chmod-lower", "rename-lower"):
        assert f"BLOCKED {label}" in said, f"{label} was not refused:\n{outcome.describe()}"
    repo = hostile.repos / "lower"
    assert git(repo, "status", "--porcelain") == "", "the source repository was written"
    assert outcome.status == "succeeded", outcome.describe()


def test_a_signal_to_every_process_of_the_workers_uid_reaches_none_of_kodos(
    hostile: Hostile,
) -> None:
    """The command is the worker's own uid on the host: ``kill(-1, SIGKILL)`` would
    stop the worker, the API, beat and the collector. It reaches its own sandbox only."""
    before = {proc.name: proc.pid for proc in hostile.stack.procs}
    outcome = script_attack(hostile, "kill-all", attacks.KILL_EVERYTHING)
    assert "KILLING" in outcome.command_output(), outcome.describe()
    dead = [name for name, _ in before.items() if not hostile.stack.proc(name).alive()]
    assert dead == [], f"the command killed {dead}"
    again = hostile.drive(hostile.repo("after-kill"), hostile.fixture("after-kill"))
    assert again.status == "succeeded", again.describe()
    assert json.dumps(_execute_output(hostile, again)["exit_code"]) == "0"


def test_the_processes_that_built_the_sandbox_are_out_of_the_commands_reach(
    hostile: Hostile,
) -> None:
    """The copy script and bubblewrap run as the sandbox namespace's root with
    CAP_SYS_ADMIN there (to mount the bounded tmpfs), the same host uid as the command:
    from its nested namespace the command can open neither their memory, nor their
    descriptors, environment or root, and holds no capability itself."""
    outcome = script_attack(hostile, "peek", attacks.PEEK_OUTSIDE_NAMESPACE)
    said = outcome.command_output()
    assert "SEES" in said, outcome.describe()  # the attack found its targets
    assert "CAPS ['0000000000000000', '0000000000000000', '0000000000000000']" in said, said
    reached = [line for line in said.splitlines() if line.startswith("DID ")]
    assert reached == [], f"the command reached {reached}\n{outcome.describe()}"
    assert outcome.status == "succeeded", outcome.describe()
