"""devstack against real servers: reuse the live ones, start and stop private ones."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from click.testing import CliRunner

from devstack import binaries, pgurl, redis_server, state, supervisor
from devstack.cli import stack
from devstack.database import ensure_database, migrate, recreate_database
from devstack.handle import DevstackError, StackPaths
from devstack.postgres_server import ensure_postgres
from devstack.redis_server import ensure_redis
from devstack.stack import down, status, stopped
from shared.config import Settings

pytestmark = pytest.mark.integration

LIVE = Settings.from_env()


@pytest.fixture
def home() -> Iterator[Path]:
    """A stack home the unprivileged Postgres user can enter (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="kodo-devstack-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        down(home=path, grace_s=5.0)
        shutil.rmtree(path, ignore_errors=True)


def _ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def _select_one(url: str) -> int:
    with psycopg.connect(pgurl.conninfo(url, dbname="postgres")) as conn:
        row = conn.execute("select 1").fetchone()
    assert row is not None
    value = row[0]
    assert isinstance(value, int)
    return value


@pytest.fixture
def scratch_db() -> Iterator[str]:
    """A uniquely named database on the live server, dropped afterwards."""
    url = pgurl.with_database(LIVE.database_url, f"kodo_devstack_{uuid.uuid4().hex[:10]}")
    yield url
    with psycopg.connect(pgurl.conninfo(url, dbname="postgres"), autocommit=True) as conn:
        name = pgurl.database_of(url)
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_live_servers_are_reused_and_nothing_is_started(home: Path) -> None:
    pg = ensure_postgres(LIVE.database_url, home=home)
    rd = ensure_redis(LIVE.redis_url, home=home)

    assert (pg.kind, pg.url, pg.pid) == ("reused", LIVE.database_url, None)
    assert (rd.kind, rd.url, rd.pid) == ("reused", LIVE.redis_url, None)
    assert pg.describe() == f"postgres: reused {LIVE.database_url}"
    assert state.load(StackPaths(home)) == []
    assert down(home=home) == []


def test_private_redis_starts_answers_and_stops(home: Path) -> None:
    port = supervisor.free_port()
    url = f"redis://127.0.0.1:{port}/0"

    started = ensure_redis(url, home=home)
    assert started.kind == "started"
    assert started.url == url  # the requested port was free, so it was used
    assert started.pid is not None
    assert started.binary is not None
    assert started.describe() == f"redis: started {url} (pid {started.pid}, {started.binary})"
    assert _ping(url)

    again = ensure_redis(url, home=home)
    assert (again.kind, again.pid) == ("kept", started.pid)

    [entry] = status(home=home)
    assert (entry.handle.pid, entry.running, entry.answering) == (started.pid, True, True)

    assert [h.pid for h in down(home=home)] == [started.pid]
    assert not supervisor.alive(started.pid)
    assert _ping(LIVE.redis_url), "the reused server must be untouched"
    assert state.load(StackPaths(home)) == []


def test_a_server_kept_stopped_for_a_block_comes_back_recorded_so_down_stops_it(
    home: Path,
) -> None:
    started = ensure_redis(f"redis://127.0.0.1:{supervisor.free_port()}/0", home=home)
    assert started.pid is not None

    with stopped(started, home=home, grace_s=5.0, timeout_s=20):
        assert not supervisor.alive(started.pid)
        assert not redis_server.answers(started.url)

    [back] = state.load(StackPaths(home))
    assert back.url == started.url
    assert back.pid not in (None, started.pid)
    assert _ping(started.url)
    assert [h.pid for h in down(home=home)] == [back.pid]
    assert back.pid is not None
    assert not supervisor.alive(back.pid)


def test_a_handle_kept_across_a_stop_reaches_the_server_running_now(home: Path) -> None:
    """The handle a caller keeps names the pid it was started with; a second ``stopped``
    must still stop the server that runs now, and leave exactly one behind for ``down``."""
    started = ensure_redis(f"redis://127.0.0.1:{supervisor.free_port()}/0", home=home)
    with stopped(started, home=home, grace_s=5.0, timeout_s=20):
        pass
    [first_back] = state.load(StackPaths(home))
    assert first_back.pid is not None

    with stopped(started, home=home, grace_s=5.0, timeout_s=20):
        assert not supervisor.alive(first_back.pid)
        assert not redis_server.answers(started.url)

    [second_back] = state.load(StackPaths(home))
    assert second_back.pid not in (None, started.pid, first_back.pid)
    assert [h.pid for h in down(home=home)] == [second_back.pid]
    assert not redis_server.answers(started.url)


def test_a_server_not_in_the_state_file_is_refused(home: Path) -> None:
    started = ensure_redis(f"redis://127.0.0.1:{supervisor.free_port()}/0", home=home)
    down(home=home)
    with (
        pytest.raises(DevstackError, match="only a Postgres or Redis we started"),
        stopped(started, home=home),
    ):
        pass


def test_a_server_kept_stopped_comes_back_even_when_the_block_raises(home: Path) -> None:
    started = ensure_redis(f"redis://127.0.0.1:{supervisor.free_port()}/0", home=home)

    with (
        pytest.raises(RuntimeError, match="the body failed"),
        stopped(started, home=home, grace_s=5.0, timeout_s=20),
    ):
        raise RuntimeError("the body failed")

    assert _ping(started.url)
    assert [h.url for h in state.load(StackPaths(home))] == [started.url]


def test_a_recorded_pid_started_at_another_time_is_never_signalled(home: Path) -> None:
    url = f"redis://127.0.0.1:{supervisor.free_port()}/0"
    started = ensure_redis(url, home=home)
    assert started.pid is not None
    assert started.start_ticks == supervisor.start_ticks(started.pid)
    saved = json.loads(StackPaths(home).state_file.read_text())
    assert [e["start_ticks"] for e in saved["services"]] == [started.start_ticks]
    # Pretend the pid was reused: the recorded start time no longer matches.
    saved["services"][0]["start_ticks"] = (started.start_ticks or 0) + 1
    StackPaths(home).state_file.write_text(json.dumps(saved))
    try:
        [entry] = status(home=home)
        assert (entry.running, entry.answering) == (False, False)
        down(home=home)
        assert supervisor.alive(started.pid, started.start_ticks), "someone else's: left alone"
        assert _ping(url)
    finally:
        supervisor.stop(started.pid, group=False)


def test_state_file_records_only_what_was_started(home: Path) -> None:
    ensure_redis(LIVE.redis_url, home=home)
    private = ensure_redis(f"redis://127.0.0.1:{supervisor.free_port()}/0", home=home)

    saved = json.loads(StackPaths(home).state_file.read_text())
    assert [(e["name"], e["pid"], e["url"]) for e in saved["services"]] == [
        ("redis", private.pid, private.url)
    ]


def test_busy_port_that_is_not_redis_gets_a_private_server_elsewhere(home: Path) -> None:
    # The live Postgres port is taken but speaks no Redis: reuse must fail, start must move.
    pg_port = pgurl.parse(LIVE.database_url).port or 5432
    handle = ensure_redis(f"redis://127.0.0.1:{pg_port}/0", home=home)
    assert handle.kind == "started"
    assert f":{pg_port}/" not in handle.url
    assert _ping(handle.url)


@pytest.mark.timeout(90)
@pytest.mark.skipif(binaries.system_postgres_dir() is None, reason="no system Postgres binaries")
def test_private_postgres_from_system_binaries(home: Path) -> None:
    port = supervisor.free_port()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/kodo"

    started = ensure_postgres(url, home=home, install_missing=False)
    assert (started.kind, started.url) == ("started", url)
    assert started.pid is not None
    assert _select_one(url) == 1
    assert ensure_database(url) is True
    assert ensure_database(url) is False
    if os.geteuid() == 0:
        data_dir = Path(str(started.data_dir))
        assert data_dir.stat().st_uid != 0, "Postgres must run unprivileged"

    assert ensure_postgres(url, home=home).kind == "kept"
    down(home=home)
    assert not supervisor.alive(started.pid)
    assert not pgurl.answers(url, timeout_s=1.0)
    assert _select_one(LIVE.database_url) == 1, "the reused server must be untouched"


def test_ensure_database_creates_a_missing_database(scratch_db: str) -> None:
    name = pgurl.database_of(scratch_db)
    assert ensure_database(scratch_db) is True
    assert ensure_database(scratch_db) is False
    with psycopg.connect(pgurl.conninfo(scratch_db)) as conn:
        row = conn.execute("select current_database()").fetchone()
    assert row == (name,)


def test_recreate_database_gives_an_empty_migrated_database(scratch_db: str) -> None:
    ensure_database(scratch_db)
    with psycopg.connect(pgurl.conninfo(scratch_db), autocommit=True) as conn:
        conn.execute("create table leftover (id int)")

    recreate_database(scratch_db)
    migrate(scratch_db)

    with psycopg.connect(pgurl.conninfo(scratch_db)) as conn:
        tables = {r[0] for r in conn.execute("select table_name from information_schema.tables")}
        head = conn.execute("select version_num from app.alembic_version").fetchone()
    assert "leftover" not in tables
    assert "runs" in tables
    assert head is not None


def test_recreate_refuses_the_maintenance_database() -> None:
    with pytest.raises(DevstackError, match="refusing"):
        recreate_database(pgurl.with_database(LIVE.database_url, "postgres"))


def test_unreachable_remote_host_is_not_substituted(home: Path) -> None:
    with pytest.raises(DevstackError, match="not local"):
        ensure_redis("redis://192.0.2.1:6379/0", home=home)  # TEST-NET-1: never routable


def test_cli_up_env_prints_exports_and_migrates(home: Path, scratch_db: str) -> None:
    env = {"DATABASE_URL": scratch_db, "REDIS_URL": LIVE.redis_url}
    result = CliRunner().invoke(stack, ["up", "--env", "--home", str(home)], env=env)

    assert result.exit_code == 0, result.output
    assert f"export DATABASE_URL={scratch_db}" in result.stdout.splitlines()
    assert f"export REDIS_URL={LIVE.redis_url}" in result.stdout.splitlines()
    assert f"postgres: reused {scratch_db}" in result.stderr
    with psycopg.connect(pgurl.conninfo(scratch_db)) as conn:
        assert conn.execute("select 1 from app.alembic_version").fetchone() == (1,)
