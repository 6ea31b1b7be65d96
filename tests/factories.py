"""factory_boy factories per aggregate, with traits for the named shapes of a run."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import factory
from sqlalchemy import update
from sqlalchemy.orm import Session

from shared.db.models import Intent, OpenCodeCall, PlanApproval, Run
from shared.domain.run_machine import NextAction, RunStatus
from shared.domain.vocab import CallStatus
from shared.hashing import sha256_hex

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class _Base(factory.alchemy.SQLAlchemyModelFactory):  # type: ignore[misc]
    class Meta:
        abstract = True
        sqlalchemy_session_persistence = "flush"


def bind(session: Session) -> None:
    """Point every factory at ``session`` (the test's own session)."""
    for f in (IntentFactory, RunFactory, PlanApprovalFactory, OpenCodeCallFactory):
        f._meta.sqlalchemy_session = session


class IntentFactory(_Base):
    class Meta:
        model = Intent

    id = factory.LazyFunction(lambda: str(uuid.uuid4()))
    repo_path = "/srv/repos/sample"
    goal = factory.Sequence(lambda n: f"Add a docstring to calc.py ({n})")
    base_ref = "HEAD"
    submitted_by = "tests"
    request_sha256 = factory.LazyAttribute(lambda o: sha256_hex(o.goal))


class RunFactory(_Base):
    class Meta:
        model = Run

    intent = factory.SubFactory(IntentFactory)
    id = factory.LazyAttribute(lambda o: o.intent.id)
    intent_id = factory.LazyAttribute(lambda o: o.intent.id)
    status = RunStatus.COMPILING.value
    last_step = "CompileST"
    next_action = NextAction.RUN_COMPILE.value
    app_version = "test"
    plan_sha256 = None

    class Params:
        intent = factory.SubFactory(IntentFactory)
        waiting_input = factory.Trait(
            status=RunStatus.WAITING_INPUT.value,
            next_action=NextAction.AWAIT_APPROVAL.value,
            plan_sha256=sha256_hex("plan"),
        )
        queued = factory.Trait(
            status=RunStatus.QUEUED.value, last_step=None, next_action=NextAction.RUN_COMPILE.value
        )
        waiting_upgrade = factory.Trait(
            status=RunStatus.WAITING_UPGRADE.value,
            next_action=NextAction.AWAIT_UPGRADE.value,
            contract_version="0123456789abcdef",
            error="step_contract: the run was started under step contract 0123456789abcdef",
        )
        succeeded = factory.Trait(
            status=RunStatus.SUCCEEDED.value, last_step="ExecuteST", next_action="none"
        )

    @classmethod
    def _create(cls, model_class, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.pop("intent", None)
        return super()._create(model_class, *args, **kwargs)


class PlanApprovalFactory(_Base):
    class Meta:
        model = PlanApproval

    run = factory.SubFactory(RunFactory, waiting_input=True)
    run_id = factory.LazyAttribute(lambda o: o.run.id)
    plan_sha256 = factory.LazyAttribute(lambda o: o.run.plan_sha256)
    decision = "approved"
    approver = "alice"
    decided_at = NOW
    approved_at = NOW

    @classmethod
    def _create(cls, model_class, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.pop("run", None)
        return super()._create(model_class, *args, **kwargs)


_FINAL_CALL = {s.value for s in CallStatus} - {"claimed", "sent", "unknown"}


class OpenCodeCallFactory(_Base):
    class Meta:
        model = OpenCodeCall

    run = factory.SubFactory(RunFactory)
    run_id = factory.LazyAttribute(lambda o: o.run.id)
    op_key = factory.LazyFunction(lambda: sha256_hex(str(uuid.uuid4())))
    step_id = "CompileST"
    attempt = 1
    agent = "plan"
    request = factory.LazyFunction(lambda: {"prompt": "p"})
    status = "succeeded"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.pop("run", None)
        if kwargs.get("status") in _FINAL_CALL and "settled_at" not in kwargs:
            # Inserted final, as if settled then (the trigger fires on a status change
            # only, see settle_call): what app.settle_call spends for its usage.
            usage = kwargs.get("usage") or {}
            cost, tokens = usage.get("cost_usd"), usage.get("total_tokens")
            kwargs["settled_at"] = kwargs.get("finished_at") or datetime.now(UTC)
            kwargs["spent_usd_micro"] = math.ceil(cost * 1_000_000) if cost else 0
            kwargs["spent_tokens"] = tokens if isinstance(tokens, int) else 0
        return super()._create(model_class, *args, **kwargs)


def settle_call(
    session: Session, call: OpenCodeCall, *, status: str, usage: dict[str, Any]
) -> None:
    """End a claimed or sent ``call`` as the ledger does: the status change fires
    ``app.settle_call``, which spends it on its run (a row inserted final is never
    settled)."""
    session.execute(
        update(OpenCodeCall).where(OpenCodeCall.id == call.id).values(status=status, usage=usage)
    )
