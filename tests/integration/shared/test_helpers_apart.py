"""A signal to the worker's process group (``kodo down``, keepalive) starts its warm
shutdown and must not kill the helper program a step is running: git then finishes,
and the step ends as it would have, instead of recording the killed git as its failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]

# Stands in for git: the call the test watches says it started (its last argument
# names a file to create), then takes a second; any other call (the config listing
# run_git makes first) answers at once with nothing.
FAKE_GIT = """#!/bin/sh
for last; do :; done
case "$last" in
  *.started) touch "$last"; sleep 1; echo finished ;;
  *) exit 0 ;;
esac
"""

# Stands in for a worker: its own process group, and SIGTERM only noted (Celery's warm
# shutdown lets the running task end); the step's git call goes through run_git.
WORKER = """
import os, signal, sys
if sys.argv[4] == "gevent":
    from gevent import monkey
    monkey.patch_all(ssl=False)
from pathlib import Path
os.environ["PATH"] = sys.argv[1] + os.pathsep + os.environ["PATH"]
signal.signal(signal.SIGTERM, lambda *_: print("warm shutdown", flush=True))
from shared.gitcmd import run_git
done = run_git(Path(sys.argv[2]), ["log", sys.argv[3]])
print("git", done.returncode, done.stdout.decode().strip(), flush=True)
"""


@pytest.mark.parametrize("process", ["worker", "gevent"])
def test_a_sigterm_to_the_workers_group_lets_the_steps_git_call_finish(
    tmp_path: Path, process: str
) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text(FAKE_GIT)
    (fake / "git").chmod(0o755)
    repo = tmp_path / "repo"
    repo.mkdir()
    started = tmp_path / "call.started"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(fake), str(repo), str(started), process],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # as devstack spawns every process
    )
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "the git call never started"
            time.sleep(0.01)

        os.killpg(worker.pid, signal.SIGTERM)  # what kodo down sends
        out, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    said = out.decode().splitlines()
    assert said == ["warm shutdown", "git 0 finished"], (said, err.decode()[-2000:])


def test_a_timeout_kills_what_the_helper_started_too(tmp_path: Path) -> None:
    """``subprocess.run`` kills the direct child only: a background job it started (a
    delivery remote's hook, ``git gc``'s ``pack-objects``) lived on, holding the pipes."""
    from shared.apart import run_apart

    pid_file = tmp_path / "job.pid"
    began = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_apart(
            ["sh", "-c", f"sleep 300 & echo $! > {pid_file}; wait"],
            capture_output=True,
            timeout=1,
        )
    assert time.monotonic() - began < 5
    job = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{job}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{job}").exists(), "the background job was killed with its group"


def test_it_answers_as_subprocess_run_does() -> None:
    from shared.apart import run_apart

    done = run_apart(["sh", "-c", "cat; echo err >&2; exit 3"], input=b"in", capture_output=True)
    assert (done.returncode, done.stdout, done.stderr) == (3, b"in", b"err\n")
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_apart(["sh", "-c", "exit 4"], check=True)
    assert failed.value.returncode == 4
