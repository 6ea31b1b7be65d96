"""Step checkpoints (``step_runs``) and artifacts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, defer

from shared.db.models import Artifact, StepRun
from shared.domain.run_machine import StepId
from shared.hashing import sha256_hex


class StepRunRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def enter(self, run_id: str, step: StepId, now: datetime) -> StepRun:
        """Create the checkpoint row, or count one more delivery of the same step."""
        self.session.execute(
            insert(StepRun)
            .values(run_id=run_id, step_id=step.value, status="running", started_at=now)
            .on_conflict_do_update(
                index_elements=[StepRun.run_id, StepRun.step_id],
                set_={"deliveries": StepRun.deliveries + 1},
            )
        )
        row = self.get(run_id, step)
        if row is None:  # pragma: no cover - the row exists after the upsert
            raise LookupError((run_id, step))
        return row

    def get(self, run_id: str, step: StepId) -> StepRun | None:
        return self.session.execute(
            select(StepRun)
            .where(StepRun.run_id == run_id, StepRun.step_id == step.value)
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()

    def finish(
        self,
        run_id: str,
        step: StepId,
        *,
        status: str,
        now: datetime,
        output: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        row = self.get(run_id, step)
        if row is None:
            raise LookupError((run_id, step))
        duration = int((now - row.started_at).total_seconds() * 1000)
        self.session.execute(
            update(StepRun)
            .where(StepRun.id == row.id)
            .values(
                status=status, output=output, error=error, finished_at=now, duration_ms=duration
            )
        )

    def for_run(self, run_id: str) -> list[StepRun]:
        return list(
            self.session.execute(
                select(StepRun).where(StepRun.run_id == run_id).order_by(StepRun.id)
            ).scalars()
        )


class ArtifactRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def put(
        self,
        run_id: str,
        step: StepId,
        *,
        kind: str,
        name: str,
        content: bytes,
        media_type: str,
    ) -> Artifact:
        """Store an artifact once; a redelivered step finds the one it wrote before."""
        self.session.execute(
            insert(Artifact)
            .values(
                run_id=run_id,
                step_id=step.value,
                kind=kind,
                name=name,
                media_type=media_type,
                content=content,
                size=len(content),
                sha256=sha256_hex(content),
            )
            .on_conflict_do_nothing(
                index_elements=[Artifact.run_id, Artifact.step_id, Artifact.name]
            )
        )
        found = self.get(run_id, step, name)
        if found is None:  # pragma: no cover
            raise LookupError((run_id, step, name))
        return found

    def get(self, run_id: str, step: StepId, name: str) -> Artifact | None:
        return self.session.execute(
            select(Artifact).where(
                Artifact.run_id == run_id, Artifact.step_id == step.value, Artifact.name == name
            )
        ).scalar_one_or_none()

    def for_run(self, run_id: str) -> list[Artifact]:
        return list(
            self.session.execute(
                select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.id)
            ).scalars()
        )

    def catalog(self, run_id: str) -> list[Artifact]:
        """A run's artifacts without their content (listings must not load blobs)."""
        return list(
            self.session.execute(
                select(Artifact)
                .where(Artifact.run_id == run_id)
                .order_by(Artifact.id)
                .options(defer(Artifact.content, raiseload=True))
            ).scalars()
        )

    def named(self, run_id: str, name: str) -> list[Artifact]:
        """Every step's artifact called ``name``: a name alone may match several steps."""
        return list(
            self.session.execute(
                select(Artifact)
                .where(Artifact.run_id == run_id, Artifact.name == name)
                .order_by(Artifact.id)
            ).scalars()
        )
