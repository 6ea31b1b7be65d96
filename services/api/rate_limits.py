"""Intents are rate-limited per token (KODO_INTENT_RATE), counted in Redis.

A moving window (the ``limits`` library's, on the Redis kodo already uses), so the
limit holds across every API process. The key is the authenticated token's name (one
live token per name); the check runs inside the view, after authentication. Over the
limit is a 429 in kodo's error shape with ``Retry-After`` and the window's
``X-RateLimit-*`` figures. Without Redis nothing can be counted, so the limited
endpoints fail closed: a 503 naming the rule, never an uncounted intent.

One Redis script per limited request, and nothing on any other: flask-limiter, used
here before, hooked every request of the API (a before- and an after-request pass over
its limits) and read the window a second time to write ``X-RateLimit-*`` on every
accepted intent, about a fifth of a submit's CPU in the API.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis import Redis
from redis.exceptions import RedisError

from shared.config import Settings
from shared.errors import KodoError
from shared.service.tokens import Principal

from .errors import error_response

LIMITED_ENDPOINTS = ("intents.create_intent",)


class RateLimitsUnavailable(KodoError):
    """Redis did not answer: the request is refused rather than admitted uncounted."""

    code = "rate_limits_unavailable"
    http_status = 503


def token_key() -> str:
    found = g.get("principal")
    if isinstance(found, Principal):
        return f"token:{found.name}"
    return f"addr:{request.remote_addr}"  # unreachable behind auth; never a shared bucket


class IntentRate:
    """KODO_INTENT_RATE over a moving window per caller, in Redis."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.item: RateLimitItem = parse(settings.intent_rate)
        storage = RedisStorage(
            settings.redis_url,
            connection_pool=redis.connection_pool,  # the API's own: no second pool
            key_prefix=f"{settings.redis_key_prefix}:rate",
        )
        self.window = MovingWindowRateLimiter(storage)
        self.message = (
            f"too many intents: at most {settings.intent_rate} per token (KODO_INTENT_RATE);"
            " wait for Retry-After seconds"
        )

    def refusal(self, caller: str) -> Response | None:
        """Count one intent of ``caller``; the 429 to answer when it is over the limit
        (its window read only then). RateLimitsUnavailable when Redis cannot count."""
        try:
            if self.window.hit(self.item, "intents", caller):
                return None
            stats = self.window.get_window_stats(self.item, "intents", caller)
        except RedisError as exc:
            raise RateLimitsUnavailable(
                f"cannot count requests against KODO_INTENT_RATE (Redis: "
                f"{type(exc).__name__}); try again shortly"
            ) from exc
        response = error_response(429, "too_many_requests", self.message)
        response.headers["Retry-After"] = str(max(1, math.ceil(stats.reset_time - time.time())))
        response.headers["X-RateLimit-Limit"] = str(self.item.amount)
        response.headers["X-RateLimit-Remaining"] = str(stats.remaining)
        response.headers["X-RateLimit-Reset"] = str(math.ceil(stats.reset_time))
        return response


def install_rate_limits(app: Flask, settings: Settings, redis: Redis) -> IntentRate:
    rate = IntentRate(settings, redis)
    for endpoint in LIMITED_ENDPOINTS:
        view: Callable[..., Any] = app.view_functions[endpoint]
        app.view_functions[endpoint] = _limited(view, rate)
    return rate


def _limited(view: Callable[..., Any], rate: IntentRate) -> Callable[..., Any]:
    @functools.wraps(view)
    def limited(*args: Any, **kwargs: Any) -> Any:
        refused = rate.refusal(token_key())
        if refused is not None:
            return refused
        return view(*args, **kwargs)

    return limited
