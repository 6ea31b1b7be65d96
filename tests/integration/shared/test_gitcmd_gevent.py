"""``run_git`` feeds stdin in a gevent-patched process too (oc-compat's build agent
applies its edits with ``git apply -`` there): gevent's ``subprocess.run`` refuses a
``stdin`` keyword beside ``input``, so the call must name only one of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROGRAM = """
from gevent import monkey

monkey.patch_all(ssl=False)
import sys
from pathlib import Path

from shared.gitcmd import run_git

repo = Path(sys.argv[1])
fed = run_git(repo, ["hash-object", "--stdin"], stdin=b"hello\\n")
unfed = run_git(repo, ["rev-parse", "--is-inside-work-tree"])
print(fed.returncode, fed.stdout.decode().strip(), unfed.stdout.decode().strip())
"""


def test_run_git_feeds_stdin_in_a_gevent_patched_process(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # the blob id of "hello\n", as `git hash-object` computes it anywhere
    assert done.stdout.split() == ["0", "ce013625030ba8dba906f756967f9e9ca394464a", "true"]


SPAWNING = """
from gevent import monkey

monkey.patch_all(ssl=False)
import json
import os
import subprocess
import sys
from pathlib import Path

import gevent

from shared import cospawn
from shared.gitcmd import run_git

forks = []
os.register_at_fork(before=lambda: forks.append(1))  # posix_spawn never forks this process
repo = Path(sys.argv[1])
env = {"PATH": os.environ["PATH"]}
big = os.urandom(300_000).hex().encode()  # far more than a pipe holds, in and out
ticks = []
ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(1000)])
echoed = cospawn.run(["sh", "-c", "cat; cat >&2 </dev/null; printf %s \\"$X\\" >&2; exit 3"],
                     env={**env, "X": "x"}, stdin=big, timeout_s=30)
both = cospawn.run(["sh", "-c", "head -c 200000 /dev/zero; head -c 200000 /dev/zero >&2"],
                   env=env, stdin=None, timeout_s=30)
killed = cospawn.run(["sh", "-c", "kill -9 $$"], env=env, stdin=None, timeout_s=30)
try:
    cospawn.run(["sleep", "30"], env=env, stdin=None, timeout_s=0.3)
    timed_out = False
except subprocess.TimeoutExpired:
    timed_out = True
try:
    cospawn.run(["no-such-program-kodo"], env=env, stdin=None, timeout_s=5)
    missing = "ran"
except FileNotFoundError:
    missing = "FileNotFoundError"
try:
    run_git(repo / "gone", ["rev-parse", "HEAD"])
    gone = "ran"
except OSError:
    gone = "OSError"
hashed = run_git(repo, ["hash-object", "--stdin"], stdin=b"hello\\n")
failed = run_git(repo, ["rev-parse", "--verify", "--quiet", "no-such-ref"])


def many(i):
    data = f"greenlet {i}\\n".encode()
    return [run_git(repo, ["hash-object", "--stdin"], stdin=data).stdout for _ in range(10)]


crowd = [gevent.spawn(many, i) for i in range(40)]
gevent.joinall(crowd, timeout=120, raise_error=True)
expected = [
    subprocess.run(["git", "hash-object", "--stdin"], input=f"greenlet {i}\\n".encode(),
                   capture_output=True, check=True).stdout
    for i in range(40)
]
concurrent = [g.value == [expected[i]] * 10 for i, g in enumerate(crowd)]
ticker.kill()


def state_and_parent(pid):
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[:2]
    except OSError:  # it exited between the listing and the read (another test's, say)
        return None


zombies = [
    pid for pid in os.listdir("/proc") if pid.isdigit()
    and state_and_parent(pid) == ["Z", str(os.getpid())]
]
print(json.dumps({
    "cooperative": cospawn.cooperative(),
    "echoed": [echoed.returncode, echoed.stdout == big, echoed.stderr == b"x"],
    "both": [both.returncode, len(both.stdout), len(both.stderr)],
    "killed": killed.returncode,
    "timed_out": timed_out,
    "missing": missing,
    "gone": gone,
    "hashed": [hashed.returncode, hashed.stdout.decode().strip()],
    "failed": failed.returncode,
    "concurrent": all(concurrent) and len(concurrent) == 40,
    "forks": len(forks) - 40,  # the 40 plain subprocess.run calls above fork (gevent's)
    "zombies": zombies,
    "loop_ran_meanwhile": len(ticks) > 0,
}))
"""


def test_a_gevent_patched_process_spawns_git_without_forking_itself(tmp_path: Path) -> None:
    """The API's git runs through posix_spawn: exit codes, signals, both pipes past their
    buffers, stdin, the timeout (the child killed and reaped) and a missing program or
    directory all behave as with subprocess.run; the event loop keeps running meanwhile,
    and 40 greenlets running git at once each get their own answers."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    done = subprocess.run(
        [sys.executable, "-c", SPAWNING, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {
        "cooperative": True,
        "echoed": [3, True, True],
        "both": [0, 200000, 200000],
        "killed": -9,
        "timed_out": True,
        "missing": "FileNotFoundError",
        "gone": "OSError",
        "hashed": [0, "ce013625030ba8dba906f756967f9e9ca394464a"],
        "failed": 1,
        "concurrent": True,
        "forks": 0,
        "zombies": [],
        "loop_ran_meanwhile": True,
    }
