"""kombu's Redis transport, keeping no unacked copies, reusing one Redis client per channel.

Redis keeps no copy of a delivered message (kombu's ``ack_emulation`` is off). kombu's
default stores each delivered message in an ``unacked`` hash and index (a MULTI of
two writes) and deletes it on ack (another), so that a message whose worker died comes
back after ``visibility_timeout``: half of kodo's Redis commands per run (121 of them
before, 63 after). Their CPU is within the bench's noise: a GIL profile put them at 23%
of a worker's, an A/B of the bench in the same minutes did not show it (worker CPU per
run 127 and 125 ms with them, 113 and 146 without). kodo does not need them: Postgres
is the only source of truth, and the reconciler re-sends a step whose message was lost,
or whose worker died, from the rows (``KODO_REDISPATCH_AFTER_S``, the step's lease), long before a
visibility timeout would. Acks stay (in memory, per channel), so prefetch still
bounds what a worker takes; a warm shutdown still puts the messages a worker reserved
but never started back on their queue (kombu's ``restore_unacked_once``); a message a
killed worker held is lost, as Redis may lose any.

kombu 5.7 builds a new ``redis.Redis`` around the channel's connection pool for every
publish, ack and restore (``Channel.conn_or_acquire``); redis-py 8 spends about 120 us
of CPU constructing one (argument checks, a copy of its response callbacks). Profiled
in the bench that was 3.6% of a worker's CPU, about thirty clients per run, and the
API pays it for every task it sends. A ``redis.Redis`` is safe to share between
threads (each command takes a pooled connection; pipelines are made per use), so the
channel keeps one per connection pool and makes a new one when kombu replaces the
pool (after a connection error).

It also closes one race kombu leaves open: when a broker restart tears a worker's
connection down, the transport can lose its client before a channel closes, and the
channel's close (which gives its unacked messages back) then builds a pool from the
missing client and dies with an ``AttributeError`` that Celery reports as an
unrecoverable error, killing the worker. Here that state raises a Redis
``ConnectionError`` instead, which kombu's close swallows as a connection error; the
messages it could not put back are the reconciler's, as lost ones are.
Everything else is kombu's own transport.

:func:`install` points kombu's ``redis``/``rediss`` aliases here, so a broker URL keeps
its scheme: Flower's broker page, the worker banner and ``as_uri()`` still say redis.
"""

from __future__ import annotations

import threading
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class InMemoryQoS(virtual.QoS):
    """kombu's in-memory acks (its ``restore_visible`` does nothing: there is nothing
    in Redis to restore), except that a requeue of a message the channel no longer
    holds requeues nothing: after a reconnect gave a channel's deliveries back, a
    prefork child that died then (``reject_on_worker_lost``) made kombu's own raise
    ``KeyError`` past Celery's handler (kombu's Redis QoS ignored it)."""

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        super().reject(delivery_tag, requeue=requeue and delivery_tag in self._delivered)  # type: ignore[no-untyped-call]


class Channel(kombu_redis.Channel):
    ack_emulation = False  # see the module's docstring; a transport option may turn it on
    _shared_client: tuple[Any, Any] | None = None  # (the pool, its client)
    _shared_lock = threading.Lock()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        if not self.ack_emulation:  # (kombu's __init__ set virtual.QoS, see InMemoryQoS)
            self.QoS = InMemoryQoS  # type: ignore[assignment]

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the event loop's client: kombu already keeps one
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        pool = self.pool
        shared = self._shared_client
        if shared is not None and shared[0] is pool:
            return shared[1]
        with self._shared_lock:
            shared = self._shared_client
            if shared is None or shared[0] is not pool:
                shared = (pool, super()._create_client())  # type: ignore[no-untyped-call]
                self._shared_client = shared
            return shared[1]

    def _connparams(self, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport is None or getattr(transport, "client", None) is None:
            raise RedisConnectionError(
                "this channel's connection is closed: no new Redis pool for it"
            )
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
KOMBUS_OWN = "kombu.transport.redis:Transport"


def install() -> None:
    """Resolve ``redis://`` and ``rediss://`` to this transport in this process (an alias
    someone else changed is left alone). Call it before the first connection: kombu
    caches a resolved alias, and a process that resolved it earlier keeps kombu's own
    (the same behaviour, without the saving)."""
    for scheme in ("redis", "rediss"):
        if TRANSPORT_ALIASES.get(scheme) == KOMBUS_OWN:
            TRANSPORT_ALIASES[scheme] = TRANSPORT
