"""Red-team attacks on the policy read at submit: a repository shaped so the policy file
is not where kodo looks, or so large that reading it is the attack. Each must refuse the
submit naming the file and the ref, never fall back to the default policy."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

import pytest

from services.worker.runtime import Runtime
from shared.errors import InvalidPolicy
from shared.service.runs import submit_intent
from tests.integration.worker.conftest import uow
from tests.integration.worker.hostile import commit_all, git_out

pytestmark = pytest.mark.integration

STRICT = '[policy]\nexec_allowlist = ["make"]\nmax_files = 2\n'


def _submit(rt: Runtime, repo: Path) -> None:
    with uow(rt) as work:
        submit_intent(work, repo=repo, goal="Add multiply", base_ref="HEAD", submitted_by="t")


def test_a_kodo_folder_that_is_a_symlink_refuses_the_submit(rt: Runtime, repo: Path) -> None:
    """``.kodo -> config/kodo``: ls-tree finds no ``.kodo/policy.toml`` behind the link,
    and the owner's strict policy must not silently become the default one."""
    (repo / "config" / "kodo").mkdir(parents=True)
    (repo / "config" / "kodo" / "policy.toml").write_text(STRICT)
    (repo / ".kodo").symlink_to("config/kodo")
    commit_all(repo, "policy kept elsewhere, linked")
    with pytest.raises(InvalidPolicy) as refused:
        _submit(rt, repo)
    assert ".kodo is not a directory (120000)" in refused.value.message


def test_a_kodo_folder_that_is_a_submodule_refuses_the_submit(rt: Runtime, repo: Path) -> None:
    head = git_out(repo, "rev-parse", "HEAD")
    git_out(repo, "update-index", "--add", "--cacheinfo", f"160000,{head},.kodo")
    git_out(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "gitlink")
    with pytest.raises(InvalidPolicy) as refused:
        _submit(rt, repo)
    assert ".kodo is not a directory (160000)" in refused.value.message


def test_a_symlinked_policy_file_refuses_the_submit(rt: Runtime, repo: Path) -> None:
    (repo / "strict.toml").write_text(STRICT)
    (repo / ".kodo").mkdir()
    (repo / ".kodo" / "policy.toml").symlink_to("../strict.toml")
    commit_all(repo, "policy as a link")
    with pytest.raises(InvalidPolicy) as refused:
        _submit(rt, repo)
    assert "is not a regular file (120000)" in refused.value.message


def test_a_huge_policy_blob_is_refused_without_being_read(rt: Runtime, repo: Path) -> None:
    """A 300 MB policy (it compresses to almost nothing) must not be loaded to be refused."""
    (repo / ".kodo").mkdir()
    with (repo / ".kodo" / "policy.toml").open("wb") as handle:
        handle.write(b"[policy]\n")
        handle.truncate(300 << 20)
    commit_all(repo, "a huge policy")
    subprocess.run(["git", "gc", "-q"], cwd=repo, check=False, capture_output=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InvalidPolicy) as refused:
        _submit(rt, repo)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert "larger than" in refused.value.message
    assert grown_mb < 100, f"refusing the policy grew the submitter's memory by {grown_mb} MB"
