"""``kodo token create|revoke|list``: API credentials, managed straight in Postgres.

A token is printed once, at creation; only its sha256 is stored. Roles: ``submitter``
(create intents, start runs, read), ``approver`` (approve, reject, cancel, read),
``admin`` (both).
"""

from __future__ import annotations

import getpass
import json
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click
import structlog
from sqlalchemy.orm import Session, sessionmaker

from services.cli.context import home_option, settings_for
from shared.db.engine import make_engine, make_session_factory
from shared.errors import KodoError
from shared.logging import configure_logging
from shared.service.tokens import Role, create_token, list_tokens, revoke_token
from shared.service.uow import UnitOfWork


@click.group("token")
def token() -> None:
    """Create, revoke and list API bearer tokens."""


@contextmanager
def _sessions(home: Path | None) -> Iterator[sessionmaker[Session]]:
    settings = settings_for(home)
    _audit_to_stderr(settings.log_json)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        with structlog.contextvars.bound_contextvars(actor=_actor()):
            yield make_session_factory(engine)
    finally:
        engine.dispose()


def _actor() -> str:
    """Who changed a token: the operating-system account running the CLI, and its host
    (token changes are made on the database directly, never through the API)."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _audit_to_stderr(json_lines: bool) -> None:
    """Token changes write their audit line (``kodo.audit``) to stderr, as KODO_LOG_FORMAT
    says; nothing else of the CLI's libraries is let through below WARNING."""
    configure_logging(json=json_lines, level="WARNING")
    logging.getLogger("kodo.audit").setLevel(logging.INFO)


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--json", "as_json", is_flag=True, help="Print {name, role, token}.")
@home_option
def create(name: str, role: str, as_json: bool, home: Path | None) -> None:
    """Create a token for NAME (the name approvals and intents record). Shown once."""
    try:
        with _sessions(home) as sessions, UnitOfWork(sessions) as uow:
            plaintext = create_token(uow, name, Role(role))
    except KodoError as exc:
        raise click.ClickException(exc.message) from exc
    if as_json:
        click.echo(json.dumps({"name": name, "role": role, "token": plaintext}))
    else:
        click.echo(plaintext)
        click.echo(
            f"(token for {name}, role {role}: store it now, it is not shown again)", err=True
        )


@token.command("revoke")
@click.argument("name")
@home_option
def revoke(name: str, home: Path | None) -> None:
    """Revoke NAME's token at once; its requests get 401 from now on."""
    try:
        with _sessions(home) as sessions, UnitOfWork(sessions) as uow:
            revoke_token(uow, name, now=datetime.now(UTC))
    except KodoError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"revoked {name}")


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
@home_option
def list_cmd(as_json: bool, home: Path | None) -> None:
    """Every token ever made: name, role, created, revoked (never the secret)."""
    with _sessions(home) as sessions, sessions() as s:
        rows = [
            {
                "name": t.name,
                "role": t.role,
                "createdAt": t.created_at.isoformat(),
                "revokedAt": t.revoked_at.isoformat() if t.revoked_at else None,
            }
            for t in list_tokens(s)
        ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for r in rows:
        state = f"revoked {r['revokedAt']}" if r["revokedAt"] else "live"
        click.echo(f"{r['name']:<32} {r['role']:<10} {state}")
