"""`kodo up` says what it started, with what model and what to type next, and a second
`kodo up` on a running stack starts nothing."""

from __future__ import annotations

import os
import subprocess

import pytest

from services.cli import upstate
from tests.integration.cli.conftest import KODO, Kodo

pytestmark = pytest.mark.integration


def test_up_prints_the_model_and_the_next_steps_with_an_approvers_token(kodo: Kodo) -> None:
    said = kodo.up_output

    assert "model:    " in said
    assert "next:" in said
    assert f"kodo intent submit --repo {kodo.repo_root}/REPO" in said
    assert "kodo run approve RUN_ID --token TOKEN" in said
    assert "WARNING: no repository root" not in said


def test_a_second_up_on_a_running_stack_starts_nothing_and_says_so(kodo: Kodo) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OC_BASE_URL"}
    env.update({k: v for k, v in kodo.env.items() if v is not None})
    before = upstate.load(kodo.home)

    again = subprocess.run(
        [str(KODO), "up", "--home", str(kodo.home), "--api-port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert again.returncode == 0, again.stdout + again.stderr
    assert f"kodo is already up (API {kodo.state.api_url}): nothing started" in again.stdout
    assert upstate.load(kodo.home) == before, "the state file is left as it was"
