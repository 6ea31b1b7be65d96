"""A step delivery's lease, as a value: who holds which step of which run (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.run_machine import StepId


@dataclass(frozen=True)
class StepLease:
    """The lease one delivery took when it entered ``step``; ``fence`` orders deliveries."""

    run_id: str
    step: StepId
    fence: int
    lease_s: float


class StepAbandoned(Exception):
    """This delivery must stop: the run was cancelled or another delivery took over."""
