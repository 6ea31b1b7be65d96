"""Red-team helper-131: the CLI prints the Redis URL with its password.

kodo hides the database password wherever a command names the database
(``render_as_string(hide_password=True)`` in ``kodo doctor`` and ``kodo db reset``),
but prints ``REDIS_URL`` as configured: ``kodo doctor`` says ``PONG from
redis://:PASSWORD@host/0`` (or ``no PING answer at ...``), ``kodo db reset`` asks and
fails ``... the broker at redis://:PASSWORD@host/0``. Doctor's output is what people
paste into issues and CI logs; Redis is kodo's broker, so its password lets whoever
reads it enqueue kodo's own step tasks (``kodo.ApplyPatchST`` for any run id) or purge
them.

The safe outcome: a Redis URL is shown with its password redacted, as the database's is.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli.doctor import check_redis
from services.cli.main import cli

pytestmark = pytest.mark.security

SECRET = "rt131-redis-s3cret-pass"  # noqa: S105 - a made-up one, to look for
NOWHERE = f"redis://:{SECRET}@127.0.0.1:1/0"  # nothing listens on port 1: fails at once


def test_doctor_never_prints_the_redis_password() -> None:
    check = check_redis(NOWHERE, 0.5)
    assert not check.ok
    assert SECRET not in check.detail, f"kodo doctor prints: {check.detail!r}"


def test_db_reset_never_prints_the_redis_password(database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url, "REDIS_URL": NOWHERE, "KODO_HOME": str(tmp_path)}
    result = CliRunner().invoke(cli, ["db", "reset", "--yes"], env=env)
    assert result.exit_code != 0  # the broker is unreachable: nothing was reset
    assert SECRET not in result.output, f"kodo db reset prints: {result.output!r}"
