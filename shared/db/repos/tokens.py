"""API tokens and the web sessions signed in with them (only digests are stored)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, bindparam, cast, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import direct
from shared.db.models import ApiToken, UiSession


class TokenRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, name: str, role: str, token_sha256: str) -> ApiToken | None:
        """Insert a live token; None if the name (or digest) is taken."""
        row = ApiToken(name=name, role=role, token_sha256=token_sha256)
        try:
            with self.session.begin_nested():
                self.session.add(row)
        except IntegrityError:
            return None
        return row

    def revoke_live(self, name: str, *, now: datetime) -> int | None:
        """End NAME's live token, renaming it ``NAME#revoked-<id>``; its id, or None."""
        revoked: int | None = self.session.execute(
            update(ApiToken)
            .where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
            .values(
                revoked_at=now,
                name=ApiToken.name + "#revoked-" + cast(ApiToken.id, String),
            )
            .returning(ApiToken.id)
        ).scalar_one_or_none()
        return revoked

    def has_live(self, name: str) -> bool:
        return (
            self.session.execute(
                select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
            ).scalar_one_or_none()
            is not None
        )

    def live_by_digest(self, token_sha256: str) -> ApiToken | None:
        return self.session.execute(
            select(ApiToken).where(
                ApiToken.token_sha256 == token_sha256, ApiToken.revoked_at.is_(None)
            )
        ).scalar_one_or_none()

    def all(self) -> list[ApiToken]:
        """Every token ever made, oldest first (revoked ones too)."""
        return list(self.session.execute(select(ApiToken).order_by(ApiToken.id)).scalars())


_LIVE_NAME_ROLE = select(ApiToken.name, ApiToken.role).where(
    ApiToken.token_sha256 == bindparam("digest"), ApiToken.revoked_at.is_(None)
)


def live_name_and_role(conn: direct.Where, token_sha256: str) -> tuple[str, str] | None:
    """(name, role) of the live token with this digest, in one Core statement: the
    API's check on every request, where an ORM object and session cost more than it."""
    row = direct.execute(conn, _LIVE_NAME_ROLE, {"digest": token_sha256}).one_or_none()
    return None if row is None else (row.name, row.role)


class UiSessionRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: UiSession) -> UiSession:
        self.session.add(row)
        self.session.flush()
        return row

    def live_with_token(
        self, session_sha256: str, *, now: datetime
    ) -> tuple[UiSession, ApiToken] | None:
        """The session (not ended, not expired) and its token, if the token still lives."""
        found = self.session.execute(
            select(UiSession, ApiToken)
            .join(ApiToken, UiSession.token_id == ApiToken.id)
            .where(
                UiSession.session_sha256 == session_sha256,
                UiSession.ended_at.is_(None),
                UiSession.expires_at > now,
                ApiToken.revoked_at.is_(None),
            )
        ).one_or_none()
        return None if found is None else (found[0], found[1])

    def keep_newest(self, token_id: int, *, now: datetime, keep: int) -> int:
        """Delete the token's ended and expired sessions, and its live ones past the
        ``keep`` newest; how many went. One statement; the table stays small (at most
        ``keep`` rows a token, and what ended since its last sign-in)."""
        newest = (
            select(UiSession.id)
            .where(
                UiSession.token_id == token_id,
                UiSession.ended_at.is_(None),
                UiSession.expires_at > now,
            )
            .order_by(UiSession.id.desc())
            .limit(keep)
        )
        gone = self.session.execute(
            delete(UiSession).where(UiSession.token_id == token_id, UiSession.id.not_in(newest))
        )
        return int(getattr(gone, "rowcount", 0) or 0)

    def end(self, session_sha256: str, *, now: datetime) -> None:
        """End the session with this digest (no-op if unknown or ended)."""
        self.session.execute(
            update(UiSession)
            .where(UiSession.session_sha256 == session_sha256, UiSession.ended_at.is_(None))
            .values(ended_at=now)
        )

    def end_all_of_token(self, token_id: int, *, now: datetime) -> None:
        self.session.execute(
            update(UiSession)
            .where(UiSession.token_id == token_id, UiSession.ended_at.is_(None))
            .values(ended_at=now)
        )
