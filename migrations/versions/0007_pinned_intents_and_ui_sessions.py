"""Intents pin what they were submitted against; the UI signs in with server-side sessions.

An intent records the commit its ``base_ref`` resolved to, the repository's device and
inode (a repository swapped for a symlink before the run starts is refused), and the
policy read from a trusted ref at submit time (the strictest combination with the one
at ``base_ref``), so a submitter cannot pick an older, weaker ``.kodo/policy.toml``.

``ui_sessions`` holds the web page's sign-ins: the cookie carries a random session id
(stored only as its sha256), never the bearer token; each session has its CSRF token.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("intents", sa.Column("base_commit", sa.String(length=64)), schema="app")
    op.add_column("intents", sa.Column("repo_device", sa.BigInteger()), schema="app")
    op.add_column("intents", sa.Column("repo_inode", sa.BigInteger()), schema="app")
    op.add_column("intents", sa.Column("policy", postgresql.JSONB()), schema="app")
    op.create_table(
        "ui_sessions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("session_sha256", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.BigInteger(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["app.api_tokens.id"],
            name=op.f("fk_ui_sessions_token_id_api_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ui_sessions")),
        sa.UniqueConstraint("session_sha256", name=op.f("uq_ui_sessions_session_sha256")),
        schema="app",
    )


def downgrade() -> None:
    op.drop_table("ui_sessions", schema="app")
    for column in ("policy", "repo_inode", "repo_device", "base_commit"):
        op.drop_column("intents", column, schema="app")
