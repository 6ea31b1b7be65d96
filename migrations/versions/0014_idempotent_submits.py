"""A submit can carry an ``Idempotency-Key``: sending it again never makes a second intent.

``app.intents`` gains ``idempotency_key`` (at most 200 printable ASCII characters, or
NULL), unique per submitter: a client that did not hear the answer to ``POST /intents``
(a timeout, a 503 while the database restarted) sends the same request with the same
key and gets the intent the first one made; the same key with another request is a 409.

Downgrade drops the column and its index (the intents stay).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("intents", sa.Column("idempotency_key", sa.String(200)), schema="app")
    op.create_check_constraint(
        op.f("ck_intents_idempotency_key_printable"),
        "intents",
        "idempotency_key ~ '^[!-~]{1,200}$'",
        schema="app",
    )
    op.create_index(
        "ix_intents_submitter_idempotency_key",
        "intents",
        ["submitted_by", "idempotency_key"],
        unique=True,
        schema="app",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_intents_submitter_idempotency_key", table_name="intents", schema="app")
    op.drop_constraint(
        op.f("ck_intents_idempotency_key_printable"), "intents", schema="app", type_="check"
    )
    op.drop_column("intents", "idempotency_key", schema="app")
