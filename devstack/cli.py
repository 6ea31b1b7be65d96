"""``kodo stack``: bring the local Postgres and Redis up, report them, and stop what we started."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from devstack import pgurl
from devstack import stack as ops
from devstack.database import ensure_database, migrate, recreate_database
from devstack.handle import DevstackError
from shared.config import ConfigError, Settings

_home = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where stack.json and stack/ live (default: <checkout>/.kodo).",
)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("stack")
def stack() -> None:
    """Find-or-start Postgres and Redis for the demo, the tests and CI."""


@stack.command("up")
@click.option("--json", "as_json", is_flag=True, help="Print the handles as JSON.")
@click.option("--env", "as_env", is_flag=True, help="Print `export` lines for a shell to eval.")
@_home
def up_cmd(as_json: bool, as_env: bool, home: Path | None) -> None:
    """Ensure both services, create the database if missing and migrate it to head."""
    settings = _settings()
    try:
        result = ops.up(settings.database_url, settings.redis_url, home=home)
    except DevstackError as exc:
        raise click.ClickException(str(exc)) from exc
    handles = (result.postgres, result.redis)
    if as_json:
        payload = {h.name: h.to_json() for h in handles}
        click.echo(json.dumps({**payload, "database_created": result.database_created}))
        return
    for handle in handles:
        # With --env, stdout is for `eval`: the human lines go to stderr.
        click.echo(handle.describe(), err=as_env)
    if as_env:
        click.echo(f"export DATABASE_URL={shlex.quote(result.postgres.url)}")
        click.echo(f"export REDIS_URL={shlex.quote(result.redis.url)}")


@stack.command("down")
@click.argument("services", nargs=-1, type=click.Choice(["postgres", "redis"]))
@click.option("--purge", is_flag=True, help="Also delete the stopped servers' data.")
@_home
def down_cmd(services: tuple[str, ...], purge: bool, home: Path | None) -> None:
    """Stop the servers `up` started (never a reused one)."""
    stopped = ops.down(home=home, names=services, purge=purge)
    if not stopped:
        click.echo("nothing to stop")
    for handle in stopped:
        click.echo(f"{handle.name}: stopped {handle.url} (pid {handle.pid})")


@stack.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@_home
def status_cmd(as_json: bool, home: Path | None) -> None:
    """What `up` started, and whether it still runs and answers."""
    entries = ops.status(home=home)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {**e.handle.to_json(), "running": e.running, "answering": e.answering}
                    for e in entries
                ]
            )
        )
        return
    if not entries:
        click.echo("nothing started by kodo (reused servers are not tracked)")
    for entry in entries:
        health = "answering" if entry.answering else "running" if entry.running else "gone"
        click.echo(f"{entry.handle.name}: {health} {entry.handle.url} (pid {entry.handle.pid})")


_url = click.option("--url", default=None, help="Postgres URL (default: DATABASE_URL).")
_database = click.option("--database", default=None, help="Use this database name instead.")


def _target(url: str | None, database: str | None) -> str:
    chosen = url or _settings().database_url
    return pgurl.with_database(chosen, database) if database else chosen


@stack.command("fresh-db")
@_url
@_database
def fresh_db_cmd(url: str | None, database: str | None) -> None:
    """Drop and recreate the database, then migrate it to head (CI's clean slate)."""
    target = _target(url, database)
    try:
        recreate_database(target)
        migrate(target)
    except DevstackError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"fresh and migrated: {pgurl.parse(target).render_as_string()}")


@stack.command("migrate")
@_url
@_database
def migrate_cmd(url: str | None, database: str | None) -> None:
    """Create the database if missing and migrate it to head (no server is started)."""
    target = _target(url, database)
    try:
        created = ensure_database(target)
        migrate(target)
    except DevstackError as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "created and migrated" if created else "migrated"
    click.echo(f"{verb}: {pgurl.parse(target).render_as_string()}")


@stack.command("db-url")
@_url
@_database
def db_url_cmd(url: str | None, database: str | None) -> None:
    """Print DATABASE_URL, optionally naming another database on the same server."""
    click.echo(_target(url, database))
