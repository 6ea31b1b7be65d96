"""A local delivery target's config runs no program, a partial clone's included
(red-team helper-111).

HOOKLESS_RECEIVE_PACK turns off the target's hooks, ``core.alternateRefsCommand``, gc
and fsmonitor, but git in the target still fetches lazily: a target whose config names
a promisor remote (``remote.origin.promisor=true``, no other extension needed) and holds
the base commit's commit and tree but not its blobs advertises the base, so the push
sends a thin pack (the README's new blob as a delta against the base's). To resolve it
receive-pack's ``unpack-objects`` (or ``index-pack --fix-thin``) fetches the base blob
from the promisor remote, which runs the target's ``remote.origin.uploadpack`` through
a shell, as the worker, outside any sandbox.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.worker.delivery import deliver
from tests.integration.worker.conftest import RuntimeFactory
from tests.integration.worker.owned_repos import git_in as _git
from tests.integration.worker.owned_repos import succeeded_run as _succeeded

pytestmark = pytest.mark.integration


def _copy_object(source: Path, target: Path, oid: str, kind: str) -> None:
    raw = subprocess.run(
        ["git", "cat-file", kind, oid], cwd=source, capture_output=True, check=True
    ).stdout
    subprocess.run(
        ["git", "hash-object", "-w", "-t", kind, "--stdin"],
        cwd=target,
        input=raw,
        capture_output=True,
        check=True,
    )


def test_a_local_delivery_target_that_fetches_lazily_runs_no_program(
    make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Rule delivery_target (git never runs a repository's code outside the sandbox): the
    target's promisor ``uploadpack`` never runs during kodo's push."""
    ran = tmp_path / "uploadpack-ran"
    readme = "".join(f"line {n}: some text long enough to be worth a delta\n" for n in range(300))
    (repo / "README.md").write_text(readme)
    _git(repo, "add", "README.md")
    _git(repo, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "long readme")
    base = _git(repo, "rev-parse", "HEAD").strip()

    target = repo / "deliveries.git"  # under the roots: the owner's own bare repository
    subprocess.run(["git", "init", "-q", "--bare", str(target)], check=True)
    _copy_object(repo, target, base, "commit")
    _copy_object(repo, target, _git(repo, "rev-parse", "HEAD^{tree}").strip(), "tree")
    (target / "refs" / "heads" / "main").write_text(f"{base}\n")  # its blobs: "promised"
    _git(target, "config", "remote.origin.url", str(tmp_path))
    _git(target, "config", "remote.origin.promisor", "true")
    _git(target, "config", "remote.origin.uploadpack", f"id -un >> {ran}; false")
    _git(repo, "remote", "add", "origin", str(target))

    rt = make_rt(deliver_remote="origin", repo_roots=(repo,))
    run_id = _succeeded(rt, repo)
    deliver(rt, run_id)

    assert not ran.exists(), (
        "the delivery push ran the target repository's remote.origin.uploadpack (a lazy"
        f" fetch of a thin pack's base) as {ran.read_text().strip()!r}, outside any sandbox"
    )
