"""SQLAlchemy-style Postgres URLs turned into psycopg logins and rewritten copies."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL, make_url

from devstack.handle import DevstackError

MAINTENANCE_DB = "postgres"


def parse(url: str) -> URL:
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        raise DevstackError(f"not a PostgreSQL URL: {parsed.render_as_string()}")
    return parsed


def render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def database_of(url: str) -> str:
    name = parse(url).database
    if not name:
        raise DevstackError(f"no database named in {parse(url).render_as_string()}")
    return name


def with_database(url: str, name: str) -> str:
    return render(parse(url).set(database=name))


def with_host_port(url: str, host: str, port: int) -> str:
    return render(parse(url).set(host=host, port=port))


def conninfo(url: str, *, dbname: str | None = None, timeout_s: float = 3.0) -> str:
    """A libpq conninfo for ``url`` (optionally another database), with a connect timeout."""
    parsed = parse(url)
    extra = {k: v for k, v in parsed.query.items() if isinstance(v, str)}
    return make_conninfo(
        "",
        host=parsed.host or None,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=dbname or parsed.database or MAINTENANCE_DB,
        connect_timeout=max(1, round(timeout_s)),
        **extra,
    )


def login_error(url: str, *, timeout_s: float = 2.0) -> str | None:
    """None when a real login answers ``select 1``, else why not.

    Tries the maintenance DB first (the target may not exist yet), then the
    target itself (the role may only be allowed there).
    """
    reason = "no attempt"
    for dbname in (MAINTENANCE_DB, parse(url).database or MAINTENANCE_DB):
        try:
            with psycopg.connect(conninfo(url, dbname=dbname, timeout_s=timeout_s)) as conn:
                conn.execute("select 1").fetchone()
            return None
        except psycopg.Error as exc:
            reason = str(exc).strip() or type(exc).__name__
    return reason


def answers(url: str, *, timeout_s: float = 2.0) -> bool:
    return login_error(url, timeout_s=timeout_s) is None
