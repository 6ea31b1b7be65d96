"""``kodo db migrate|reset``: the schema to head, and the seed's ``db:sys:reset``.

``reset`` is the nuclear option for a local stack whose state went stale: it purges the
Celery queue ``kodo`` (messages pointing at runs about to vanish) and truncates the run
tables. It keeps ``app.alembic_version`` (the schema stays migrated) and
``app.processes`` (the registrations of processes still running, which ``kodo doctor``
reads to vouch for worker versions). It asks first; without a terminal it refuses
unless ``--yes`` is given, so a stray script cannot wipe a database.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from devstack.database import migrate
from devstack.handle import DevstackError
from services.cli.context import home_option, settings_for
from services.worker.git_ops import GitError, git, remove_worktree_dir, unlock_registration
from shared.git_dir import git_dir_refusal
from shared.queue import make_celery
from shared.redact import redact_text

KEPT_TABLES = ("alembic_version", "processes", "api_tokens")


@click.group("db")
def db() -> None:
    """Migrate or reset the database named by DATABASE_URL (or the one `kodo up` used)."""


@db.command("migrate")
@home_option
def migrate_cmd(home: Path | None) -> None:
    """`alembic upgrade head` on DATABASE_URL (the database must exist: `kodo stack migrate`
    also creates it)."""
    url = settings_for(home).database_url
    try:
        migrate(url)
    except (DevstackError, SQLAlchemyError) as exc:
        raise click.ClickException(f"migration failed: {exc}") from exc
    click.echo(f"migrated to head: {make_url(url).render_as_string(hide_password=True)}")


def run_tables(database_url: str) -> list[str]:
    """Every table of schema ``app`` except the ones a reset keeps."""
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            names = conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'app'"
                    " AND tablename <> ALL(:kept) ORDER BY tablename"
                ),
                {"kept": list(KEPT_TABLES)},
            ).scalars()
            return [str(n) for n in names]
    finally:
        engine.dispose()


def run_worktrees(database_url: str) -> list[tuple[str, str]]:
    """(repository, worktree) of every run that still has a worktree."""
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT i.repo_path, r.worktree_path FROM app.runs r"
                    " JOIN app.intents i ON i.id = r.intent_id"
                    " WHERE r.worktree_path IS NOT NULL AND r.worktree_removed_at IS NULL"
                )
            ).all()
        return [(str(repo), str(tree)) for repo, tree in rows]
    finally:
        engine.dispose()


def remove_worktrees(worktrees: list[tuple[str, str]], workspaces: Path) -> int:
    """Delete the runs' worktree folders (only under the workspaces folder) and let each
    repository forget them; the branches stay (they are the runs' results)."""
    removed = 0
    for tree in {t for _, t in worktrees}:
        try:
            remove_worktree_dir(Path(tree), workspaces)
        except (GitError, OSError) as exc:
            click.echo(f"kept {tree}: {exc}", err=True)
            continue
        removed += 1
    own = {r for r, _ in worktrees if Path(r).is_dir() and _own_git_dir(Path(r))}
    for repo, tree in worktrees:
        if repo in own:
            unlock_registration(Path(repo), Path(tree))  # kodo registered it locked
    for repo in own:
        git(Path(repo), "worktree", "prune", check=False)
    return removed


def _own_git_dir(repo: Path) -> bool:
    """Whether ``repo``'s git dir is its own (shared.git_dir): a prune through a link
    deletes what it leads to."""
    why = git_dir_refusal(repo)
    if why is not None:
        click.echo(f"left {repo} alone: {why}", err=True)
    return why is None


def truncate(database_url: str, tables: list[str]) -> None:
    if not tables:
        return
    engine = create_engine(database_url, poolclass=NullPool)
    quoted = ", ".join(f'app."{t}"' for t in tables)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@db.command("reset")
@click.option("--yes", is_flag=True, help="Do not ask (required without a terminal).")
@home_option
def reset_cmd(yes: bool, home: Path | None) -> None:
    """Purge the `kodo` queue in Redis, truncate the run tables and remove the runs'
    worktrees (asks first)."""
    settings = settings_for(home)
    shown = make_url(settings.database_url).render_as_string(hide_password=True)
    broker = redact_text(settings.redis_url)  # (its password never shown: helper-131)
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("refusing to reset without a terminal to confirm: pass --yes")
        click.confirm(
            f"Purge the Celery queue at {broker} and delete every run in {shown}?",
            abort=True,
        )
    try:
        tables = run_tables(settings.database_url)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot read the schema of {shown}: {exc}") from exc
    probe = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        probe.ping()  # kombu would retry an unreachable broker for a long time
    except (RedisError, OSError) as exc:
        raise click.ClickException(f"cannot reach the broker at {broker}: {exc}") from exc
    finally:
        probe.close()
    celery = make_celery(settings)
    try:
        purged = celery.control.purge()
    except OSError as exc:
        raise click.ClickException(f"cannot purge the queue at {broker}: {exc}") from exc
    finally:
        celery.close()
    try:
        worktrees = run_worktrees(settings.database_url)
        truncate(settings.database_url, tables)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot truncate the run tables: {exc}") from exc
    removed = remove_worktrees(worktrees, settings.workspace_dir)
    click.echo(f"purged {purged} queued message(s) from {broker}")
    click.echo(f"truncated {', '.join(tables) or 'nothing'} in {shown}")
    click.echo(f"removed {removed} worktree(s) under {settings.workspace_dir}")
