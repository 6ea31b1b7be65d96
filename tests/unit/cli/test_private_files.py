"""kodo's state and log files are readable by their owner only, whatever the umask."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.kodo_procs import Stack
from devstack.supervisor import private_log
from services.cli import upstate


@pytest.fixture(autouse=True)
def generous_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def state() -> upstate.UpState:
    return upstate.UpState(
        api_url="http://127.0.0.1:8000",
        oc_url="http://127.0.0.1:4096",
        flower_url="http://127.0.0.1:5555",
        database_url="postgresql+psycopg://kodo:s3cret@127.0.0.1:5432/kodo",
        redis_url="redis://127.0.0.1:6379/0",
        log_dir="/srv/kodo/logs",
        procs=[upstate.ProcEntry("api", 1, "/srv/kodo/logs/api.log")],
    )


def test_up_json_is_written_0600_and_read_back(tmp_path: Path) -> None:
    path = upstate.save(state(), tmp_path)
    assert mode(path) == 0o600
    assert upstate.load(tmp_path) == state()


def test_up_json_stays_0600_when_rewritten_over_a_looser_leftover(tmp_path: Path) -> None:
    (tmp_path / "up.json.tmp").write_text("junk")
    (tmp_path / "up.json.tmp").chmod(0o644)
    upstate.save(state(), tmp_path)
    path = upstate.save(state(), tmp_path)
    assert mode(path) == 0o600
    assert not (tmp_path / "up.json.tmp").exists()


def test_a_log_file_is_created_0600_and_an_old_one_is_tightened(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.log"
    with private_log(fresh) as log:
        log.write(b"one\n")
    old = tmp_path / "old.log"
    old.write_text("before\n")
    old.chmod(0o644)
    with private_log(old) as log:
        log.write(b"after\n")
    assert (mode(fresh), mode(old)) == (0o600, 0o600)
    assert old.read_text() == "before\nafter\n", "appended, never truncated"


def test_kodo_process_logs_are_private(tmp_path: Path) -> None:
    stack = Stack(env=dict(os.environ), log_dir=tmp_path / "logs")
    proc = stack.start("echo", [sys.executable, "-c", "print('hello')"])
    proc.popen.wait(10)
    assert mode(proc.log_path) == 0o600
    assert mode(tmp_path / "logs") == 0o700
    assert proc.log_path.read_text() == "hello\n"
