"""A server that accepts a connection and never answers (paused, failed over, a NAT or
firewall that forgot the connection) ends a kodo call with an error, never holds it.

Each server here is a real listening socket on loopback that takes connections and
says nothing: Redis as the broker, Postgres at connect. The liveness bound each test
waits (60 s) is far above the call's own bound and only keeps a regression from
hanging the suite; it measures nothing.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import OperationalError

from shared.config import Settings
from shared.db.engine import CONNECTION_BOUNDS, bounded_url, make_engine
from shared.db.events import conninfo_of
from shared.domain.run_machine import StepId
from shared.queue import make_celery, send_step

pytestmark = pytest.mark.integration

LIVENESS_S = 60.0


@contextmanager
def silent_server() -> Iterator[int]:
    """A loopback port whose server accepts every connection and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for conn in held:
            conn.close()


def outcome_of(call: Callable[[], object]) -> BaseException | None:
    """What ``call`` raised (None: it returned), run in a thread that must end."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # the outcome under test
            raised.append(exc)
        else:
            raised.append(None)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(LIVENESS_S)
    assert not worker.is_alive(), "the call is still waiting on a server that never answers"
    return raised[0]


def test_a_send_to_a_broker_that_never_answers_fails_and_is_left_to_the_rows() -> None:
    """The sender (beat, a collector, a worker after its commit, an API request) gets an
    error to log; the watcher and the reconciler re-send from Postgres."""
    with silent_server() as port:
        settings = replace(Settings.from_env(), redis_url=f"redis://127.0.0.1:{port}/0")
        app = make_celery(settings)
        raised = outcome_of(lambda: send_step(app, StepId.COMPILE, "run-1"))
    assert raised is not None, "nothing can have been sent"
    assert "Timeout" in f"{type(raised).__name__}: {raised}"


def test_connecting_to_a_database_that_never_answers_fails() -> None:
    with silent_server() as port:
        engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/kodo")
        try:
            raised = outcome_of(lambda: engine.connect().close())
        finally:
            engine.dispose()
    assert isinstance(raised, OperationalError)
    assert "timeout" in str(raised).lower()


def test_every_kodo_connection_finds_a_vanished_server_by_keepalive(database_url: str) -> None:
    """A half-open connection gets no error from the server's statement timeout: TCP
    keepalives and tcp_user_timeout end it, on the pools' and the LISTEN hub's alike."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            used = dbapi.info.get_parameters()  # what libpq was given beyond its defaults
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
    for name, value in CONNECTION_BOUNDS.items():
        assert used.get(name) == value, name
        assert f"{name}={value}" in conninfo_of(database_url)


def test_an_operators_own_bound_wins() -> None:
    url = bounded_url("postgresql+psycopg://kodo@db.example/kodo?connect_timeout=20")
    assert url.query["connect_timeout"] == "20"
    assert url.query["keepalives_idle"] == CONNECTION_BOUNDS["keepalives_idle"]
    assert make_url(str(url)).database == "kodo"
