"""Compose's one-shot token bootstrap: an admin token when the database has none.

``kodo up`` issues its local admin a token on every start; a compose stack has no such
moment, and a token baked into the image or the compose file would be a secret in both.
This runs once after ``migrate`` (``docker compose up`` starts it each time): when no
live admin token exists it creates one named ``--name``, writes it to ``--out`` (mode
0600, on the secrets volume) and prints it once to its log. The file is written before
the transaction commits, so a token whose plaintext was lost is never left live; when
any live admin token exists it changes nothing, so a second run is a no-op.

``python docker/bootstrap_token.py [--out PATH] [--name NAME]``; DATABASE_URL names the
database. Exit 0 when an admin token exists afterwards, 1 with the reason otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from shared.config import Settings
from shared.db.engine import make_engine, make_session_factory
from shared.errors import KodoError
from shared.service.tokens import Role, create_token, list_tokens
from shared.service.uow import UnitOfWork

DEFAULT_OUT = Path("/data/secrets/admin.token")
DEFAULT_NAME = "compose-admin"


@dataclass(frozen=True)
class Outcome:
    """What the bootstrap did: ``token`` is the new plaintext, or None when one existed."""

    token: str | None
    existing: tuple[str, ...]


def write_secret(path: Path, secret: str) -> None:
    """``secret`` at ``path``, mode 0600 from its creation (a temporary file renamed over)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    partial.replace(path)


def bootstrap(database_url: str, out: Path, name: str) -> Outcome:
    """Create ``name``'s admin token and store it at ``out``, unless an admin token lives."""
    engine = make_engine(database_url, pool_size=1)
    written = False
    try:
        with UnitOfWork(make_session_factory(engine)) as uow:
            admins = tuple(
                t.name
                for t in list_tokens(uow.session)
                if t.role == Role.ADMIN.value and t.revoked_at is None
            )
            if admins:
                return Outcome(None, admins)
            plaintext = create_token(uow, name, Role.ADMIN)
            write_secret(out, plaintext)  # before the commit: no live token without its file
            written = True
        return Outcome(plaintext, ())
    except BaseException:
        if written:  # the commit failed: the file names no live token
            out.unlink(missing_ok=True)
        raise
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--name", default=DEFAULT_NAME)
    args = parser.parse_args(argv)
    try:
        outcome = bootstrap(Settings.from_env().database_url, args.out, args.name)
    except (KodoError, SQLAlchemyError, OSError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        print(f"token bootstrap failed: {reason}", file=sys.stderr)
        return 1
    if outcome.token is None:
        print(
            f"an admin token exists ({', '.join(outcome.existing)}); nothing created"
            f" (the one this service made, if any, is in {args.out})"
        )
        return 0
    print(f"created admin token {args.name!r}, stored 0600 at {args.out}; shown once:")
    print(outcome.token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
