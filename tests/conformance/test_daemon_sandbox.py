"""The daemon's bubblewrap sandbox holds even if the daemon's own rules were bypassed.

A shell started by the very argv that runs ``opencode serve`` (same binds, same
environment) tries what an escaped tool call would: write kodo's state, read its
tokens and database URL, read or write a source repository (its working files, its
``.git/config`` with a remote's token) from a run's worktree. Only the workspaces
folder and the daemon's HOME take writes; no repository is there to read. The
conformance daemon itself runs in this sandbox.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.oc_daemon import daemon, sandbox
from devstack.oc_daemon.daemon import DaemonState
from devstack.sample_repo import create_sample_repo
from devstack.supervisor import free_port, stop
from shared.opencode.errors import OpenCodeError
from tests.conformance.conftest import PASSWORD
from tests.waiting import wait_until

pytestmark = pytest.mark.conformance

SECRET_URL = "postgresql+psycopg://kodo:hunter2@127.0.0.1:5432/kodo"  # noqa: S105 (fake)
REMOTE = "https://x-access-token:ghp_hunter2@example.invalid/calc.git"
WRITES = {
    "workspace": "{ws}/run1/ok.txt",
    "home": "{home}/ok.txt",
    "repo": "{repos}/calc/planted.txt",
    "state-dir": "{state}/planted.txt",
    "kodo-state": "{kodo}/planted.txt",
    "host-tmp": "{tmp}/planted.txt",
    "the-roots-tmpfs": "/planted.txt",
}
"""Where an escaped tool call would write; only the first two may land on the host."""
READS = {
    "worktree": "{ws}/run1/README.md",
    "repo": "{repos}/calc/README.md",
    "repo-uncommitted": "{repos}/calc/.env",
    "repo-git-config": "{repos}/calc/.git/config",
    "worktree-git-record": "{repos}/calc/.git/worktrees/run1/HEAD",
    "daemon-password": "{state}/daemon.json",
    "kodo-up-json": "{kodo}/up.json",
    "tokens-in-a-checkout": "{repos}/checkout/.kodo/tokens.json",
    "etc-shadow": "/etc/shadow",
}
"""What it would read; only a run's worktree is there to read."""


@pytest.fixture
def layout(tmp_path: Path, opencode_binary: Path) -> dict[str, Path]:
    where = {name: tmp_path / name for name in ("ws", "repos", "state", "kodo", "tmp")}
    for path in where.values():
        path.mkdir()
    calc = create_sample_repo(where["repos"] / "calc")
    _git(calc, "remote", "add", "origin", REMOTE)
    (calc / ".env").write_text("API_KEY=hunter2\n")
    _git(calc, "worktree", "add", "-q", "-b", "kodo/run1", str(where["ws"] / "run1"))
    (where["repos"] / "checkout" / ".kodo").mkdir(parents=True)
    (where["repos"] / "checkout" / ".kodo" / "tokens.json").write_text('{"token": "kodo_t"}')
    (where["kodo"] / "up.json").write_text(f'{{"database_url": "{SECRET_URL}"}}')
    (where["state"] / "daemon.json").write_text(f'{{"password": "{PASSWORD}"}}')
    (where["state"] / "home").mkdir()
    (where["state"] / "opencode.global.json").write_text("{}")
    where["home"] = where["state"] / "home"
    where["binary"] = opencode_binary
    return where


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _box(where: dict[str, Path]) -> sandbox.DaemonSandbox:
    return sandbox.DaemonSandbox(
        bwrap=sandbox.find_bwrap(),
        binary=where["binary"],
        home=where["home"],
        config=where["state"] / "opencode.global.json",
        workspaces=where["ws"],
        hidden=(where["kodo"], where["state"], where["repos"] / "checkout" / ".kodo"),
    )


def _in_sandbox(where: dict[str, Path], script: str) -> subprocess.CompletedProcess[str]:
    env = daemon.daemon_env(
        {**os.environ, "DATABASE_URL": SECRET_URL, "KODO_TOKEN": "kodo_t"},
        home=where["home"],
        config_path=where["state"] / "opencode.global.json",
        password=PASSWORD,
    )
    argv = sandbox.sandboxed(_box(where), ["/bin/sh", "-c", script])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_only_the_workspaces_and_the_daemons_home_take_writes_and_kodos_state_is_unseen(
    layout: dict[str, Path],
) -> None:
    names = {k: str(v) for k, v in layout.items()}
    landed = {}
    for name, raw in WRITES.items():
        path = raw.format(**names)
        _in_sandbox(layout, f"echo planted > {path}")
        landed[name] = Path(path).exists()
    read = {}
    for name, raw in READS.items():
        done = _in_sandbox(layout, f"cat {raw.format(**names)}")
        read[name] = done.returncode == 0 and done.stdout != ""
    assert landed == {
        "workspace": True,
        "home": True,
        "repo": False,
        "state-dir": False,
        "kodo-state": False,
        "host-tmp": False,
        "the-roots-tmpfs": False,
    }
    assert read == {
        "worktree": True,
        "repo": False,
        "repo-uncommitted": False,
        "repo-git-config": False,
        "worktree-git-record": False,
        "daemon-password": False,
        "kodo-up-json": False,
        "tokens-in-a-checkout": False,
        "etc-shadow": False,
    }


def test_the_root_is_read_only_inside_and_the_source_repositories_are_not_there(
    layout: dict[str, Path],
) -> None:
    """Outside the private /tmp, a write the host would not see is refused outright."""
    for target in ("/planted.txt", "/usr/planted.txt"):
        done = _in_sandbox(layout, f"echo planted > {target}")
        assert done.returncode != 0, target
        assert "Read-only file system" in done.stderr, done.stderr
    repos = _in_sandbox(layout, f"ls {layout['repos']}")
    assert repos.returncode != 0
    assert "No such file or directory" in repos.stderr, repos.stderr


def test_git_in_a_worktree_finds_no_repository_so_no_branch_or_remote_is_readable(
    layout: dict[str, Path],
) -> None:
    """The worktree's ``.git`` file names a git dir outside the view: git (what the
    daemon runs to find a project) sees no repository, so no other branch, no remote."""
    run1 = layout["ws"] / "run1"
    done = _in_sandbox(layout, f"cd {run1} && git config --get remote.origin.url; git branch -a")
    assert "ghp_hunter2" not in done.stdout + done.stderr
    assert "kodo/run1" not in done.stdout
    assert "not a git repository" in done.stderr, done.stderr


def test_no_secret_is_in_the_environment_no_capability_is_held_no_host_process_is_seen(
    layout: dict[str, Path],
) -> None:
    done = _in_sandbox(layout, "env; grep CapEff /proc/self/status; ls /proc | grep -c '^[0-9]'")
    assert done.returncode == 0, done.stderr
    assert SECRET_URL not in done.stdout
    assert "DATABASE_URL" not in done.stdout
    assert "kodo_t" not in done.stdout
    assert "CapEff:\t0000000000000000" in done.stdout
    assert int(done.stdout.strip().splitlines()[-1]) <= 4, "its own PID namespace"


def test_a_workspaces_folder_holding_kodos_state_is_refused_naming_the_rule(
    layout: dict[str, Path],
) -> None:
    box = _box(layout)
    unsafe = sandbox.DaemonSandbox(**{**box.__dict__, "workspaces": layout["kodo"].parent})
    with pytest.raises(sandbox.SandboxRefused, match=sandbox.RULE):
        sandbox.sandboxed(unsafe, ["/bin/true"])


def test_the_conformance_daemon_runs_sandboxed(real_daemon: DaemonState) -> None:
    assert real_daemon.sandboxed


def test_oc_up_without_bubblewrap_fails_closed_naming_the_rule_and_the_fix(
    opencode_binary: Path, tmp_path: Path
) -> None:
    kodo = str(Path(sys.executable).parent / "kodo")
    env = {
        **os.environ,
        "KODO_OC_STATE_DIR": str(tmp_path / "state"),
        "KODO_WORKSPACE_DIR": str(tmp_path / "ws"),
        "PATH": str(Path(sys.executable).parent),  # no bwrap there
    }
    done = subprocess.run(
        [kodo, "oc", "up", "--scripted-llm", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert sandbox.RULE in done.stderr
    assert "apt-get install bubblewrap" in done.stderr
    assert "--no-sandbox" in done.stderr
    assert daemon.read_state(tmp_path / "state") is None or not daemon.stop(tmp_path / "state")


def test_oc_serve_becomes_the_sandboxed_daemon_in_the_foreground(
    opencode_binary: Path, scripted_llm: str, tmp_path: Path
) -> None:
    """What the compose profile runs: the process is bubblewrap (exec'd, not a child of a
    supervisor), serving the daemon with the password from the environment only."""
    kodo = str(Path(sys.executable).parent / "kodo")
    port = free_port()
    env = {
        **os.environ,
        "KODO_OC_STATE_DIR": str(tmp_path / "state"),
        "KODO_WORKSPACE_DIR": str(tmp_path / "ws"),
        "OC_PASSWORD": PASSWORD,
    }
    argv = [kodo, "oc", "serve", "--llm-url", scripted_llm, "--port", str(port)]
    served = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_until(
            lambda: _healthy(f"http://127.0.0.1:{port}"),
            60,
            "kodo oc serve to answer",
            detail=lambda: f"exit {served.poll()}",
        )
        exe = Path(f"/proc/{served.pid}/exe").resolve()
        assert exe.name == "bwrap", exe
        assert PASSWORD not in Path(f"/proc/{served.pid}/cmdline").read_bytes().decode()
        assert (tmp_path / "ws").is_dir(), "the one writable folder is made"
    finally:
        outcome = stop(served.pid, grace_s=10.0)  # the whole group: bwrap's init and all
        served.communicate(timeout=30)
    assert outcome in ("stopped", "killed after grace"), outcome
    assert daemon.read_state(tmp_path / "state") is None, "serve records nothing"


def _healthy(url: str) -> bool:
    try:
        daemon.probe(url, password=PASSWORD)
    except (OpenCodeError, daemon.DaemonError):
        return False
    return True
