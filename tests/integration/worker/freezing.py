"""A worker process frozen mid-call (SIGSTOP, a paused VM, a closed laptop), staged in
process for the cancel specs: the claimant's step thread stops at a chosen point and its
process's lease renewer renews nothing while it is stopped (what a frozen renewer does),
until the spec thaws it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from sqlalchemy import text

from services.worker.runtime import Runtime
from services.worker.steps import base as step_base
from shared.opencode.exactly_once import ExactlyOnceCalls
from tests.waiting import wait_until


@dataclass
class Freeze:
    """The frozen claimants: ``frozen`` while stopped, ``thaw`` to wake them."""

    frozen: threading.Event = field(default_factory=threading.Event)
    thaw: threading.Event = field(default_factory=threading.Event)
    reached: list[str] = field(default_factory=list)

    def hold(self) -> None:
        self.frozen.set()
        self.reached.append("frozen")
        self.thaw.wait(60)
        self.frozen.clear()

    def wait_reached(self, count: int = 1) -> None:
        wait_until(lambda: len(self.reached) >= count, 30, f"{count} claimant(s) to freeze")


def freeze_claimants(
    rt: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    *,
    after: Literal["recording the session", "the last read of the row"],
) -> Freeze:
    """Stop every claimant of ``rt`` just after ``mark_started`` recorded its session, or
    just after its last read of the row before a blocking send (``_still_claimed``)."""
    freeze = Freeze()
    real_beat = step_base.LeaseKeeper.beat

    def beat(self: step_base.LeaseKeeper) -> bool:
        return True if freeze.frozen.is_set() else real_beat(self)

    monkeypatch.setattr(step_base.LeaseKeeper, "beat", beat)
    if after == "recording the session":
        ledger = rt.oc.ledger
        real_mark_started = ledger.mark_started

        def mark_started_then_freeze(*args: Any, **kwargs: Any) -> Any:
            result = real_mark_started(*args, **kwargs)
            freeze.hold()
            return result

        ledger.mark_started = mark_started_then_freeze  # type: ignore[method-assign]
    else:
        real_read = ExactlyOnceCalls._still_claimed

        def read_then_freeze(self: ExactlyOnceCalls, *args: Any) -> None:
            real_read(self, *args)
            freeze.hold()

        monkeypatch.setattr(ExactlyOnceCalls, "_still_claimed", read_then_freeze)
    return freeze


def call_directory(rt: Runtime, run_id: str, step_id: str = "ApplyPatchST") -> str:
    """The directory the run's call of ``step_id`` was sent with (its session's)."""
    with rt.sessions() as s:
        return str(
            s.execute(
                text(
                    "SELECT request->>'directory' FROM app.opencode_calls"
                    " WHERE run_id = :r AND step_id = :s"
                ),
                {"r": run_id, "s": step_id},
            ).scalar_one()
        )
