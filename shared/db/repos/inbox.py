"""What the approval page lists: runs waiting for a human, oldest first."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import Intent, Run
from shared.domain.run_machine import RunStatus


class InboxRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def waiting_for_approval(self, limit: int = 200) -> list[tuple[Run, Intent]]:
        rows = self.session.execute(
            select(Run, Intent)
            .join(Intent, Intent.id == Run.intent_id)
            .where(Run.status == RunStatus.WAITING_INPUT.value)
            .order_by(Run.updated_at, Run.id)
            .limit(limit)
        )
        return [(run, intent) for run, intent in rows]
