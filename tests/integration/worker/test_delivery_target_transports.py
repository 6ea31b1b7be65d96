"""A local delivery target's config runs no program, whatever key makes it a partial
clone and whatever protocol its own config allows (red-team helper-114).

HOOKLESS_RECEIVE_PACK pins ``protocol.allow=never`` and ``protocol.file.allow=never``,
but git reads ``protocol.<name>.allow`` before ``protocol.allow``: the target's own
``protocol.ext.allow=always`` lets an ``ext::`` URL run its command. And git makes a
remote a promisor for ``remote.<name>.partialCloneFilter`` alone (promisor-remote.c),
a key neither name check knows. Only ``GIT_NO_LAZY_FETCH`` (git 2.39.4+/2.44+) stands in
the way, which the commit calls a courtesy "for gits that know it": the spec takes it
away to stand for a git that does not, and the protocol pins must then hold alone.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.worker.delivery import deliver
from tests.integration.worker.conftest import RuntimeFactory
from tests.integration.worker.owned_repos import git_in as _git
from tests.integration.worker.owned_repos import succeeded_run as _succeeded
from tests.integration.worker.test_delivery_target_lazy_fetch import _copy_object

pytestmark = pytest.mark.integration


def test_a_target_s_ext_promisor_runs_no_program(
    monkeypatch: pytest.MonkeyPatch, make_rt: RuntimeFactory, repo: Path, tmp_path: Path
) -> None:
    """Rule delivery_target (git never runs a repository's code outside the sandbox)."""
    import shared.gitcmd

    monkeypatch.delitem(shared.gitcmd.ENV, "GIT_NO_LAZY_FETCH")
    ran = tmp_path / "ext-ran"
    readme = "".join(f"line {n}: some text long enough to be worth a delta\n" for n in range(300))
    (repo / "README.md").write_text(readme)
    _git(repo, "add", "README.md")
    _git(repo, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "long readme")
    base = _git(repo, "rev-parse", "HEAD").strip()

    target = repo / "deliveries.git"
    subprocess.run(["git", "init", "-q", "--bare", str(target)], check=True)
    _copy_object(repo, target, base, "commit")
    _copy_object(repo, target, _git(repo, "rev-parse", "HEAD^{tree}").strip(), "tree")
    (target / "refs" / "heads" / "main").write_text(f"{base}\n")
    _git(target, "config", "remote.origin.url", f"ext::sh -c id% -un% >>% {ran}")
    _git(target, "config", "remote.origin.partialCloneFilter", "blob:none")
    _git(target, "config", "protocol.ext.allow", "always")
    _git(repo, "remote", "add", "origin", str(target))

    rt = make_rt(deliver_remote="origin", repo_roots=(repo,))
    run_id = _succeeded(rt, repo)
    deliver(rt, run_id)

    assert not ran.exists(), (
        "the delivery push ran the target's ext:: promisor command (protocol.ext.allow in"
        f" its own config) as {ran.read_text().strip()!r}, outside any sandbox"
    )
