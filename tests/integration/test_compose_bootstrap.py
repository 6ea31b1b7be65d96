"""Compose's token bootstrap (docker/bootstrap_token.py), run as the service runs it, on
the real test database: the first run makes an admin token, stores it 0600 and prints it
once; every later run, or a database that already has an admin, changes nothing."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shared.service.tokens import Principal, Role, authenticate, create_token, revoke_token
from shared.service.uow import UnitOfWork

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "bootstrap_token.py"


def bootstrap(database_url: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def live_admins(sessions: sessionmaker[Session]) -> list[str]:
    from shared.service.tokens import list_tokens

    with sessions() as s:
        return [t.name for t in list_tokens(s) if t.role == "admin" and t.revoked_at is None]


def test_the_first_run_creates_an_admin_token_stored_0600_and_printed_once(
    sessions: sessionmaker[Session], database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "secrets" / "admin.token"

    done = bootstrap(database_url, out)

    assert done.returncode == 0, done.stderr
    stored = out.read_text().strip()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert done.stdout.splitlines()[-1] == stored  # printed once, to the service's log
    assert f"stored 0600 at {out}" in done.stdout
    with sessions() as s:
        assert authenticate(s, stored) == Principal("compose-admin", Role.ADMIN)
    assert live_admins(sessions) == ["compose-admin"]


def test_a_second_run_changes_nothing_and_prints_no_token(
    sessions: sessionmaker[Session], database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "admin.token"
    first = bootstrap(database_url, out)
    assert first.returncode == 0, first.stderr
    token, written = out.read_text(), out.stat().st_mtime_ns

    again = bootstrap(database_url, out)

    assert again.returncode == 0, again.stderr
    assert "an admin token exists (compose-admin); nothing created" in again.stdout
    assert token.strip() not in again.stdout + again.stderr
    assert (out.read_text(), out.stat().st_mtime_ns) == (token, written)
    assert live_admins(sessions) == ["compose-admin"]


def test_an_existing_admin_of_another_name_is_enough(
    sessions: sessionmaker[Session], database_url: str, tmp_path: Path
) -> None:
    with UnitOfWork(sessions) as uow:
        create_token(uow, "ops", Role.ADMIN)
    out = tmp_path / "admin.token"

    done = bootstrap(database_url, out)

    assert done.returncode == 0, done.stderr
    assert "an admin token exists (ops); nothing created" in done.stdout
    assert not out.exists()
    assert live_admins(sessions) == ["ops"]


def test_a_revoked_admin_does_not_count(
    sessions: sessionmaker[Session], database_url: str, tmp_path: Path
) -> None:
    """After ``kodo token revoke compose-admin`` the next start makes a new one."""
    out = tmp_path / "admin.token"
    assert bootstrap(database_url, out).returncode == 0
    old = out.read_text().strip()
    with UnitOfWork(sessions) as uow:
        revoke_token(uow, "compose-admin", now=datetime.now(UTC))

    done = bootstrap(database_url, out)

    assert done.returncode == 0, done.stderr
    new = out.read_text().strip()
    assert new != old
    with sessions() as s:
        assert authenticate(s, old) is None
        assert authenticate(s, new) == Principal("compose-admin", Role.ADMIN)


def test_an_unreachable_database_fails_with_the_reason_and_writes_nothing(
    tmp_path: Path,
) -> None:
    out = tmp_path / "admin.token"
    nowhere = "postgresql+psycopg://postgres:postgres@127.0.0.1:1/kodo?connect_timeout=2"

    done = bootstrap(nowhere, out)

    assert done.returncode == 1
    assert done.stderr.startswith("token bootstrap failed:")
    assert not out.exists()
