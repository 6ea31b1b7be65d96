"""A step remembers the Celery task that holds it: ``app.step_runs.task_id``.

The delivery that sends a provider call parks its step and ends; the collector sends the
step again when the call's session ends. That wake-up is sent from outside any task,
so Celery could not name its parent, and Flower drew the call's completion outside the
run's tree. The column is written by every delivery that enters (or resumes) the step,
which is before any call it sends, so the wake-up reads it and names that task as its
parent.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("step_runs", sa.Column("task_id", sa.String(255)), schema="app")


def downgrade() -> None:
    op.drop_column("step_runs", "task_id", schema="app")
