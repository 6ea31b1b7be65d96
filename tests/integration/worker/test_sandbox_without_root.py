"""A worker that is not root: the command's worktree is a bounded copy, never the host's.

Without root the sandbox cannot mount an overlay, so a command used to write the host
checkout itself, bounded per file only: enough files filled the disk. Now it runs on a
copy of the checkout in a tmpfs of the checkout's size plus KODO_EXEC_WORKTREE_BYTES.
CI runs as root, so each attack runs a worker process as uid 65534 (``setpriv``) that
builds the sandbox exactly as ExecuteST would and reports what the command saw.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.worker.test_sandbox import ETC_SEEN, WORKTREE_FILL, etc_was_the_sandboxs_own

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a worker as another uid"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]

WORKER_UID = 65534
REPO = Path(__file__).resolve().parents[3]

AS_WORKER = """
import json, sys
from pathlib import Path
from services.worker.sandbox import runner
from shared.config import Settings

worktree, code, worktree_bytes, undercount = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
held = [open("/dev/null") for _ in range(int(sys.argv[5]))]  # a worker's sockets and logs
if undercount == "yes":  # as if the checkout's size were misjudged: the copy cannot fit
    runner.tmpfs_footprint = lambda tree: 0
box = runner.sandbox_of(
    Settings(exec_worktree_bytes=worktree_bytes, sandbox_cgroup="off"), {"PATH": "/usr/bin:/bin"}
)
try:
    done = box.run(["/usr/bin/python3", "-c", code], Path(worktree), timeout_s=60,
                   cap=1 << 16, protected=())
except runner.SandboxUnavailable as exc:
    print(json.dumps({"refused": str(exc)}))
    raise SystemExit(0)
print(json.dumps({"root_mode": box.root_mode, "note": box.worktree_note(),
                  "exit_code": done.exit_code, "said": done.head.decode(errors="replace")}))
"""

FILL = (
    "import os\n"
    "print('SAW', open('calc.py').read().strip(), os.access('run.sh', os.X_OK),"
    " os.readlink('link'))\n"
    "open('calc.py', 'w').write('x = 2\\n')\n"
) + WORKTREE_FILL
"""What the checkout's copy shows (content, modes, links), then test_sandbox's fill."""


@pytest.fixture
def checkout() -> Iterator[Path]:
    """A checkout the non-root worker owns (as ExecuteST's private checkout is)."""
    root = Path(tempfile.mkdtemp(prefix="kodo-nonroot-"))
    tree = root / "run-a"
    tree.mkdir()
    (tree / "calc.py").write_text("x = 1\n")
    (tree / "run.sh").write_text("#!/bin/sh\n")
    (tree / "run.sh").chmod(0o755)
    (tree / "link").symlink_to("calc.py")
    (tree / "data.bin").write_bytes(os.urandom(300 << 10))
    try:
        os.chmod(root, 0o755)  # noqa: S103 - the worker uid must reach its checkout
        subprocess.run(["chown", "-R", "-h", f"{WORKER_UID}:{WORKER_UID}", str(root)], check=True)
        yield tree
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_worker(
    tree: Path, code: str, *, worktree_bytes: int, undercount: bool = False, open_files: int = 0
) -> Any:
    flags = (str(worktree_bytes), "yes" if undercount else "no", str(open_files))
    return worker_script(tree, AS_WORKER, str(tree), code, *flags)


def worker_script(tree: Path, script: str, *args: str) -> Any:
    """Run ``script`` as the worker uid would (setpriv), next to ``tree``; its last line."""
    done = subprocess.run(
        [
            "setpriv",
            f"--reuid={WORKER_UID}",
            f"--regid={WORKER_UID}",
            "--clear-groups",
            "--",
            sys.executable,
            "-c",
            script,
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tree.parent), "PYTHONPATH": str(REPO)},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def host_state(tree: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(tree)): (p.lstat().st_size, stat.S_IMODE(p.lstat().st_mode))
        for p in sorted(tree.rglob("*"))
    }


def test_a_non_root_command_sees_the_checkout_but_fills_only_its_bounded_copy(
    checkout: Path,
) -> None:
    before = host_state(checkout)
    seen = as_worker(checkout, FILL, worktree_bytes=4 << 20)

    assert seen["root_mode"] is False
    assert seen["note"]["mode"] == "copy"
    assert "SAW x = 1 True calc.py" in seen["said"], "a faithful copy: content, modes, links"
    assert "STOPPED ENOSPC" in seen["said"], seen["said"]
    assert int(seen["said"].split("WROTE-MB", 1)[1].split()[0]) <= 4
    # and in files: an empty one takes no byte, only an inode (host kernel memory)
    assert "FILES-STOPPED ENOSPC" in seen["said"], seen["said"]
    assert int(seen["said"].split("\nFILES ", 1)[1].split()[0]) <= 1024
    assert host_state(checkout) == before, "nothing the command wrote reached the host"
    assert (checkout / "calc.py").read_text() == "x = 1\n"


def test_a_checkout_that_does_not_fit_its_copy_fails_closed_before_the_command_runs(
    checkout: Path,
) -> None:
    """The sandbox's failure, not the command's: no exit status to repair against."""
    seen = as_worker(checkout, "print('RAN')", worktree_bytes=64 << 10, undercount=True)

    assert "refused" in seen, seen
    assert seen["refused"].startswith("worktree_copy: the checkout could not be copied")
    assert "the command did not run" in seen["refused"]
    assert "RAN" not in seen["refused"]


def test_a_command_faking_the_copys_failure_is_reported_as_its_own_exit(
    checkout: Path,
) -> None:
    """The copy says it succeeded on a pipe closed before the command starts: whatever
    the command prints and however it exits, it ran, and the report says so."""
    fake = (
        "import sys\n"
        'print("kodo-sandbox: the checkout could not be copied into the command\'s worktree",'
        " file=sys.stderr)\n"
        "sys.exit(125)\n"
    )
    seen = as_worker(checkout, fake, worktree_bytes=1 << 20)

    assert "refused" not in seen, seen
    assert seen["exit_code"] == 125


def test_a_worker_holding_many_files_open_still_gets_its_copy_made(checkout: Path) -> None:
    """A real worker holds a dozen descriptors (its broker, database and log), so the
    pipe the copy reports on was numbered past 9, which /bin/sh (dash) cannot name: the
    copy script died of a syntax error and every command of a non-root worker was
    refused (found by the non-root security campaign, tests/security)."""
    seen = as_worker(checkout, "print('RAN')", worktree_bytes=1 << 20, open_files=20)

    assert "refused" not in seen, seen
    assert seen["exit_code"] == 0, seen
    assert "RAN" in seen["said"]


ESCAPES = """
import os
for path in ('/x', '/etc/x', '/.kodo/x', '/.kodo/lower/x', '/dev/shm/x', '/dev/x'):
    try:
        open(path, 'w').write('x')
        print('WROTE', path)
    except OSError as e:
        print('refused', path, e.errno)
open('/tmp/ok', 'w').write('the private tmp')
open('mine.txt', 'w').write('so is its worktree copy')
print('DONE')
"""


def test_without_root_nothing_but_tmp_and_the_worktree_copy_is_writable(checkout: Path) -> None:
    """bubblewrap runs as the command's uid without root, so the tmpfs it builds the
    sandbox's / from (and /dev's) would be the command's, unbounded by any setting (a
    red-team pass wrote 100 MB to /.kodo under 1 MiB bounds): both are read-only."""
    seen = as_worker(checkout, ESCAPES, worktree_bytes=1 << 20)

    assert seen["exit_code"] == 0, seen
    assert "WROTE" not in seen["said"], seen["said"]
    assert "DONE" in seen["said"]
    assert not (checkout / "mine.txt").exists()


def test_without_root_passwd_group_and_hosts_are_still_the_sandboxs_own(checkout: Path) -> None:
    seen = as_worker(checkout, ETC_SEEN, worktree_bytes=1 << 20)

    assert seen["exit_code"] == 0, seen
    assert etc_was_the_sandboxs_own(seen["said"]), seen["said"]


WITH_TOOLCHAIN = """
import json, sys
from pathlib import Path
from services.worker.sandbox import runner
from shared.config import Settings

worktree, folder = sys.argv[1], sys.argv[2]
settings = Settings(
    sandbox_cgroup="off", exec_allowlist=(*Settings().exec_allowlist, "kodo-echo")
)
box = runner.sandbox_of(settings, {"PATH": f"{folder}:/usr/bin:/bin"})
tools = box.toolchain(settings.exec_allowlist, ())
try:
    done = box.run([tools.programs["kodo-echo"], "RAN"], Path(worktree), timeout_s=60,
                   cap=1 << 16, protected=(), toolchain=tools)
except runner.SandboxUnavailable as exc:
    print(json.dumps({"refused": str(exc), "binds": list(tools.binds)}))
    raise SystemExit(0)
print(json.dumps({"exit_code": done.exit_code, "said": done.head.decode(errors="replace")}))
"""


def test_a_toolchain_under_tmp_is_refused_by_name_not_run_without_its_programs(
    checkout: Path,
) -> None:
    """Copy mode mounts a fresh, file-bounded tmpfs over the sandbox's /tmp (bubblewrap's
    cannot be remounted by the script's root here), which would hide a toolchain folder
    under /tmp: the command would fail 127 as if it were the agent's. It is refused,
    naming the folder and the way out, before anything runs."""
    tools = checkout.parent / "tools"  # the fixture's folder lies under /tmp
    tools.mkdir()
    shutil.copy("/bin/echo", tools / "kodo-echo")
    subprocess.run(["chown", "-R", f"{WORKER_UID}:{WORKER_UID}", str(tools)], check=True)
    seen = worker_script(checkout, WITH_TOOLCHAIN, str(checkout), str(tools))
    assert seen.get("binds") == [str(tools)], seen
    assert seen["refused"].startswith(f"toolchain_under_tmp: {tools} "), seen
    assert "run the worker as root" in seen["refused"]
