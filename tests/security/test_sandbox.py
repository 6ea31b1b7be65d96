"""ExecuteST runs what the agent chose inside a sandbox: an approved, harmless-looking plan
adds a check script, and the verification command runs it. Whatever the script tries,
nothing of kodo's (environment, tokens, database, broker, other runs, the source
repository) is reachable, nothing outside the worktree changes, nothing outlives it.

The attacks run concurrently (one run each) when the module starts; each test then
asserts the outcome of one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from services.worker.git_ops import ensure_worktree, stage_edits
from services.worker.sandbox.keyring import KEYCTL_SYSCALL
from services.worker.worktree_guard import worktree_gitdir_problem
from shared.domain.contracts import UNSTORABLE_SAID
from tests.security import attacks
from tests.security.harness import (
    KEYRING_KEY,
    MARK,
    Hostile,
    Outcome,
    git,
    script_attack,
)
from tests.security.in_keyring import SESSION_NAME

pytestmark = pytest.mark.security

ATTACKS: dict[str, Callable[[Hostile], Outcome]] = {
    "environ": lambda s: script_attack(s, "environ", attacks.READ_ENVIRON),
    "home": lambda s: script_attack(s, "home", attacks.READ_HOME),
    "postgres": lambda s: script_attack(s, "postgres", attacks.POSTGRES),
    "outside": lambda s: script_attack(s, "outside", attacks.WRITE_OUTSIDE),
    "daemon": lambda s: script_attack(
        s, "daemon", attacks.DAEMON, marker=f"{MARK}-daemon-{s.nonce}"
    ),
    "siblings": lambda s: script_attack(s, "siblings", attacks.SIBLINGS),
    "descriptors": lambda s: script_attack(s, "descriptors", attacks.DESCRIPTORS),
    "network": lambda s: script_attack(s, "network", attacks.NETWORK),
    "keyring": lambda s: script_attack(
        s,
        "keyring",
        attacks.KEYRING,
        keyctl=KEYCTL_SYSCALL.get(os.uname().machine, -1),
        key=KEYRING_KEY,
        session_name=SESSION_NAME.decode(),
    ),
}


TOKENS_BEFORE = "tokens-before"


@pytest.fixture(scope="module")
def launched(hostile: Hostile) -> Iterator[dict[str, Future[Outcome]]]:
    """Every attack of the module, started at once (the token rows counted before)."""
    before: Future[Outcome] = Future()
    before.set_result(Outcome(TOKENS_BEFORE, {"rows": hostile.api_token_rows()}, None, {}, {}))
    with ThreadPoolExecutor(max_workers=len(ATTACKS)) as pool:
        futures = {name: pool.submit(run, hostile) for name, run in ATTACKS.items()}
        yield {TOKENS_BEFORE: before, **futures}


def _outcome(launched: dict[str, Future[Outcome]], name: str) -> Outcome:
    return launched[name].result(timeout=180)


def _assert_no_leak(hostile: Hostile, outcome: Outcome) -> None:
    leaked = hostile.leaks(outcome.evidence())
    assert not leaked, f"{leaked} leaked into the run's artifacts\n{outcome.describe()}"


def test_the_command_cannot_read_the_workers_environment(
    hostile: Hostile, launched: dict[str, Future[Outcome]]
) -> None:
    outcome = _outcome(launched, "environ")
    _assert_no_leak(hostile, outcome)
    assert "STOLEN" not in outcome.command_output(), outcome.describe()


def test_the_command_cannot_read_the_workers_session_keyring(
    hostile: Hostile, launched: dict[str, Future[Outcome]]
) -> None:
    """The worker runs in a session keyring holding a secret (as under a login or a
    systemd service); the command searches every keyring it could possess for it, reads
    every key /proc/keys lists, and tries to join the worker's keyring by name."""
    state = hostile.keyring_state()
    if state != "joined":
        pytest.skip(f"the worker holds no keyring here ({state}): nothing to attack")
    outcome = _outcome(launched, "keyring")
    _assert_no_leak(hostile, outcome)
    said = outcome.command_output()
    assert "BLOCKED search-session" in said, outcome.describe()  # it ran, and found nothing


def test_the_command_holds_no_descriptor_of_the_worker_and_cannot_forge_its_etc(
    hostile: Hostile, launched: dict[str, Future[Outcome]]
) -> None:
    """It lists every descriptor it holds and reads the pipes among them, then appends to
    the sandbox's /etc/passwd, group and hosts (bound read-only from pipes, never a host
    file): a root worker's sandbox held bubblewrap's --userns-block-fd, a pipe of the
    worker's, until the mounter closed it."""
    outcome = _outcome(launched, "descriptors")
    said = outcome.command_output()
    assert "LISTED" in said, outcome.describe()  # it ran
    assert "STOLEN descriptor" not in said, outcome.describe()
    for name in ("passwd", "group", "hosts"):
        assert f"BLOCKED etc-{name} " in said, outcome.describe()
    assert "DID etc-" not in said, outcome.describe()


def test_the_command_cannot_read_the_token_file_or_state_files(
    hostile: Hostile, launched: dict[str, Future[Outcome]]
) -> None:
    outcome = _outcome(launched, "home")
    _assert_no_leak(hostile, outcome)
    assert "STOLEN" not in outcome.command_output(), outcome.describe()


def test_the_command_cannot_reach_postgres_over_tcp_or_the_unix_socket(
    hostile: Hostile, launched: dict[str, Future[Outcome]]
) -> None:
    outcome = _outcome(launched, "postgres")
    with hostile.engine.connect() as conn:
        planted = conn.execute(
            text("SELECT name FROM app.api_tokens WHERE name LIKE :n"),
            {"n": f"pwned-{hostile.nonce}%"},
        ).all()
    assert planted == [], f"the command inserted admin tokens {planted}\n{outcome.describe()}"
    assert "DID postgres" not in outcome.command_output(), outcome.describe()


def test_nothing_outside_the_worktree_is_written(
    hostile: Hostile, launched: dict[str, Future[Outcome]]
) -> None:
    outcome = _outcome(launched, "outside")
    repo = hostile.repos / "outside"
    assert hostile.outside_changes() == [], outcome.describe()
    assert git(repo, "status", "--porcelain") == "", "the source repository was written"
    host_tmp = Path("/tmp") / f"kodo-hostile-{hostile.nonce}"  # noqa: S108 - the attack's target
    assert not host_tmp.exists(), "the host /tmp was written"


def test_a_setsid_daemon_does_not_outlive_the_command(
    hostile: Hostile, launched: dict[str, Future[Outcome]]
) -> None:
    outcome = _outcome(launched, "daemon")
    assert outcome.status in ("succeeded", "failed"), outcome.describe()
    marker = f"{MARK}-daemon-{hostile.nonce}"
    deadline = time.monotonic() + 3
    while hostile.attack_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert hostile.attack_pids(marker) == [], "a daemon the command started is still running"


def test_other_runs_worktrees_are_invisible(
    hostile: Hostile, launched: dict[str, Future[Outcome]]
) -> None:
    outcome = _outcome(launched, "siblings")
    _assert_no_leak(hostile, outcome)


def test_the_command_has_no_network_to_the_broker_or_the_api(
    hostile: Hostile, launched: dict[str, Future[Outcome]]
) -> None:
    outcome = _outcome(launched, "network")
    assert hostile.redis_keys(f"kodo-hostile-pwned-{hostile.nonce}") == [], outcome.describe()
    assert "DID api-network" not in outcome.command_output(), outcome.describe()


def test_no_attack_added_a_row_to_the_token_table(
    hostile: Hostile, launched: dict[str, Future[Outcome]]
) -> None:
    for name in ATTACKS:
        _outcome(launched, name)
    assert hostile.api_token_rows() == _outcome(launched, TOKENS_BEFORE).run["rows"]


def test_a_hook_planted_by_the_command_never_runs_in_a_later_run(hostile: Hostile) -> None:
    marker = hostile.markers / "hook-ran.txt"
    repo = hostile.repos / "hooked"
    first = script_attack(hostile, "hooked", attacks.PLANT_HOOK, marker_file=str(marker))
    hooks = repo / ".git" / "hooks"
    planted = [p.name for p in hooks.iterdir() if not p.name.endswith(".sample")]
    second = hostile.drive(repo, hostile.fixture("after-hook"))
    assert not marker.exists(), (
        f"a planted hook or fsmonitor ran: {marker.read_text()!r}\n{first.describe()}"
    )
    assert planted == [], f"the command wrote hooks into the source repository: {planted}"
    assert second.status == "succeeded", second.describe()


def test_a_command_cannot_redirect_its_worktrees_git_or_poison_the_config_kodo_lists(
    hostile: Hostile,
) -> None:
    """The verification command points the worktree's .git at a git dir of its own (whose
    HEAD names the run's branch, whose config runs a program) and appends a filter
    driver to the source repository's config. A later delivery reuses the worktree
    (reading its branch from HEAD) and runs git there (through the config listing kodo
    reuses while the config files are unchanged): nothing the command wrote is trusted
    or run."""
    marker = hostile.markers / "gitdir-ran.txt"
    repo = hostile.repos / "redirected"
    outcome = script_attack(hostile, "redirected", attacks.REDIRECT_GITDIR, marker_file=str(marker))
    said = outcome.command_output()
    for label in ("repoint-gitdir", "replace-gitdir", "poison-common-config"):
        assert f"BLOCKED {label}" in said, f"{label} was not refused:\n{said}\n{outcome.describe()}"
    worktree = hostile.workspaces / outcome.run_id
    assert worktree_gitdir_problem(worktree, repo) is None, "the .git pointer changed"
    base = git(repo, "rev-parse", "HEAD").strip()
    again = ensure_worktree(repo, hostile.workspaces, outcome.run_id, base)  # a later delivery
    assert (again.gitdir / "HEAD").read_text() == f"ref: refs/heads/kodo/{outcome.run_id}\n"
    (again.path / "new.txt").write_text("x\n")
    stage_edits(again)  # git add and diff: listings, drivers, fsmonitor
    assert not marker.exists(), f"a planted program ran: {marker.read_text()!r}"


README = "# calc\n\nA tiny calculator used to demonstrate kodo.\n"


def _verified_with(hostile: Hostile, name: str, *argv: str, repo: Path | None = None) -> Outcome:
    """A harmless README edit, approved and applied, then verified with ``argv``."""
    fixture = hostile.fixture(
        name,
        plan=attacks.plan(("README.md", "modify")),
        patch=attacks.patch(attacks.append_lines("README.md", README, ["", "More."])),
        build=attacks.build(*argv),
    )
    return hostile.drive(repo or hostile.repo(name), fixture)


def test_git_aliases_cannot_run_a_shell(hostile: Hostile) -> None:
    marker = hostile.markers / "alias-ran.txt"
    outcome = _verified_with(hostile, "alias", "git", "-c", f"alias.x=!sh -c 'id > {marker}'", "x")
    assert not marker.exists(), "git ran the alias's shell"
    assert outcome.status == "failed", outcome.describe()
    refused = "exec_allowlist" in outcome.rules() or "allowlist" in str(outcome.run.get("error"))
    assert refused, outcome.describe()


def test_shell_metacharacters_in_argv_are_just_text(hostile: Hostile) -> None:
    marker = hostile.markers / "metachar-ran.txt"
    argv = ("python3", f"test_calc.py; touch {marker}", f"$(touch {marker})")
    outcome = _verified_with(hostile, "metachar", *argv)
    assert outcome.status in ("succeeded", "failed"), outcome.describe()
    assert not marker.exists(), "a shell interpreted the argv"


def test_a_nul_byte_in_an_argument_breaks_the_decision_contract_before_anything_runs(
    hostile: Hostile,
) -> None:
    outcome = _verified_with(hostile, "nul-argv", "python3", "-c", "print('R' + 'AN')\x00")
    assert outcome.status == "failed", outcome.describe()
    attempts = outcome.diagnostic().get("attempts", [])
    assert attempts, outcome.describe()
    assert all(a["error"] == f"ContractViolation: argv/2: {UNSTORABLE_SAID}" for a in attempts), (
        outcome.describe()
    )
    assert {s["stepId"] for s in outcome.run["steps"]} <= {"CompileST", "ApplyPatchST", "DecideST"}
    assert outcome.command_output() == "", "a command started"


def test_a_repository_policy_allowlist_narrows_what_may_run(hostile: Hostile) -> None:
    repo = hostile.repo("narrow", [{".kodo/policy.toml": '[policy]\nexec_allowlist = ["make"]\n'}])
    outcome = _verified_with(
        hostile, "narrow", "python3", "-c", "print('R' + 'AN-' + 'ANYWAY')", repo=repo
    )
    assert "RAN-ANYWAY" not in outcome.command_output(), "python3 ran despite the policy"
    assert outcome.status == "failed", outcome.describe()
    refused = "exec_allowlist" in outcome.rules() or "allowlist" in str(outcome.run.get("error"))
    assert refused, outcome.describe()
