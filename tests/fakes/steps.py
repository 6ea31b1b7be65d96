"""A step's context without a database: fake leases, the fake daemon behind the real
call protocol on the in-memory ledger, and a clock that records its sleeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.worker.steps.base import StepContext
from shared.clock import Clock, FixedClock
from shared.config import Settings
from shared.domain.call_record import StepLedger
from shared.domain.run_machine import StepId
from shared.domain.step_lease import StepAbandoned, StepLease
from shared.opencode.cache import LruCache
from shared.opencode.exactly_once import ExactlyOnceCalls
from shared.opencode.messages import ModelRef
from shared.opencode.ports import StructuredCalls
from tests.fakes.agent import FakeAgent
from tests.fakes.ledger import InMemoryLedger


class SleepLog(FixedClock):
    """A fixed clock that moves only when slept on, and remembers each sleep."""

    def __init__(self) -> None:
        super().__init__(datetime(2026, 1, 1, tzinfo=UTC))
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        super().sleep(seconds)


@dataclass
class FakeLeases:
    """Leases that hold until ``lost`` says why they no longer do."""

    lost: str | None = None
    held: int = 0

    def hold(self, lease: StepLease) -> None:
        if self.lost is not None:
            raise StepAbandoned(self.lost)
        self.held += 1

    def renew(self, lease: StepLease) -> bool:
        return self.lost is None


@dataclass
class FakePorts:
    settings: Settings
    clock: Clock
    oc: StructuredCalls


@dataclass
class StepWorld:
    """Everything a step body touches, in memory: inspect it after the step ran."""

    agent: FakeAgent
    ledger: InMemoryLedger = field(default_factory=InMemoryLedger)
    clock: SleepLog = field(default_factory=SleepLog)
    leases: FakeLeases = field(default_factory=FakeLeases)
    settings: Settings = field(default_factory=lambda: Settings(retry_backoff_s=0.5))

    def context(self, step: StepId, repo: Path, **snapshot: Any) -> StepContext:
        calls = ExactlyOnceCalls(
            self.agent,
            self.ledger,
            self.clock,
            model=ModelRef("kodo", "kodo-scripted"),
            timeout_s=5,
            l1=LruCache(),
        )
        fields: dict[str, Any] = {
            "goal": "Add a docstring to calc.py",
            "base_ref": "main",
            "base_commit": None,
            "repo_pin": None,
            "intent_policy": None,
            "plan_sha256": None,
            "approved_at": None,
            "branch": None,
            "worktree_path": None,
            "outputs": {},
            "plan": None,
            "first_delivery": True,
            "round": 1,
            "attempt_base": 0,
            "round_input": None,
            "ledger": StepLedger(),
            "earlier_work_ms": 0,
            **snapshot,
        }
        return StepContext(
            run_id="run-1",
            step=step,
            repo_path=repo,
            lease=StepLease("run-1", step, fence=1, lease_s=60),
            rt=FakePorts(self.settings, self.clock, calls),
            leases=self.leases,
            **fields,
        )
