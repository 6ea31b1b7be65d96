"""``/healthz``: a real ``SELECT 1`` and a real Redis ``PING``, each with a short timeout."""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from .openapi import Routes
from .responses import HealthSchema
from .state import api

routes = Routes("health", __name__, description="Reachability of Postgres and Redis")

TIMEOUT_MS = 2000


def database_status(engine: Engine) -> str:
    try:
        with engine.connect() as conn:
            conn.execute(text(f"SET LOCAL statement_timeout = {TIMEOUT_MS}"))
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return f"failed: {type(exc).__name__}"
    return "ok"


def redis_status(client: Redis) -> str:
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        return f"failed: {type(exc).__name__}"
    return "ok"


@routes.route("/healthz", "GET")
@routes.response(200, HealthSchema(), description="every dependency answered")
@routes.alt_response(503, HealthSchema(), description="a dependency failed (named in failed)")
def healthz() -> tuple[dict[str, Any], int]:
    ctx = api()
    checks = {"database": database_status(ctx.engine), "redis": redis_status(ctx.redis)}
    failed = sorted(name for name, status in checks.items() if status != "ok")
    body: dict[str, Any] = {"ok": not failed, **checks}
    if failed:
        body["failed"] = failed
    return body, 503 if failed else 200
