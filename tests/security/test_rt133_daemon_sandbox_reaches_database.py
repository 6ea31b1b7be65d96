"""Red-team helper-133: the OpenCode daemon's sandbox reaches kodo's database and broker.

``kodo oc up`` confines ``opencode serve`` with bubblewrap, hiding kodo's state (``.kodo``:
``up.json`` names the database) so that an escaped tool call cannot learn where kodo's
Postgres and Redis are or how to log in. But the sandbox shares the host's network (the
daemon must reach its LLM), and the Postgres and Redis that ``kodo up`` starts for itself
need no credential at all: Postgres is ``initdb -A trust`` on 127.0.0.1 and Redis has no
password. Hiding the URL hides nothing: the port is the one asked for (5432/6379 by
default) or found by a connect scan of loopback, and the superuser is named ``postgres``.

A shell started by the very argv that runs the daemon (same binds, same allowlisted
environment: what an escaped tool call gets) logs into kodo's Postgres as the superuser and
pushes to kodo's Celery queue.

The safe outcome: from inside the daemon's sandbox, kodo's own Postgres and Redis refuse
the session (a password the sandbox cannot read, or no route to them at all).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import pgurl
from devstack.oc_daemon import daemon, sandbox
from devstack.postgres_server import ensure_postgres
from devstack.redis_server import ensure_redis
from devstack.stack import down
from devstack.supervisor import free_port

pytestmark = pytest.mark.security

PASSWORD = "rt133-daemon-pass"  # noqa: S105 - the daemon's basic auth, made up

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


@pytest.fixture
def kodo_home() -> Iterator[Path]:
    """``.kodo`` as ``kodo up`` makes it, with its private Postgres and Redis."""
    path = Path(tempfile.mkdtemp(prefix="kodo-rt133-home-"))
    path.chmod(0o755)  # Postgres (run as `postgres` when kodo is root) must enter it
    try:
        yield path
    finally:
        down(home=path, grace_s=5.0)
        shutil.rmtree(path, ignore_errors=True)


def _in_daemon_sandbox(tmp_path: Path, kodo_home: Path, script: str) -> str:
    state = tmp_path / "oc"
    home = state / "home"
    home.mkdir(parents=True)
    config = state / "opencode.global.json"
    config.write_text("{}")
    binary = tmp_path / "opencode"
    binary.write_text("")
    box = sandbox.DaemonSandbox(
        bwrap=sandbox.find_bwrap(),
        binary=binary,
        home=home,
        config=config,
        workspaces=tmp_path / "workspaces",
        hidden=(kodo_home, state),
    )
    box.workspaces.mkdir()
    env = daemon.daemon_env(os.environ, home=home, config_path=config, password=PASSWORD)
    argv = sandbox.sandboxed(box, ["/bin/sh", "-c", script])
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    return done.stdout + done.stderr


@pytest.mark.xfail(
    strict=True,
    reason=(
        "open (session 61): the daemon's sandbox shares the host's network, and kodo's "
        "private stores take any loopback client"
    ),
)
@needs_bwrap
def test_daemon_sandbox_cannot_log_into_kodos_private_postgres(
    tmp_path: Path, kodo_home: Path
) -> None:
    pg = ensure_postgres(
        f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres", home=kodo_home
    )
    assert pg.kind == "started"
    port = pgurl.parse(pg.url).port
    sql = "select 'IN-AS-' || current_user || '-super=' || rolsuper from pg_roles"
    sql += " where rolname = current_user"
    said = _in_daemon_sandbox(
        tmp_path,
        kodo_home,
        f'psql -w -X -At -h 127.0.0.1 -p {port} -U postgres -d postgres -c "{sql}"',
    )
    assert "IN-AS-" not in said, f"from the daemon's sandbox: {said!r}"


@pytest.mark.xfail(
    strict=True,
    reason=(
        "open (session 61): the daemon's sandbox shares the host's network, and kodo's "
        "private stores take any loopback client"
    ),
)
@needs_bwrap
def test_daemon_sandbox_cannot_write_to_kodos_private_broker(
    tmp_path: Path, kodo_home: Path
) -> None:
    rd = ensure_redis(f"redis://127.0.0.1:{free_port()}/0", home=kodo_home)
    assert rd.kind == "started"
    port = rd.url.rsplit(":", 1)[1].split("/")[0]
    said = _in_daemon_sandbox(
        tmp_path, kodo_home, f"redis-cli -h 127.0.0.1 -p {port} lpush kodo forged-step"
    )
    assert said.strip() != "1", f"from the daemon's sandbox: {said!r}"
