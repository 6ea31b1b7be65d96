"""Revoking a token always ends it, however often its name is reused and revoked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shared.db.engine import unit_of_work
from shared.service.tokens import Role, authenticate, create_token, fresh_token, revoke_token

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def _live(sessions: sessionmaker[Session], token: str) -> bool:
    with sessions() as s:
        return authenticate(s, token) is not None


def test_one_name_revoked_twice_in_the_same_second_leaves_neither_token_live(
    sessions: sessionmaker[Session],
) -> None:
    with unit_of_work(sessions) as s:
        first = create_token(s, "carol", Role.APPROVER)
    with unit_of_work(sessions) as s:
        revoke_token(s, "carol", now=NOW)
    with unit_of_work(sessions) as s:
        second = create_token(s, "carol", Role.APPROVER)
    with unit_of_work(sessions) as s:
        revoke_token(s, "carol", now=NOW + timedelta(milliseconds=500))

    assert not _live(sessions, first)
    assert not _live(sessions, second)


def test_a_fresh_token_twice_in_a_second_revokes_each_predecessor(
    sessions: sessionmaker[Session],
) -> None:
    made = []
    for _ in range(3):
        with unit_of_work(sessions) as s:
            made.append(fresh_token(s, "local-admin", Role.ADMIN, now=NOW))
    assert [_live(sessions, t) for t in made] == [False, False, True]
