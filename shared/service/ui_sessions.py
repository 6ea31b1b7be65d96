"""Web sign-in: the browser holds a random session id, never the bearer token.

Signing in with a token stores a session row (only the sha256 of its id, so a copy
of the database signs no one in) with an expiry and a CSRF token for the session's
forms. A session acts with its token's name and role while the token lives: every
request re-reads the token, so revoking it ends the session's power at once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from shared.db.models import UiSession
from shared.db.repos.tokens import UiSessionRepo
from shared.hashing import sha256_hex
from shared.service.tokens import Principal, live_token, principal_of
from shared.service.uow import UnitOfWork

ID_BYTES = 32  # 256 bits from the OS CSPRNG
SESSIONS_PER_TOKEN = 20
"""The live sessions one token keeps (a person's browsers); a sign-in past them ends the
oldest. Each sign-in also deletes the token's ended and expired rows: one token had
stored a row per sign-in without bound, 450 a second (red-team helper-131)."""
_MAX_ID_LENGTH = 100


@dataclass(frozen=True)
class SignedIn:
    """A live session: who acts, and the CSRF token its forms must carry."""

    principal: Principal
    csrf_token: str
    expires_at: datetime


def sign_in(
    uow: UnitOfWork, token: str, *, now: datetime, ttl_s: int
) -> tuple[str, SignedIn] | None:
    """A new session for a live ``token``: (the id for the cookie, the session); else None."""
    row = live_token(uow.session, token)
    if row is None:
        return None
    session_id = secrets.token_urlsafe(ID_BYTES)
    csrf = secrets.token_urlsafe(ID_BYTES)
    expires = now + timedelta(seconds=ttl_s)
    uow.ui_sessions.add(
        UiSession(
            session_sha256=sha256_hex(session_id),
            token_id=row.id,
            csrf_token=csrf,
            expires_at=expires,
        )
    )
    uow.ui_sessions.keep_newest(row.id, now=now, keep=SESSIONS_PER_TOKEN)
    return session_id, SignedIn(principal_of(row), csrf, expires)


def signed_in(s: Session, session_id: str, *, now: datetime) -> SignedIn | None:
    """The session ``session_id`` names, if it has not ended or expired and its token lives."""
    if not session_id or len(session_id) > _MAX_ID_LENGTH:
        return None
    found = UiSessionRepo(s).live_with_token(sha256_hex(session_id), now=now)
    if found is None:
        return None
    session, token = found
    return SignedIn(principal_of(token), session.csrf_token, session.expires_at)


def sign_out(uow: UnitOfWork, session_id: str, *, now: datetime) -> None:
    """End the session (idempotent: an unknown or ended id changes nothing)."""
    if not session_id or len(session_id) > _MAX_ID_LENGTH:
        return
    uow.ui_sessions.end(sha256_hex(session_id), now=now)
