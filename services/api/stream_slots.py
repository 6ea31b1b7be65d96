"""Open SSE streams, counted in Redis per token and in total, across every API process.

A stream takes a *slot* (a member of two sorted sets scored by its last heartbeat) when
it opens and gives it back when it ends. A process killed mid-stream cannot give its
slots back: a slot not refreshed for ``stale_s`` no longer counts, so a crash costs the
token a minute, never its streams for good. Taking a slot is one Lua script: the check
and the add cannot interleave with another process's.

Heartbeats are the process's, not each stream's: the first stream to wake after
``refresh_s`` refreshes every slot the process holds, one ``ZADD`` per set for all
of them (a thousand open streams were a thousand pipelines of four commands every
``refresh_s``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

from shared.errors import KodoError

log = logging.getLogger(__name__)

_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 1 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 2 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 0
"""

RETRY_AFTER_S = 15


class TooManyStreams(KodoError):
    """The token (or the whole API) has as many open event streams as allowed."""

    code = "too_many_streams"
    http_status = 429


class StreamLimitsUnavailable(KodoError):
    """Redis did not answer: streams are refused rather than left uncounted."""

    code = "stream_limits_unavailable"
    http_status = 503


@dataclass
class Slot:
    """One open stream's place; ``refresh`` it while streaming, ``release`` it at the end."""

    slots: StreamSlots
    who: str
    member: str

    def refresh(self) -> None:
        """Keep the slot counted: every slot of the process is refreshed at once, at most
        once per ``refresh_s`` (:meth:`StreamSlots.refresh_due`)."""
        self.slots.refresh_due()

    def release(self) -> None:
        self.slots.forget(self)
        try:
            pipe = self.slots.redis.pipeline(transaction=False)
            for key in self.slots.keys(self.who):
                pipe.zrem(key, self.member)
            pipe.execute()
        except RedisError as exc:
            log.warning(
                "stream slot release failed (%s): it lapses after %ss", exc, self.slots.stale_s
            )


class StreamSlots:
    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        per_token: int,
        total: int,
        stale_s: float = 60.0,
        refresh_s: float = 10.0,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.per_token = per_token
        self.total = total
        self.stale_s = stale_s
        self.refresh_s = refresh_s
        self._held: dict[str, str] = {}  # this process's live slots: member -> token name
        self._lock = threading.Lock()
        self._refreshed = time.time()

    def forget(self, slot: Slot) -> None:
        with self._lock:
            self._held.pop(slot.member, None)

    def refresh_due(self) -> None:
        """Refresh every slot this process holds if ``refresh_s`` has passed since the
        last time: one pipeline, a ``ZADD XX`` per set naming all of its members (a
        slot released meanwhile is not added back). A failure is only logged: the
        slots lapse after ``stale_s`` unless a later refresh gets through."""
        now = time.time()
        with self._lock:
            if now - self._refreshed < self.refresh_s:
                return
            self._refreshed = now
            held = dict(self._held)
        if not held:
            return
        by_token: defaultdict[str, dict[str, float]] = defaultdict(dict)
        for member, who in held.items():
            by_token[who][member] = now
        sets = {self.token_key(who): members for who, members in by_token.items()}
        sets[self.all_key()] = dict.fromkeys(held, now)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for key, members in sets.items():
                pipe.zadd(key, members, xx=True)
                pipe.expire(key, int(self.stale_s * 2))
            pipe.execute()
        except RedisError as exc:
            log.warning("stream slot refresh failed (%s): they lapse after %ss", exc, self.stale_s)

    def token_key(self, who: str) -> str:
        return f"{self.prefix}:sse:token:{who}"

    def all_key(self) -> str:
        return f"{self.prefix}:sse:all"

    def keys(self, who: str) -> tuple[str, str]:
        return self.token_key(who), self.all_key()

    def count(self, who: str) -> int:
        """Live slots of ``who`` (for tests and triage)."""
        key = self.keys(who)[0]
        return int(self.redis.zcount(key, time.time() - self.stale_s, "+inf"))

    def take(self, who: str) -> Slot:
        now = time.time()
        member = uuid.uuid4().hex
        try:
            verdict = self.redis.eval(
                _TAKE,
                2,
                *self.keys(who),
                now,
                now - self.stale_s,
                member,
                self.per_token,
                self.total,
                int(self.stale_s * 2),
            )
        except RedisError as exc:
            raise StreamLimitsUnavailable(
                f"cannot count open event streams (Redis: {type(exc).__name__}); try again"
            ) from exc
        if verdict == 1:
            raise TooManyStreams(
                f"{who} already has {self.per_token} open event streams, the most one token "
                f"may hold (KODO_SSE_PER_TOKEN); close one, or poll GET /runs/<id>",
                details={"limit": [f"KODO_SSE_PER_TOKEN={self.per_token}"]},
            )
        if verdict == 2:
            raise TooManyStreams(
                f"the API already serves {self.total} event streams, the most it holds "
                f"(KODO_SSE_MAX_STREAMS); try again later, or poll GET /runs/<id>",
                details={"limit": [f"KODO_SSE_MAX_STREAMS={self.total}"]},
            )
        with self._lock:
            self._held[member] = who
        return Slot(self, who, member)
