"""`kodo db reset` refuses without a terminal unless --yes; with it, it empties runs and queue."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis
from sqlalchemy import Engine, text

from devstack.sample_repo import create_sample_repo
from services.cli.main import cli

pytestmark = pytest.mark.integration


def env(database_url: str, broker: str) -> dict[str, str | None]:
    return {"DATABASE_URL": database_url, "REDIS_URL": broker, "KODO_HOME": "/nonexistent"}


def test_reset_without_yes_and_without_a_terminal_refuses_with_exit_2(
    database_url: str, cli_redis_url: str, engine: Engine
) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO app.intents (id, repo_path, goal, base_ref, request_sha256)"
                " VALUES ('keep-me', '/r', 'g', 'HEAD', repeat('0', 64))"
                " ON CONFLICT DO NOTHING"
            )
        )
    result = CliRunner().invoke(cli, ["db", "reset"], env=env(database_url, cli_redis_url))
    assert result.exit_code == 2
    assert "--yes" in result.output
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT count(*) FROM app.intents WHERE id = 'keep-me'"))
        assert kept.scalar() == 1


def test_reset_with_yes_purges_the_queue_and_truncates_the_run_tables(
    database_url: str, cli_redis_url: str, engine: Engine
) -> None:
    broker = Redis.from_url(cli_redis_url)
    broker.lpush("kodo", b"stale message")
    result = CliRunner().invoke(cli, ["db", "reset", "--yes"], env=env(database_url, cli_redis_url))
    assert result.exit_code == 0, result.output
    assert broker.llen("kodo") == 0
    broker.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM app.intents")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM app.alembic_version")).scalar() == 1
    assert "truncated" in result.output


def test_migrate_brings_the_database_to_head(database_url: str, cli_redis_url: str) -> None:
    result = CliRunner().invoke(cli, ["db", "migrate"], env=env(database_url, cli_redis_url))
    assert result.exit_code == 0, result.output
    assert "migrated to head" in result.output


def test_reset_removes_the_runs_worktrees_too_but_nothing_outside_the_workspaces(
    database_url: str, cli_redis_url: str, engine: Engine, tmp_path: Path
) -> None:
    repo = create_sample_repo(tmp_path / "calc")
    workspaces = tmp_path / "ws"
    tree = workspaces / "run-1"
    subprocess.run(
        ["git", "worktree", "add", "-q", "-b", "kodo/run-1", str(tree)], cwd=repo, check=True
    )
    outside = tmp_path / "not-a-workspace"
    outside.mkdir()
    with engine.begin() as conn:
        for run_id, path in (("run-1", tree), ("run-2", outside)):
            conn.execute(
                text(
                    "INSERT INTO app.intents (id, repo_path, goal, base_ref, request_sha256)"
                    " VALUES (:id, :repo, 'g', 'HEAD', repeat('0', 64))"
                ),
                {"id": run_id, "repo": str(repo)},
            )
            conn.execute(
                text(
                    "INSERT INTO app.runs (id, intent_id, status, next_action, app_version,"
                    " retry_count, worktree_path) VALUES (:id, :id, 'succeeded', 'none', 't', 0,"
                    " :path)"
                ),
                {"id": run_id, "path": str(path)},
            )
    result = CliRunner().invoke(
        cli,
        ["db", "reset", "--yes"],
        env={**env(database_url, cli_redis_url), "KODO_WORKSPACE_DIR": str(workspaces)},
    )
    assert result.exit_code == 0, result.output
    assert "removed 1 worktree(s)" in result.output
    assert not tree.exists()
    assert (
        "run-1"
        not in subprocess.run(
            ["git", "worktree", "list"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout
    )
    assert outside.is_dir(), "a path outside the workspaces folder is never removed"
