"""Red-team helper-133: an approver's bearer token is put on the command line.

The README's approver workflow is ``kodo run approve RUN_ID --token $APPROVER_TOKEN``
(``--token`` on every command; the CLI's own approve hint names ``--token
APPROVER_TOKEN``). A value on argv is in ``/proc/<pid>/cmdline``, which every local
account reads (``ps -ef``), for the command's whole life: the approve prompt waits for
the person's y/N, ``kodo run watch --follow`` lasts as long as the run. kodo keeps its
other secrets off argv for exactly this reason (``FLOWER_BASIC_AUTH``, ``kodo oc serve``'s
``OC_PASSWORD``: "never an argument"). An approver's token read this way approves any
run in that approver's name: the human gate, passed by whoever was logged in.

The spec starts the documented command against an API that accepts the connection and
never answers (the command stays up, as it does while it asks) and, once the command has
connected (it is past its start-up: a command that refuses the argument never gets
there), has another uid read its command line.

The safe outcome: no form of a kodo command puts a token where another uid can read it
(the token comes from ``KODO_API_TOKEN``, a 0600 file or a prompt; an argument holding one
is refused before anything is sent).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.security

OTHER_UID = 65533
TOKEN = "kodo_rt133approvertokenAAAAAAAAAAAAAAAAAAAAAA"  # noqa: S105 - made up
RUN = "00000000-0000-0000-0000-000000000000"
KODO = Path(sys.executable).parent / "kodo"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="becomes another uid with setpriv")


@pytest.fixture
def silent_api() -> Iterator[socket.socket]:
    """An API that takes the connection and says nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.settimeout(0.1)
        yield sock


def cmdline_as_other_user(pid: int) -> str:
    prefix = ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups"]
    done = subprocess.run(
        [*prefix, "cat", f"/proc/{pid}/cmdline"],
        capture_output=True,
        timeout=10,
        check=False,
        cwd="/",
    )
    return done.stdout.decode(errors="replace").replace("\0", " ")


@pytest.mark.xfail(
    strict=True,
    reason=(
        "open (session 61): --token VALUE puts a bearer token in /proc/PID/cmdline; "
        "KODO_API_TOKEN or a token file is next"
    ),
)
@needs_root
@pytest.mark.parametrize(
    "argv",
    [
        # README: kodo run approve RUN_ID --plan-sha256 SHA256 --token $APPROVER_TOKEN
        ["run", "approve", RUN, "--plan-sha256", "ab" * 32, "--token", TOKEN],
        ["run", "watch", RUN, "--follow", "--token", TOKEN],
    ],
    ids=["approve", "watch-follow"],
)
def test_a_token_is_never_on_a_command_line_another_user_reads(
    argv: list[str], silent_api: socket.socket, tmp_path: Path
) -> None:
    api_url = f"http://127.0.0.1:{silent_api.getsockname()[1]}"
    env = {**os.environ, "KODO_API_URL": api_url, "KODO_HOME": str(tmp_path)}
    env.pop("KODO_API_TOKEN", None)
    proc = subprocess.Popen(
        [str(KODO), *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen = ""
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and proc.poll() is None and not held:
            try:
                held.append(silent_api.accept()[0])  # the command is up and asking
            except TimeoutError:
                continue
        if held and proc.poll() is None:
            seen = cmdline_as_other_user(proc.pid)
    finally:
        for conn in held:
            conn.close()
        proc.kill()
        proc.wait(timeout=10)
    assert TOKEN not in seen, f"uid {OTHER_UID} read from /proc/{proc.pid}/cmdline: {seen!r}"
