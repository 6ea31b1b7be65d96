"""The messages a command sends after its transaction commits, and the port that sends them.

Messages name what should happen (run a step, abort a run's open calls), not how it
travels: the Celery adapter (``shared.queue.CelerySender``) maps them to task names,
and tests use :class:`InMemorySender`. The service layer imports no task queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from shared.domain.run_machine import StepId


@dataclass(frozen=True)
class RunStep:
    """Deliver ``step`` of ``run_id`` to a worker. ``parent``: the task that caused it,
    where the sender is no task itself (a wake-up names the task that sent the call);
    transport metadata for Flower's tree, not part of what the message asks."""

    step: StepId
    run_id: str
    parent: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AbortCalls:
    """Ask a worker to abort the provider calls a cancelled run still has open."""

    run_id: str


@dataclass(frozen=True)
class Deliver:
    """Ask a worker to push a succeeded run's branch to its delivery remote."""

    run_id: str


Message = RunStep | AbortCalls | Deliver


class Sender(Protocol):
    """Enqueues one message; called only after the transaction that chose it commits."""

    def send(self, message: Message) -> None: ...


@dataclass
class InMemorySender:
    """Keeps what it is given, in order: for tests and for callers that only record."""

    sent: list[Message] = field(default_factory=list)

    def send(self, message: Message) -> None:
        self.sent.append(message)
