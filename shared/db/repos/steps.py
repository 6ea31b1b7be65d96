"""Step checkpoints (``step_runs``) and artifacts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, cast, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, defer

from shared.db.models import Artifact, StepRun
from shared.domain.run_machine import StepId
from shared.hashing import sha256_hex

RECONCILER = "reconciler"
"""Lease owner written when the reconciler re-dispatches: the next delivery may take it."""


class StepRunRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def enter(
        self,
        run_id: str,
        step: StepId,
        now: datetime,
        *,
        owner: str,
        lease_s: float,
        app_version: str,
    ) -> StepRun | None:
        """Take the step's lease for this delivery, with a new fencing token.

        Returns None while another delivery holds a live lease (only a lease left by
        the reconciler may be taken early): two deliveries never run a step at once.
        """
        expires = now + timedelta(seconds=lease_s)
        row = self.session.scalars(
            insert(StepRun)
            .values(
                run_id=run_id,
                step_id=step.value,
                status="running",
                started_at=now,
                fence=1,
                lease_owner=owner,
                lease_expires_at=expires,
                app_version=app_version,
            )
            .on_conflict_do_update(
                index_elements=[StepRun.run_id, StepRun.step_id],
                set_={
                    "deliveries": StepRun.deliveries + 1,
                    "fence": StepRun.fence + 1,
                    "lease_owner": owner,
                    "lease_expires_at": expires,
                    "app_version": app_version,
                },
                where=(StepRun.status == "running")
                & (
                    (StepRun.lease_expires_at.is_(None))
                    | (StepRun.lease_expires_at < now)
                    | (StepRun.lease_owner == RECONCILER)
                ),
            )
            .returning(StepRun)
            .execution_options(populate_existing=True)
        )
        return row.one_or_none()

    def renew(self, run_id: str, step: StepId, fence: int, now: datetime, lease_s: float) -> bool:
        """Extend our lease; False if a newer delivery fenced us off."""
        renewed = self.session.execute(
            update(StepRun)
            .where(
                StepRun.run_id == run_id,
                StepRun.step_id == step.value,
                StepRun.fence == fence,
                StepRun.status == "running",
            )
            .values(lease_expires_at=now + timedelta(seconds=lease_s))
            .returning(StepRun.id)
        ).scalar_one_or_none()
        return renewed is not None

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
        fence: int,
        output: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """Record the outcome iff our fencing token is still current (else False).

        One statement: the duration is computed from the stored start in SQL.
        """
        elapsed_ms = func.floor(func.extract("epoch", now - StepRun.started_at) * 1000)
        done = self.session.execute(
            update(StepRun)
            .where(
                StepRun.run_id == run_id,
                StepRun.step_id == step.value,
                StepRun.fence == fence,
                StepRun.status == "running",
            )
            .values(
                status=status,
                output=output,
                error=error,
                finished_at=now,
                duration_ms=cast(elapsed_ms, Integer),
                lease_expires_at=None,
            )
            .returning(StepRun.id)
        ).scalar_one_or_none()
        return done is not None

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
    ) -> str:
        """Store an artifact once (a redelivered step keeps the first); return its sha256."""
        digest = sha256_hex(content)
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
                sha256=digest,
            )
            .on_conflict_do_nothing(
                index_elements=[Artifact.run_id, Artifact.step_id, Artifact.name]
            )
        )
        return digest

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
