"""``plan.json`` is the exact bytes its digest is taken over.

CompileST used to store the plan pretty-printed while ``runs.plan_sha256`` was the
sha256 of its canonical JSON, so ``sha256sum plan.json`` never matched the digest an
approver approved. New plans are stored canonical; this rewrites the plans already
stored, but only where the canonical form hashes to the run's digest (a plan that does
not is left exactly as it was: nothing here invents a digest).

The canonical form is copied here, not imported: a migration stays what it was when
written (it is ``shared.hashing.canonical_bytes``).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_STALE_PLANS = sa.text(
    "SELECT a.id, a.content, r.plan_sha256 FROM app.artifacts a"
    " JOIN app.runs r ON r.id = a.run_id"
    " WHERE a.step_id = 'CompileST' AND a.name = 'plan.json' AND a.kind = 'plan_card'"
    " AND r.plan_sha256 IS NOT NULL AND a.sha256 <> r.plan_sha256"
)
_REWRITE = sa.text(
    "UPDATE app.artifacts SET content = :content, size = :size, sha256 = :sha256 WHERE id = :id"
)


def _canonical_bytes(value: Any) -> bytes:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def upgrade() -> None:
    conn = op.get_bind()
    for row in conn.execute(_STALE_PLANS).all():
        try:
            body = _canonical_bytes(json.loads(bytes(row.content)))
        except ValueError:  # not JSON (or not UTF-8): not a plan anyone could approve
            continue
        digest = hashlib.sha256(body).hexdigest()
        if digest == row.plan_sha256:
            conn.execute(
                _REWRITE, {"id": row.id, "content": body, "size": len(body), "sha256": digest}
            )


def downgrade() -> None:
    """Nothing to undo: the canonical bytes are JSON that older code reads as before."""
