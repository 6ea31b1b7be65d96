"""A step's helper programs (git, rm, chown...) run in a process group of their own.

A worker is stopped by a signal to its process group (``kodo down``, devstack's
keepalive passing one on): SIGTERM starts Celery's warm shutdown, which lets the steps
under way end. A helper in the worker's group got the SIGTERM too and died mid-step,
and the step recorded that exit as its failure: the run failed for good because kodo
was stopped (seen in the bench's teardown: ``GitError: git write-tree:`` with nothing
said, ApplyPatchST and ExecuteST failed). In a group of its own a helper finishes its
short job, bounded by its own timeout, and the step ends as it would have.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any


def run_apart(argv: Sequence[str], **options: Any) -> subprocess.CompletedProcess[bytes]:
    """``subprocess.run(argv, **options)`` with the child leading a process group of its
    own (``setpgid(0, 0)``, which keeps Python's vfork path: no copy of the worker)."""
    return subprocess.run(argv, process_group=0, **options)
