"""A step delivery's lease, as a value: who holds which step of which run (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.run_machine import STEP_STATUS, StepId


@dataclass(frozen=True)
class StepLease:
    """The lease one delivery took when it entered ``step``; ``fence`` orders deliveries."""

    run_id: str
    step: StepId
    fence: int
    lease_s: float


class StepAbandoned(Exception):
    """This delivery must stop: the run was cancelled or another delivery took over."""


def assert_held(lease: StepLease, status: str | None, renewed: bool) -> None:
    """Raise StepAbandoned unless a renewal of ``lease`` held: the run still at the
    step's status (``status`` as the renewal read it; None: the run is gone) and our
    fence still the step's (``renewed``)."""
    if status != STEP_STATUS[lease.step].value:
        raise StepAbandoned(f"run is {status or 'gone'}")
    if not renewed:
        raise StepAbandoned("a newer delivery holds the step")
