"""A delivery push never runs a hook of a repository on this machine, whatever order the
source repository's config lists its push URLs in, and never writes outside
KODO_REPO_ROOTS (red-team helper-104; both failed before rule delivery_target).

kodo pushes a succeeded run's branch to ``KODO_DELIVER_REMOTE`` (a remote *name*; its
URLs come from the source repository's own ``.git/config``). git runs a local remote's
``receive-pack`` itself, as the worker, with none of kodo's hardening, so kodo passes
``--receive-pack='git -c core.hooksPath=/dev/null receive-pack'``, but only when the
*first* push URL (``git remote get-url --push``) is local. A remote may list several
``pushurl``s and ``git push`` pushes to every one of them: a network URL first (one that
accepts the push: the operator's own forge, once KODO_DELIVER_PROTOCOLS allows https,
ssh or git) and a path second makes git run the second repository's hooks as the worker,
with its environment (DATABASE_URL, tokens): a repository's code run by kodo outside any
sandbox.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from services.worker.delivery import deliver
from tests.integration.worker.conftest import RuntimeFactory
from tests.integration.worker.owned_repos import delivery_error as _delivery_error
from tests.integration.worker.owned_repos import git_in as _git
from tests.integration.worker.owned_repos import succeeded_run as _succeeded

pytestmark = pytest.mark.integration


CLIMB = """p=$$
while [ "$p" -gt 1 ]; do
  if tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep -q '^DATABASE_URL='; then
    echo "process $p, an ancestor of the hook, shows it DATABASE_URL" >> {ran}; break
  fi
  p=$(cut -d' ' -f4 /proc/$p/stat)
done
"""
"""What a hook run as the worker reaches: its ancestors' environment (the worker's own)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_local_push_url_listed_after_a_network_one_runs_none_of_its_hooks(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Rule: no push kodo makes runs a hook of a repository on this machine, for every
    push URL of the remote (or a remote with more than one push URL is refused, naming
    them), not only when the first one is local."""
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(served / "forge.git")], check=True)
    port = _free_port()
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--listen=127.0.0.1",
            f"--port={port}",
            f"--base-path={served}",
            "--export-all",
            "--enable=receive-pack",
            str(served),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "git daemon never listened"
                time.sleep(0.1)

        hooked = tmp_path / "hooked.git"
        subprocess.run(["git", "init", "-q", "--bare", str(hooked)], check=True)
        ran = tmp_path / "hooks-ran"
        for hook in ("pre-receive", "update", "post-receive", "post-update"):
            script = hooked / "hooks" / hook
            script.write_text(f"#!/bin/sh\necho {hook} >> {ran}\n{CLIMB.format(ran=ran)}")
            script.chmod(0o755)
        # The source repository's own config: its forge first, a path on this machine second.
        _git(repo, "remote", "add", "origin", f"git://127.0.0.1:{port}/forge.git")
        _git(repo, "config", "--add", "remote.origin.pushurl", f"git://127.0.0.1:{port}/forge.git")
        _git(repo, "config", "--add", "remote.origin.pushurl", str(hooked))

        rt = make_rt(deliver_remote="origin", deliver_protocols=("file", "git"))
        run_id = _succeeded(rt, repo)
        deliver(rt, run_id)
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)

    assert not ran.exists(), (
        "a delivery push ran a local repository's hooks as the worker:\n" + ran.read_text()
    )
    assert "delivery_target: " in (_delivery_error(rt, run_id) or "")
    assert "has 2 push URLs" in (_delivery_error(rt, run_id) or "")


def test_a_delivery_never_writes_into_a_repository_outside_the_roots(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Rule: a delivery pushes only where the operator allows: a local push URL (a path,
    ``file://``) must lie under KODO_REPO_ROOTS (or be refused, naming it). The remote's
    URL is the source repository's own config, so today any repository kodo's user can
    write (another tenant's, outside every root) receives a ``kodo/<run>`` branch that
    no one there asked for (and runs that repository's ``gc --auto`` after it)."""
    elsewhere = tmp_path / "elsewhere" / "victim.git"  # under no root of the run's
    elsewhere.parent.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(elsewhere)], check=True)
    _git(repo, "remote", "add", "origin", str(elsewhere))

    rt = make_rt(deliver_remote="origin", repo_roots=(repo,))
    run_id = _succeeded(rt, repo)
    deliver(rt, run_id)

    landed = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/heads/"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert landed == [], f"kodo pushed into {elsewhere}, outside KODO_REPO_ROOTS: {landed}"
    assert "is outside KODO_REPO_ROOTS" in (_delivery_error(rt, run_id) or "")
