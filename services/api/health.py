"""``/healthz``: a real ``SELECT 1`` and a real Redis ``PING``, each with a short timeout."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from .state import api

bp = Blueprint("health", __name__)

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


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    ctx = api()
    checks = {"database": database_status(ctx.engine), "redis": redis_status(ctx.redis)}
    failed = sorted(name for name, status in checks.items() if status != "ok")
    body = {"ok": not failed, **checks}
    if failed:
        body["failed"] = failed
    return body, 503 if failed else 200
