"""The provider-call ledger (``app.opencode_calls``), keyed by the unique op_key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import OpenCodeCall


class LedgerRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def claim(
        self,
        *,
        op_key: str,
        run_id: str,
        step_id: str,
        attempt: int,
        agent: str,
        request: dict[str, Any],
    ) -> bool:
        """Insert the ``claimed`` row; False if the op_key was claimed before (never call)."""
        won = self.session.execute(
            insert(OpenCodeCall)
            .values(
                op_key=op_key,
                run_id=run_id,
                step_id=step_id,
                attempt=attempt,
                agent=agent,
                request=request,
                status="claimed",
            )
            .on_conflict_do_nothing(index_elements=[OpenCodeCall.op_key])
            .returning(OpenCodeCall.id)
        ).scalar_one_or_none()
        return won is not None

    def get(self, op_key: str) -> OpenCodeCall | None:
        return self.session.execute(
            select(OpenCodeCall)
            .where(OpenCodeCall.op_key == op_key)
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()

    def mark_started(self, op_key: str, session_id: str, now: datetime) -> None:
        """The HTTP call is about to leave: record its session and start time."""
        self.session.execute(
            update(OpenCodeCall)
            .where(OpenCodeCall.op_key == op_key)
            .values(session_id=session_id, started_at=now)
        )

    def finish(
        self,
        op_key: str,
        *,
        status: str,
        now: datetime,
        duration_ms: int | None,
        response: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
        error_name: str | None = None,
        error: str | None = None,
        only_if_claimed: bool = True,
    ) -> bool:
        """Record the outcome; by default only a still-``claimed`` row may be finished."""
        stmt = update(OpenCodeCall).where(OpenCodeCall.op_key == op_key)
        if only_if_claimed:
            stmt = stmt.where(OpenCodeCall.status == "claimed")
        done = self.session.execute(
            stmt.values(
                status=status,
                finished_at=now,
                duration_ms=duration_ms,
                response=response,
                usage=usage,
                error_name=error_name,
                error=error,
            ).returning(OpenCodeCall.id)
        ).scalar_one_or_none()
        return done is not None

    def for_run(self, run_id: str) -> list[OpenCodeCall]:
        return list(
            self.session.execute(
                select(OpenCodeCall).where(OpenCodeCall.run_id == run_id).order_by(OpenCodeCall.id)
            ).scalars()
        )
