"""Delivery end to end: a succeeded run's branch reaches the repository's remote (a local
bare repository), pushed by a real worker right after the run succeeds, and GET
/runs/{id} and the run page show the pushed commit."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Api

pytestmark = pytest.mark.e2e


def git_out(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_succeeded_run_is_pushed_to_origin_and_the_sha_shown(api: Api, sample_repo: Path) -> None:
    # a local target lies under KODO_REPO_ROOTS, beside the repository (delivery_target)
    bare = sample_repo.parent / f"{sample_repo.name}-origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    git_out(sample_repo, "remote", "add", "origin", str(bare))
    run_id = api.submit(sample_repo, "Add a note to README.md")
    api.approve(run_id)
    api.wait_for(run_id, {"succeeded"})

    end = time.monotonic() + 30
    run = api.run(run_id)
    while run["deliveredSha"] is None and time.monotonic() < end:
        time.sleep(0.2)
        run = api.run(run_id)

    branch = f"kodo/{run_id}"
    assert run["deliveredSha"] == git_out(sample_repo, "rev-parse", branch)
    assert git_out(bare, "rev-parse", branch) == run["deliveredSha"]
    assert run["deliveryError"] is None
    page = api.http.get(f"/ui/runs/{run_id}")
    assert run["deliveredSha"] in page.text
