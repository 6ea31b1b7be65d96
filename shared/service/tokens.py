"""Bearer tokens: created once (shown once), stored as sha256, revocable; one role each.

Tokens are credentials, so they come from ``secrets`` (the OS CSPRNG), never from the
seeded RNG that makes runs reproducible.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import String, cast, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db.models import ApiToken, UiSession
from shared.errors import Conflict, InvalidInput, NotFound
from shared.hashing import sha256_hex

PREFIX = "kodo_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


class Role(StrEnum):
    SUBMITTER = "submitter"
    APPROVER = "approver"
    ADMIN = "admin"


class Permission(StrEnum):
    READ = "read"
    SUBMIT = "submit"  # create intents, start runs
    DECIDE = "decide"  # approve, reject, cancel


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.SUBMITTER: frozenset({Permission.READ, Permission.SUBMIT}),
    Role.APPROVER: frozenset({Permission.READ, Permission.DECIDE}),
    Role.ADMIN: frozenset(Permission),
}


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role

    def may(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]


def create_token(s: Session, name: str, role: Role) -> str:
    """Store a new token for ``name``; return the plaintext (the only time it exists)."""
    if not _NAME.match(name):
        raise InvalidInput("a token name is 1-128 of A-Z a-z 0-9 _ . @ -", details={"name": [name]})
    plaintext = PREFIX + secrets.token_urlsafe(32)
    try:
        with s.begin_nested():
            s.add(ApiToken(name=name, role=role.value, token_sha256=sha256_hex(plaintext)))
    except IntegrityError as exc:
        raise Conflict(f"a token named {name!r} exists; revoke it first") from exc
    return plaintext


def revoke_token(s: Session, name: str, *, now: datetime) -> None:
    """End NAME's live token and every web session signed in with it.

    The row keeps its history under ``NAME#revoked-<row id>``, which frees NAME for a
    new token. The suffix is the row's own id, unique by construction (a timestamp
    collided when one name was revoked twice in a second, and the failed rename left
    the token live); a token name cannot contain ``#``, so no live name can clash.
    """
    done = s.execute(
        update(ApiToken)
        .where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
        .values(
            revoked_at=now,
            name=ApiToken.name + "#revoked-" + cast(ApiToken.id, String),
        )
        .returning(ApiToken.id)
    ).scalar_one_or_none()
    if done is None:
        raise NotFound(f"no live token named {name!r}")
    s.execute(
        update(UiSession)
        .where(UiSession.token_id == done, UiSession.ended_at.is_(None))
        .values(ended_at=now)
    )


def list_tokens(s: Session) -> list[ApiToken]:
    return list(s.execute(select(ApiToken).order_by(ApiToken.id)).scalars())


def live_token(s: Session, plaintext: str) -> ApiToken | None:
    """The live token row ``plaintext`` names, or None (unknown, malformed or revoked)."""
    if not plaintext.startswith(PREFIX) or len(plaintext) > 200:
        return None
    return s.execute(
        select(ApiToken).where(
            ApiToken.token_sha256 == sha256_hex(plaintext), ApiToken.revoked_at.is_(None)
        )
    ).scalar_one_or_none()


def principal_of(row: ApiToken) -> Principal:
    return Principal(row.name, Role(row.role))


def authenticate(s: Session, plaintext: str) -> Principal | None:
    """The live token's principal, or None (unknown, malformed or revoked)."""
    row = live_token(s, plaintext)
    return None if row is None else principal_of(row)


def fresh_token(s: Session, name: str, role: Role, *, now: datetime) -> str:
    """Revoke NAME's live token if any, then create a new one (for scripted stacks)."""
    live = s.execute(
        select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
    ).scalar_one_or_none()
    if live is not None:
        revoke_token(s, name, now=now)
    return create_token(s, name, role)
