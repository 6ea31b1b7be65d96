"""The capture around a command (services/worker/sandbox/capture.py) on real processes:
a command that closes its output and runs on is still watched. Under bubblewrap the
sandbox holds the output open until every process is gone; unsandboxed
(``KODO_SANDBOX=off``) the output's end said nothing of the command's."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from services.worker.sandbox.capture import stream_capped
from shared.domain.ran_tests import TAIL_BYTES

pytestmark = pytest.mark.integration

CLOSES_ITS_OUTPUT = (
    "import os, time\nprint('up', flush=True)\nos.closerange(0, 3)\ntime.sleep(60)\n"
)


class Cancelled(Exception):
    pass


def test_the_lease_is_still_checked_after_the_command_closes_its_output(tmp_path: Path) -> None:
    began = time.monotonic()
    checks: list[float] = []

    def lease_check() -> None:
        checks.append(time.monotonic() - began)
        if len(checks) == 4:
            raise Cancelled("the run was cancelled")

    with pytest.raises(Cancelled):
        stream_capped(
            [sys.executable, "-c", CLOSES_ITS_OUTPUT],
            env={},
            cwd=tmp_path,
            timeout_s=30,
            cap=4096,
            on_poll=lease_check,
            poll_s=0.25,
        )
    assert time.monotonic() - began < 5, "stopped at the fourth check, not at the timeout"


def test_the_timeout_still_ends_it_as_a_timeout_not_a_crash(tmp_path: Path) -> None:
    began = time.monotonic()
    done = stream_capped(
        [sys.executable, "-c", CLOSES_ITS_OUTPUT], env={}, cwd=tmp_path, timeout_s=1.5, cap=4096
    )
    assert done.timed_out
    assert done.exit_code is None
    assert done.head == b"up\n"
    assert time.monotonic() - began < 5


def test_the_head_and_the_last_bytes_are_kept_and_the_middle_counted(tmp_path: Path) -> None:
    """The page shows the head; a test runner's summary is in the last bytes, kept too
    (``TAIL_BYTES``), however long the middle ran."""
    writes = "import sys\nsys.stdout.write('HEAD' + 'x' * 300000 + 'Ran 0 tests in 0.000s\\n')\n"
    done = stream_capped(
        [sys.executable, "-c", writes], env={}, cwd=tmp_path, timeout_s=30, cap=1000
    )
    assert done.exit_code == 0
    assert done.head == b"HEAD" + b"x" * 996
    assert done.total_bytes == 4 + 300000 + 22
    assert len(done.tail) == TAIL_BYTES
    assert done.tail == b"x" * (TAIL_BYTES - 22) + b"Ran 0 tests in 0.000s\n"
