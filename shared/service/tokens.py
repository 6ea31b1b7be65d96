"""Bearer tokens: created once (shown once), stored as sha256, revocable; one role each.

Tokens are credentials, so they come from ``secrets`` (the OS CSPRNG), never from the
seeded RNG that makes runs reproducible.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.orm import Session

from shared.db import direct
from shared.db.models import ApiToken
from shared.db.repos.tokens import TokenRepo, live_name_and_role
from shared.errors import Conflict, InvalidInput, NotFound
from shared.hashing import sha256_hex
from shared.service.uow import UnitOfWork

PREFIX = "kodo_"
# Token changes are made by whoever holds the database (the CLI, a bootstrap), not by a
# principal; each writes one audit line, JSON where the process configured logging.
audit_log = logging.getLogger("kodo.audit")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


class Role(StrEnum):
    SUBMITTER = "submitter"
    APPROVER = "approver"
    ADMIN = "admin"


class Permission(StrEnum):
    READ = "read"
    SUBMIT = "submit"  # create intents, start runs
    DECIDE = "decide"  # approve, reject, request changes, cancel
    OPERATE = "operate"  # retry a failed run (an operator's call: admin only)


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


def create_token(uow: UnitOfWork, name: str, role: Role) -> str:
    """Store a new token for ``name``; return the plaintext (the only time it exists)."""
    if not _NAME.match(name):
        raise InvalidInput("a token name is 1-128 of A-Z a-z 0-9 _ . @ -", details={"name": [name]})
    plaintext = PREFIX + secrets.token_urlsafe(32)
    if uow.tokens.add(name, role.value, sha256_hex(plaintext)) is None:
        raise Conflict(f"a token named {name!r} exists; revoke it first")
    audit_log.info(
        "audit", extra={"action": "token.create", "token_name": name, "role": role.value}
    )
    return plaintext


def revoke_token(uow: UnitOfWork, name: str, *, now: datetime) -> None:
    """End NAME's live token and every web session signed in with it.

    The row keeps its history under ``NAME#revoked-<row id>``, which frees NAME for a
    new token. The suffix is the row's own id, unique by construction (a timestamp
    collided when one name was revoked twice in a second, and the failed rename left
    the token live); a token name cannot contain ``#``, so no live name can clash.
    """
    revoked = uow.tokens.revoke_live(name, now=now)
    if revoked is None:
        raise NotFound(f"no live token named {name!r}")
    uow.ui_sessions.end_all_of_token(revoked, now=now)
    audit_log.info("audit", extra={"action": "token.revoke", "token_name": name})


def list_tokens(s: Session) -> list[ApiToken]:
    """Every token ever made, oldest first (a read)."""
    return TokenRepo(s).all()


def live_token(s: Session, plaintext: str) -> ApiToken | None:
    """The live token row ``plaintext`` names, or None (unknown, malformed or revoked)."""
    digest = _digest(plaintext)
    return None if digest is None else TokenRepo(s).live_by_digest(digest)


def _digest(plaintext: str) -> str | None:
    """The stored digest a presented token would have; None if it is not one of ours."""
    if not plaintext.startswith(PREFIX) or len(plaintext) > 200:
        return None
    return sha256_hex(plaintext)


def principal_of(row: ApiToken) -> Principal:
    return Principal(row.name, Role(row.role))


def authenticate(s: Session, plaintext: str) -> Principal | None:
    """The live token's principal, or None (unknown, malformed or revoked)."""
    row = live_token(s, plaintext)
    return None if row is None else principal_of(row)


def principal_for(conn: direct.Where, plaintext: str) -> Principal | None:
    """As :func:`authenticate`, on a bare connection (one Core statement, no session)."""
    digest = _digest(plaintext)
    found = None if digest is None else live_name_and_role(conn, digest)
    return None if found is None else Principal(found[0], Role(found[1]))


def fresh_token(uow: UnitOfWork, name: str, role: Role, *, now: datetime) -> str:
    """Revoke NAME's live token if any, then create a new one (for scripted stacks)."""
    if uow.tokens.has_live(name):
        revoke_token(uow, name, now=now)
    return create_token(uow, name, role)
