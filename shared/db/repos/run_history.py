"""A run's ended step rounds (``step_rounds``), for the run page's timeline."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import StepRound


def ended_rounds(s: Session, run_id: str) -> list[StepRound]:
    """Every ended round of every step of the run, in the order they began."""
    query = (
        select(StepRound)
        .where(StepRound.run_id == run_id)
        .order_by(StepRound.started_at, StepRound.id)
    )
    return list(s.execute(query).scalars())
