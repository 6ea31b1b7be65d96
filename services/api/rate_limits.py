"""Intents are rate-limited per token (KODO_INTENT_RATE), counted in Redis.

flask-limiter's moving window on the Redis kodo already uses, so the limit holds across
every API process. The key is the authenticated token's name (one live token per name);
the check runs inside the view, after authentication. Over the limit is a 429 in
kodo's error shape with ``Retry-After``. Without Redis nothing can be counted, so the
limited endpoints fail closed: a 503 naming the rule, never an uncounted intent.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Flask, g, request
from flask_limiter import Limiter
from redis.exceptions import RedisError

from shared.config import Settings
from shared.errors import KodoError
from shared.service.tokens import Principal

LIMITED_ENDPOINTS = ("intents.create_intent",)


class RateLimitsUnavailable(KodoError):
    """Redis did not answer: the request is refused rather than admitted uncounted."""

    code = "rate_limits_unavailable"
    http_status = 503


def _fail_closed(limited: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(limited)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return limited(*args, **kwargs)
        except RedisError as exc:
            raise RateLimitsUnavailable(
                f"cannot count requests against KODO_INTENT_RATE (Redis: "
                f"{type(exc).__name__}); try again shortly"
            ) from exc

    return guarded


def token_key() -> str:
    found = g.get("principal")
    if isinstance(found, Principal):
        return f"token:{found.name}"
    return f"addr:{request.remote_addr}"  # unreachable behind auth; never a shared bucket


def install_rate_limits(app: Flask, settings: Settings) -> Limiter:
    limiter = Limiter(
        token_key,
        app=app,
        storage_uri=settings.redis_url,
        storage_options={"socket_timeout": 2, "socket_connect_timeout": 2},
        key_prefix=f"{settings.redis_key_prefix}:rate",
        strategy="moving-window",
        headers_enabled=True,
        default_limits=[],
    )
    message = (
        f"too many intents: at most {settings.intent_rate} per token (KODO_INTENT_RATE); "
        "wait for Retry-After seconds"
    )
    for endpoint in LIMITED_ENDPOINTS:
        view: Callable[..., Any] = app.view_functions[endpoint]
        app.view_functions[endpoint] = _fail_closed(
            limiter.limit(settings.intent_rate, error_message=message, scope="intents")(view)
        )
    return limiter
