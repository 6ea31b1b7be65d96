"""Asking an agent until it gives a usable answer, one ledger row per attempt.

Each attempt has its own op_key, so a redelivered step replays recorded attempts
from the ledger (no new calls) and continues where the dead worker stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from services.worker.steps.base import StepContext, StepOutcome
from shared.domain.run_machine import StepId
from shared.opencode.calls import CallFailed, StructuredCall, StructuredResult, bounded_error

BACKOFF_KINDS = frozenset({"transient", "timeout", "unknown"})
"""Failures of the provider, not of the answer: wait before the next attempt. A
contract failure is retried at once, with the reasons quoted in the next prompt."""

LAST_ERROR_CHARS = 300
"""How much of the last provider failure the run's error quotes (the diagnostic has all)."""

REFUSED = "refused: "
"""Marks a recorded verdict that failed the step (not retried), as opposed to a rejection."""

PromptFor = Callable[[int, list[str]], str]
"""Build the prompt of attempt N from the reasons earlier answers were rejected."""


class AttemptLoop:
    def __init__(
        self,
        ctx: StepContext,
        step: StepId,
        agent: str,
        schema: dict[str, Any],
        directory: str,
        *,
        record_with_outcome: bool = False,
    ) -> None:
        """``record_with_outcome``: the step only judges an answer before returning its
        outcome (no git, no other IO between), so a collected answer is recorded in the
        outcome's transaction (``StepContext.unrecorded``) rather than in one of its own."""
        self.ctx = ctx
        self.unrecorded = ctx.unrecorded if record_with_outcome else None
        self.step = step
        self.agent = agent
        self.schema = schema
        self.directory = directory
        self.limit = ctx.rt.settings.schema_retries
        self.records: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self.fatal: str | None = None
        self.refused: str | None = None  # an earlier delivery refused an answer: why

    def answers(
        self, prompt_for: PromptFor, *, prepare: Callable[[], None] | None = None
    ) -> Iterator[StructuredResult]:
        """Yield each schema-valid answer; the caller returns on the one it accepts.

        ``prepare`` runs before each call this delivery sends (never before a replay).
        """
        # A round after the first continues the ledger's numbering: new op_keys, and an
        # earlier round's answers are never replayed as this round's.
        base = self.ctx.attempt_base
        for attempt in range(1, self.limit + 1):
            call = StructuredCall(
                run_id=self.ctx.run_id,
                step_id=self.step.value,
                attempt=base + attempt,
                agent=self.agent,
                prompt=prompt_for(attempt, list(self.rejected)),
                schema=self.schema,
                directory=self.directory,
            )
            try:
                # The claim checks the lease in its own transaction: a run cancelled
                # meanwhile stops here (StepAbandoned) before anything is paid for.
                result = self.ctx.rt.oc.prompt_structured(
                    call,
                    lease=self.ctx.lease,
                    prepare=prepare,
                    seen=self.ctx.ledger,
                    unrecorded=self.unrecorded,
                )
            except CallFailed as exc:
                self.records.append(
                    {
                        "attempt": base + attempt,
                        "op_key": exc.op_key,
                        "status": exc.status,
                        "error_name": exc.error_name,
                        "kind": exc.kind,
                        "error": exc.error,
                    }
                )
                self.rejected.append(exc.error)
                if exc.kind == "refused":
                    self.fatal = f"confinement: the agent's turn was refused: {exc.error}"
                    return
                if not exc.retryable:
                    self.fatal = f"configuration error, not retried: {exc.error}"
                    return
                if exc.kind in BACKOFF_KINDS and not exc.replayed and attempt < self.limit:
                    self.ctx.rt.clock.sleep(self._backoff(attempt))
                continue
            self.records.append(
                {
                    "attempt": base + attempt,
                    "op_key": result.op_key,
                    "status": "succeeded",
                    "cache": result.cache,
                }
            )
            if result.rejected is not None:  # an earlier delivery judged it: same verdict
                if result.rejected.startswith(REFUSED):
                    self.records[-1].update(status="refused", error=result.rejected)
                    self.refused = result.rejected.removeprefix(REFUSED)
                    return
                self.records[-1].update(status="rejected", error=result.rejected)
                self.rejected.append(result.rejected)
                continue
            yield result

    def _backoff(self, attempt: int) -> float:
        """Exponential, capped: a daemon that restarts gets time to come back."""
        return float(min(self.ctx.rt.settings.retry_backoff_s * 2 ** (attempt - 1), 30.0))

    def _exhausted(self, what: str) -> str:
        """Say whether the provider, not the answers, used up the budget (e.g. a daemon
        answering HTTP 500 to every attempt), quoting the last failure."""
        said = f"no {what} after {self.limit} attempts"
        if self.records and all(r.get("kind") in BACKOFF_KINDS for r in self.records):
            last = bounded_error(str(self.records[-1]["error"]), LAST_ERROR_CHARS)
            return f"{said}: the provider failed every attempt (last: {last})"
        if self.records and self.records[-1].get("status") == "rejected":
            # what the last answer was refused for names its rule (``plan_base: ...``)
            last = bounded_error(str(self.records[-1]["error"]), LAST_ERROR_CHARS)
            return f"{said}: the last was rejected ({last})"
        return said

    def reject(self, reason: str) -> None:
        """The last answer was valid JSON but unusable (e.g. an edit that changed nothing);
        the verdict is recorded on its ledger row, so a replay reaches the same one."""
        reason = bounded_error(reason)
        self.records[-1].update(status="rejected", error=reason)
        self.rejected.append(reason)
        self._verdict(reason)

    def refuse(self, reason: str) -> None:
        """The last answer broke a rule: the step fails closed on it, now and on replay."""
        self.records[-1].update(status="refused")
        self._verdict(bounded_error(REFUSED + reason))

    def _verdict(self, reason: str) -> None:
        """Record the verdict on the last answer's row (the answer first, if it waits)."""
        if self.unrecorded is not None:
            self.ctx.rt.oc.flush(self.unrecorded)
        self.ctx.rt.oc.reject(str(self.records[-1]["op_key"]), reason)

    def failure(self, what: str, **diagnostic: Any) -> StepOutcome:
        error = self.refused or self.fatal or self._exhausted(what)
        rule = {"rule": "confinement"} if error.startswith("confinement:") else {}
        return StepOutcome.failed(
            error, {"step": self.step.value, **rule, "attempts": self.records, **diagnostic}
        )
