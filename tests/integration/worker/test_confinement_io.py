"""Confinement against the real filesystem and real processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from services.worker.steps.execute import run_capped, scrubbed_env

pytestmark = pytest.mark.integration


def test_a_verification_command_is_killed_at_its_timeout(tmp_path: Path) -> None:
    done = run_capped(
        [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"],
        tmp_path,
        timeout_s=1,
        cap=1000,
        env=scrubbed_env(dict(os.environ)),
    )
    assert done.timed_out
    assert done.exit_code is None


def test_a_verification_commands_output_is_capped(tmp_path: Path) -> None:
    done = run_capped(
        [sys.executable, "-c", "print('x' * 100000)"],
        tmp_path,
        timeout_s=10,
        cap=1024,
        env=scrubbed_env(dict(os.environ)),
    )
    assert done.exit_code == 0
    assert len(done.output) == 1024
    assert done.truncated


def test_a_verification_command_sees_no_secret_from_the_worker(tmp_path: Path) -> None:
    leaky = {**os.environ, "OPENAI_API_KEY": "sk-should-not-leak", "OC_PASSWORD": "p"}
    done = run_capped(
        [sys.executable, "-c", "import os; print(sorted(os.environ))"],
        tmp_path,
        timeout_s=10,
        cap=10000,
        env=scrubbed_env(leaky),
    )
    assert b"OPENAI_API_KEY" not in done.output
    assert b"OC_PASSWORD" not in done.output
