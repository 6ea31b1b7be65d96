"""kodo's worker with a hold at a step's point of choice, for chaos.

Two holds, each switched on by the environment variable naming its marker file: right
before ApplyPatchST stages the agent's edits (``HOLD_MARKER_ENV``, below), and right
before a provider step parks on the call it just sent (``PARK_HOLD_ENV``: the prompt is
at the daemon, the call still ``claimed``, the park not committed).

Run as the Celery app module (``celery -A tests.chaos.faulty_worker:app worker``, see
:meth:`tests.chaos.harness.Chaos.start_worker_held_before_apply`): the app is kodo's
own, unchanged, and the product holds no fault switch. With ``HOLD_MARKER_ENV`` naming a
file, every staging of ApplyPatchST first writes that file (the worktree's path:
the test now knows the step is there) and then waits up to ``HOLD_S`` for the test to
SIGKILL the worker. Without it the module is kodo's worker and nothing more. (Held
there, the agent's call has finished and its edits lie in the worktree, uncommitted:
the redelivery must take them as they lie and commit them once.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.worker import git_ops
from services.worker.celery_app import app
from services.worker.steps import apply_patch, base
from shared.domain.change_check import IndexChange

HOLD_MARKER_ENV = "KODO_CHAOS_HOLD_BEFORE_APPLY"
"""The file a held worker writes when it reaches the staging (unset: no hold)."""

HOLD_S = 60.0
"""Longest hold: past it the apply goes on, so a test that never kills cannot hang."""

Stage = Callable[..., list[IndexChange]]


def held_before(stage: Stage, marker: Path) -> Stage:
    """``stage``, preceded by announcing the worktree in ``marker`` and holding."""

    def held_stage(
        worktree: git_ops.Worktree, *, most: int | None = None, most_bytes: int | None = None
    ) -> list[IndexChange]:
        marker.write_text(str(worktree.path))
        time.sleep(HOLD_S)
        return stage(worktree, most=most, most_bytes=most_bytes)

    return held_stage


_marker = os.environ.get(HOLD_MARKER_ENV)
if _marker:  # for the life of this worker process; raises if ApplyPatchST stops using it
    pytest.MonkeyPatch().setattr(
        apply_patch, "stage_edits", held_before(git_ops.stage_edits, Path(_marker))
    )

PARK_HOLD_ENV = "KODO_CHAOS_HOLD_BEFORE_PARK"
"""The file a held worker writes when a step is about to park on its sent call."""

Park = Callable[..., str]


def held_park(park: Park, marker: Path) -> Park:
    """``park``, preceded by announcing the hold in ``marker`` and holding."""

    def held(*args: object, **kwargs: object) -> str:
        marker.write_text("held")
        time.sleep(HOLD_S)
        return park(*args, **kwargs)

    return held


_park_marker = os.environ.get(PARK_HOLD_ENV)
if _park_marker:
    pytest.MonkeyPatch().setattr(base, "_park", held_park(base._park, Path(_park_marker)))

__all__ = ["app"]
