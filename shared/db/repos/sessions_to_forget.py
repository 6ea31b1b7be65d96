"""Daemon sessions whose delete failed, kept for the reconciler to delete again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import SessionToForget
from shared.domain.storable import storable_text

REASON_CHARS = 500
"""Characters of a failed delete's error kept (the daemon chose them: made storable, a
NUL refused the row's update, and the pass that retried it died on it every time)."""


@dataclass(frozen=True)
class Forgettable:
    """A session to delete again: where, and how often it was tried."""

    id: int
    session_id: str
    daemon: str | None
    directory: str
    attempts: int


class ForgetRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def remember(self, session_id: str, daemon: str | None, directory: str, reason: str) -> None:
        """Keep ``session_id`` to delete later (once: a second failure changes nothing)."""
        self.session.execute(
            insert(SessionToForget)
            .values(
                session_id=session_id,
                daemon=daemon,
                directory=directory,
                reason=storable_text(reason[:REASON_CHARS]),
            )
            .on_conflict_do_nothing(index_elements=["session_id"])
        )

    def due(self, limit: int) -> list[Forgettable]:
        """The sessions whose next try has come by the database's clock (the one that
        wrote ``next_at``), oldest try first."""
        rows = self.session.execute(
            select(
                SessionToForget.id,
                SessionToForget.session_id,
                SessionToForget.daemon,
                SessionToForget.directory,
                SessionToForget.attempts,
            )
            .where(SessionToForget.next_at <= func.statement_timestamp())
            .order_by(SessionToForget.next_at, SessionToForget.id)
            .limit(limit)
        ).all()
        return [Forgettable(*row) for row in rows]

    def forgotten(self, row_id: int) -> None:
        """The daemon deleted it, or no longer has it."""
        self.session.execute(delete(SessionToForget).where(SessionToForget.id == row_id))

    def failed_again(self, row_id: int, error: str, pause: timedelta) -> None:
        """Tried again and failed: next try ``pause`` from now, by the database's clock."""
        self.session.execute(
            update(SessionToForget)
            .where(SessionToForget.id == row_id)
            .values(
                attempts=SessionToForget.attempts + 1,
                last_error=storable_text(error[:REASON_CHARS]),
                next_at=func.statement_timestamp() + pause,
            )
        )


def retry_pause(attempts: int, *, first_s: float = 30.0, most_s: float = 3600.0) -> timedelta:
    """How long after its ``attempts``-th failed retry a delete is tried again: doubling
    from ``first_s``, at most ``most_s`` (a daemon away for days is asked hourly)."""
    return timedelta(seconds=min(most_s, first_s * 2 ** min(attempts, 20)))
