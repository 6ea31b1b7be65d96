"""shared.redis_transport: kombu's Redis transport with one client per channel pool.

On the test session's own Redis (the ``redis_url`` fixture), through the Celery app
both services build.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from kombu import Connection
from kombu.simple import SimpleQueue
from kombu.transport import TRANSPORT_ALIASES

from shared import redis_transport
from shared.config import Settings
from shared.queue import QUEUE, make_celery, send_run_task

pytestmark = pytest.mark.integration


@pytest.fixture
def celery(redis_url: str, database_url: str) -> Iterator[Celery]:
    app = make_celery(Settings(database_url=database_url, redis_url=redis_url))
    yield app
    app.close()


@pytest.fixture
def connection(celery: Celery) -> Iterator[Connection]:
    with celery.connection_for_write() as conn:
        yield conn


def test_the_kodo_app_speaks_redis_through_the_shared_client_transport(
    connection: Connection, redis_url: str
) -> None:
    assert isinstance(connection.transport, redis_transport.Transport)
    assert connection.as_uri().startswith("redis://")
    assert connection.as_uri().endswith(redis_url.rpartition("/")[2])  # the URL's db


def test_messages_still_travel_and_are_acked(connection: Connection) -> None:
    with connection.SimpleQueue("kodo-transport-test") as queue:
        queue.put({"n": 1})
        queue.put({"n": 2})
        got = [queue.get(timeout=5), queue.get(timeout=5)]
        assert [m.payload for m in got] == [{"n": 1}, {"n": 2}]
        for message in got:
            message.ack()
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.2)


def test_a_channel_reuses_one_client_until_its_pool_is_replaced(connection: Connection) -> None:
    channel = connection.default_channel
    with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
        assert first is second
        assert first.connection_pool is channel.pool
    channel._disconnect_pools()  # what kombu does after a connection error
    with channel.conn_or_acquire() as fresh:
        assert fresh is not first
        assert fresh.connection_pool is channel.pool
        assert fresh.ping()


def test_redis_keeps_no_copy_of_a_delivered_message(connection: Connection, redis_url: str) -> None:
    """Acks live in the worker's memory: Redis is a transport that may lose messages,
    and a lost step is re-sent from Postgres, so no unacked hash is written per
    delivery and deleted per ack. Prefetch still counts the unacked."""
    channel = connection.default_channel
    assert isinstance(channel.qos, redis_transport.InMemoryQoS)
    channel.basic_qos(0, 1, False)  # a worker's prefetch: one unacked message at a time
    plain = redis.Redis.from_url(redis_url)
    try:
        with connection.SimpleQueue("kodo-transport-nocopy") as queue:
            queue.put({"n": 1})
            message = queue.get(timeout=5)
            assert not channel.qos.can_consume()
            assert not plain.exists(channel.unacked_key, channel.unacked_index_key)
            message.ack()
            assert channel.qos.can_consume()
        assert channel.qos.restore_visible() is None  # the event loop's call: nothing to do
    finally:
        plain.delete("kodo-transport-nocopy")
        plain.close()


def test_requeueing_a_message_the_channel_gave_back_already_is_a_no_op(
    connection: Connection, redis_url: str
) -> None:
    """A reconnect restored the channel's deliveries, then a prefork child died holding
    one (``reject_on_worker_lost``): nothing is queued twice, nothing raises."""
    channel = connection.default_channel
    plain = redis.Redis.from_url(redis_url)
    try:
        with connection.SimpleQueue("kodo-transport-requeue") as queue:
            queue.put({"n": 1})
            message = queue.get(timeout=5)
            channel.qos.restore_unacked_once()  # what a reconnect does
            assert plain.llen("kodo-transport-requeue") == 1

            channel.basic_reject(message.delivery_tag, requeue=True)

            assert plain.llen("kodo-transport-requeue") == 1
    finally:
        plain.delete("kodo-transport-requeue")
        plain.close()


def test_a_closing_channel_puts_what_it_reserved_back_on_its_queue(
    celery: Celery, redis_url: str
) -> None:
    """A warm shutdown: a message taken but never run goes back for another worker."""
    conn = celery.connection_for_write()
    channel = conn.channel()
    queue = SimpleQueue(channel, "kodo-transport-reserved")
    plain = redis.Redis.from_url(redis_url)
    try:
        queue.put({"n": 1})
        queue.get(timeout=5)
        assert plain.llen("kodo-transport-reserved") == 0
        channel.close()
        assert plain.llen("kodo-transport-reserved") == 1
        with (
            celery.connection_for_write() as again,
            again.SimpleQueue("kodo-transport-reserved") as fresh,
        ):
            assert fresh.get(timeout=5).payload == {"n": 1}
    finally:
        conn.release()
        plain.delete("kodo-transport-reserved")
        plain.close()


def test_a_channel_closed_after_its_connection_closes_quietly(celery: Celery) -> None:
    """The order a broker restart's teardown can take: the transport loses its client,
    then a channel holding an unacked message closes. kombu's own transport raised an
    AttributeError there, which killed the worker as an unrecoverable error; here the
    message cannot go back to Redis and is left to the reconciler, as a lost one is."""
    conn = celery.connection_for_write()
    channel = conn.channel()
    queue = SimpleQueue(channel, "kodo-transport-teardown")
    queue.put({"n": 1})
    message = queue.get(timeout=5)
    assert message.delivery_tag in channel.qos._delivered
    conn._do_close_transport()

    conn.maybe_close_channel(channel)  # a connection error, swallowed as kombu intends

    assert channel.closed


def test_an_alias_changed_by_someone_else_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TRANSPORT_ALIASES, "redis", "elsewhere:Transport")
    monkeypatch.setitem(TRANSPORT_ALIASES, "rediss", redis_transport.KOMBUS_OWN)
    redis_transport.install()
    assert TRANSPORT_ALIASES["redis"] == "elsewhere:Transport"
    assert TRANSPORT_ALIASES["rediss"] == redis_transport.TRANSPORT


def test_a_runs_task_is_pushed_onto_the_kodo_list_without_declaring_anything(
    celery: Celery, redis_url: str
) -> None:
    """Publishing needs no declaration: the anonymous exchange pushes onto the queue's
    list, which a worker that never declared anything (here: none started) still finds."""
    client = redis.Redis.from_url(redis_url)
    client.delete(QUEUE, *client.keys("_kombu.binding.*"))
    try:
        send_run_task(celery, "kodo.CompileST", "run-without-declaration")

        assert client.keys("_kombu.binding.*") == [], "nothing was declared"
        assert client.llen(QUEUE) == 1
        with celery.connection_for_read() as conn, conn.SimpleQueue(QUEUE) as queue:
            message = queue.get(timeout=5)
            assert message.headers["task"] == "kodo.CompileST"
            assert message.headers["root_id"] == "run-without-declaration"
            message.ack()
    finally:
        client.delete(QUEUE)
        client.close()
