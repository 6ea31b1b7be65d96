"""Runs and intents, newest first, a keyset page at a time (indexes of migration 0018)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, SQLColumnExpression, and_, select, true, tuple_
from sqlalchemy.orm import Session

from shared.db.models import Intent, Run
from shared.domain.paging import Page, Position, page_of


@dataclass(frozen=True)
class RunFilter:
    """What a run list keeps; None keeps every value."""

    status: str | None = None
    submitter: str | None = None
    repo: str | None = None


def _after(
    created_at: SQLColumnExpression[datetime],
    ident: SQLColumnExpression[str],
    position: Position | None,
) -> ColumnElement[bool]:
    """Rows strictly older than ``position`` in ``(created_at, id)`` order."""
    if position is None:
        return and_(true())
    return tuple_(created_at, ident) < tuple_(position.created_at, position.id)


def run_page(
    s: Session, filters: RunFilter, *, limit: int, after: Position | None
) -> Page[tuple[Run, Intent]]:
    """One page of runs with their intents (one query; an index scan on the keyset)."""
    query: Select[Run, Intent] = (
        select(Run, Intent)
        .join(Intent, Intent.id == Run.intent_id)
        .where(_after(Run.created_at, Run.id, after))
        .order_by(Run.created_at.desc(), Run.id.desc())
        .limit(limit + 1)
    )
    if filters.status is not None:
        query = query.where(Run.status == filters.status)
    if filters.submitter is not None:
        query = query.where(Intent.submitted_by == filters.submitter)
    if filters.repo is not None:
        query = query.where(Intent.repo_path == filters.repo)
    rows = [(run, intent) for run, intent in s.execute(query).all()]
    return page_of(rows, limit, lambda row: Position(row[0].created_at, row[0].id))


def intent_page(
    s: Session, *, submitter: str | None, repo: str | None, limit: int, after: Position | None
) -> Page[tuple[Intent, Run | None]]:
    """One page of intents with their run, if it was started."""
    query: Select[Intent, Run] = (
        select(Intent, Run)
        .outerjoin(Run, Run.intent_id == Intent.id)
        .where(_after(Intent.created_at, Intent.id, after))
        .order_by(Intent.created_at.desc(), Intent.id.desc())
        .limit(limit + 1)
    )
    if submitter is not None:
        query = query.where(Intent.submitted_by == submitter)
    if repo is not None:
        query = query.where(Intent.repo_path == repo)
    rows: list[tuple[Intent, Run | None]] = [(i, r) for i, r in s.execute(query).all()]
    return page_of(rows, limit, lambda row: Position(row[0].created_at, row[0].id))


__all__ = ["RunFilter", "intent_page", "run_page"]
