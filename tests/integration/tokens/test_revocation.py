"""Revoking a token always ends it, however often its name is reused and revoked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shared.service.tokens import (
    Role,
    authenticate,
    create_token,
    fresh_token,
    principal_for,
    revoke_token,
)
from shared.service.uow import UnitOfWork

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def _live(sessions: sessionmaker[Session], token: str) -> bool:
    """Whether the token is live, asked both ways: the ORM path (web sign-in) and the
    API's per-request Core statement must always agree."""
    with sessions() as s:
        by_session = authenticate(s, token)
        by_statement = principal_for(s.connection(), token)
    assert by_session == by_statement
    return by_session is not None


def test_one_name_revoked_twice_in_the_same_second_leaves_neither_token_live(
    sessions: sessionmaker[Session],
) -> None:
    with UnitOfWork(sessions) as uow:
        first = create_token(uow, "carol", Role.APPROVER)
    with UnitOfWork(sessions) as uow:
        revoke_token(uow, "carol", now=NOW)
    with UnitOfWork(sessions) as uow:
        second = create_token(uow, "carol", Role.APPROVER)
    with UnitOfWork(sessions) as uow:
        revoke_token(uow, "carol", now=NOW + timedelta(milliseconds=500))

    assert not _live(sessions, first)
    assert not _live(sessions, second)


def test_a_fresh_token_twice_in_a_second_revokes_each_predecessor(
    sessions: sessionmaker[Session],
) -> None:
    made = []
    for _ in range(3):
        with UnitOfWork(sessions) as uow:
            made.append(fresh_token(uow, "local-admin", Role.ADMIN, now=NOW))
    assert [_live(sessions, t) for t in made] == [False, False, True]
