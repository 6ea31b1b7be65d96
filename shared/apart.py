"""A step's helper programs (git, rm, chown...) run in a process group of their own.

A worker is stopped by a signal to its process group (``kodo down``, devstack's
keepalive passing one on): SIGTERM starts Celery's warm shutdown, which lets the steps
under way end. A helper in the worker's group got the SIGTERM too and died mid-step,
and the step recorded that exit as its failure: the run failed for good because kodo
was stopped (seen in the bench's teardown: ``GitError: git write-tree:`` with nothing
said, ApplyPatchST and ExecuteST failed). In a group of its own a helper finishes its
short job, bounded by its own timeout, and the step ends as it would have.

The group is also what a timeout kills: ``subprocess.run`` kills the direct child only,
so what it had started lived on (``git gc``'s ``pack-objects``, a delivery remote's
hook's background job, which also kept the captured pipes open).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Any


def run_apart(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **options: Any,
) -> subprocess.CompletedProcess[bytes]:
    """``subprocess.run(argv, ...)`` with the child leading a process group of its own
    (``setpgid(0, 0)``, which keeps Python's vfork path: no copy of the worker), the
    whole group killed on a timeout (or an interrupt) before it is raised."""
    if capture_output:
        options["stdout"] = options["stderr"] = subprocess.PIPE
    if input is not None:
        options["stdin"] = subprocess.PIPE
    with subprocess.Popen(list(argv), process_group=0, **options) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # not reaped yet: the group is its own
            proc.kill()
            proc.wait()
            raise
        code = proc.poll()
    assert code is not None  # communicate() waited for it
    if check and code:
        raise subprocess.CalledProcessError(code, proc.args, out, err)
    return subprocess.CompletedProcess(proc.args, code, out, err)
