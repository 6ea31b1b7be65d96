"""The sandbox attacked: real commands through bubblewrap, as ExecuteST runs them.

Each test is an attack a hostile verification command would try; it asserts what the
command saw and what it left on the host.
"""

from __future__ import annotations

import dataclasses
import os
import re
import resource
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.sample_repo import create_sample_repo
from services.worker.git_ops import ensure_worktree
from services.worker.sandbox import Finished, keyring, runner, sandbox_of
from services.worker.sandbox.keyring import KEYCTL_SYSCALL
from services.worker.sandbox.layout import PRIVATE_ETC
from shared.config import Settings
from tests.security import in_keyring
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def run_python(
    code: str,
    worktree: Path,
    *,
    settings: Settings | None = None,
    timeout_s: float = 30,
    cap: int = 1 << 20,
    protected: tuple[str, ...] = (),
    label: str = "probe",
) -> Finished:
    """``python3 -c code`` in the sandbox the worker would build from ``settings``;
    ``label`` names its cgroup (``kodo-exec-<label>-*``), as a run id does a step's."""
    settings = settings or Settings()
    box = sandbox_of(settings, dict(os.environ))
    assert box.unavailable() is None, box.unavailable()
    tools = box.toolchain(settings.exec_allowlist, protected)
    return box.run(
        [tools.programs["python3"], "-c", code],
        worktree,
        timeout_s=timeout_s,
        cap=cap,
        protected=protected,
        toolchain=tools,
        label=label,
    )


def said(done: Finished) -> str:
    return done.head.decode(errors="replace")


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line carries ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    path = tmp_path / "ws" / "run-a"
    path.mkdir(parents=True)
    (path / "calc.py").write_text("x = 1\n")
    return path


@pytest.fixture
def marker() -> Iterator[str]:
    tag = f"{1000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"
    yield tag
    for pid in processes_with(tag):  # never leave a stray behind, even when a test fails
        os.kill(pid, 9)


def test_the_parents_environment_is_not_readable_through_proc(
    worktree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://kodo:hunter2@db/kodo")
    done = run_python(
        "import os\n"
        "print('ENV', dict(os.environ))\n"
        "for pid in (os.getppid(), 1):\n"
        "    try: print(pid, open(f'/proc/{pid}/environ', 'rb').read())\n"
        "    except OSError as e: print(pid, 'refused', e)\n"
        "print('PIDS', sorted(p for p in os.listdir('/proc') if p.isdigit()))\n",
        worktree,
    )
    assert done.exit_code == 0, said(done)
    assert "hunter2" not in said(done)
    assert "DATABASE_URL" not in said(done)
    pids = said(done).split("PIDS", 1)[1]
    assert str(os.getpid()) not in pids.split("'"), "the worker is invisible in a fresh /proc"


def test_a_0600_token_file_outside_the_worktree_is_not_readable(
    worktree: Path, tmp_path: Path
) -> None:
    token = tmp_path / "home" / ".kodo" / "token"
    token.parent.mkdir(parents=True)
    token.write_text("kodo_admin_SECRET")
    token.chmod(0o600)
    done = run_python(
        f"import os\nfor p in ({str(token)!r}, '/root/.kodo/token', '/etc/shadow'):\n"
        "    try: print(open(p).read())\n"
        "    except OSError as e: print('refused', type(e).__name__)\n",
        worktree,
    )
    assert "kodo_admin_SECRET" not in said(done)
    assert said(done).count("refused") == 3, said(done)


def test_no_network_reaches_postgres_or_a_local_socket(worktree: Path, tmp_path: Path) -> None:
    abstract = f"\0kodo-test-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(abstract)
    listener.listen(1)
    path_sock = tmp_path / "pg.sock"
    on_disk = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    on_disk.bind(str(path_sock))
    on_disk.listen(1)
    try:
        done = run_python(
            "import socket\n"
            "tries = [(socket.AF_INET, ('127.0.0.1', 5432)), (socket.AF_INET, ('127.0.0.1', 6379)),"
            f" (socket.AF_UNIX, {abstract!r}), (socket.AF_UNIX, {str(path_sock)!r}),"
            " (socket.AF_UNIX, '/var/run/postgresql/.s.PGSQL.5432'),"
            " (socket.AF_UNIX, '/run/postgresql/.s.PGSQL.5432')]\n"
            "for family, where in tries:\n"
            "    s = socket.socket(family, socket.SOCK_STREAM); s.settimeout(2)\n"
            "    try: s.connect(where); print('CONNECTED', where)\n"
            "    except OSError as e: print('refused', type(e).__name__)\n",
            worktree,
        )
    finally:
        listener.close()
        on_disk.close()
    assert "CONNECTED" not in said(done)
    assert said(done).count("refused") == 6, said(done)


def test_nothing_outside_the_worktree_can_be_written(worktree: Path, tmp_path: Path) -> None:
    host_tmp = Path("/tmp") / f"kodo-escape-{uuid.uuid4().hex}"  # noqa: S108 (the host's /tmp)
    targets = [str(tmp_path / "outside.txt"), "/usr/kodo-escape", "/etc/kodo-escape"]
    done = run_python(
        "import os\n"
        f"for p in {targets!r}:\n"
        "    try: open(p, 'w').write('x'); print('WROTE', p)\n"
        "    except OSError as e: print('refused', type(e).__name__)\n"
        f"open({str(host_tmp)!r}, 'w').write('private tmp')\n"
        "open('inside.txt', 'w').write('ok')\n"
        "print('READ', open('inside.txt').read())\n",
        worktree,
    )
    assert done.exit_code == 0, said(done)
    assert "WROTE" not in said(done)
    assert "READ ok" in said(done), "the command may write its own worktree"
    assert not (tmp_path / "outside.txt").exists()
    assert not host_tmp.exists(), "the sandbox's /tmp is its own"
    # The worktree is an overlay (root) or a copy (not root): even the command's own
    # writes stay in the sandbox.
    assert not (worktree / "inside.txt").exists()


ETC_SEEN = (
    "import os\n"
    "for name in ('passwd', 'group', 'hosts'):\n"
    "    path = '/etc/' + name\n"
    "    print('ETC', name, oct(os.stat(path).st_mode & 0o777), repr(open(path).read()))\n"
    "    try: open(path, 'a').write('mine')\n"
    "    except OSError as e: print('REFUSED', name, e.errno)\n"
)
"""What the command sees of its /etc's passwd, group and hosts, and its try at each."""


def etc_was_the_sandboxs_own(said: str) -> bool:
    return all(
        f"ETC {name} 0o644 {data.decode()!r}" in said and f"REFUSED {name} " in said
        for name, data in PRIVATE_ETC.items()
    )


def test_passwd_group_and_hosts_are_the_sandboxs_own_and_none_lies_on_the_host(
    worktree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where a folder of them went
    settings = Settings()
    box = sandbox_of(settings, dict(os.environ))
    tools = box.toolchain(settings.exec_allowlist, ())
    seen_meanwhile: list[list[str]] = []
    done = box.run(
        [tools.programs["python3"], "-c", ETC_SEEN + "import time; time.sleep(0.5)\n"],
        worktree,
        timeout_s=30,
        cap=1 << 16,
        protected=(),
        toolchain=tools,
        on_poll=lambda: seen_meanwhile.append(os.listdir(scratch)),
        poll_s=0.05,
    )
    assert done.exit_code == 0, said(done)
    assert etc_was_the_sandboxs_own(said(done)), said(done)
    assert seen_meanwhile, "the host's temporary folder was looked at while the command ran"
    assert all(listing == [] for listing in seen_meanwhile), seen_meanwhile


def test_the_command_holds_no_descriptor_but_its_standard_three(worktree: Path) -> None:
    """bubblewrap left its ``--userns-block-fd`` open in the sandbox: the command held a
    pipe of the worker's. The one that lists ``/proc/self/fd`` is its own,
    closed once the listing is read."""
    done = run_python(
        "import os\n"
        "for fd in sorted(os.listdir('/proc/self/fd'), key=int):\n"
        "    try: print('FD', fd, os.readlink(f'/proc/self/fd/{fd}'))\n"
        "    except FileNotFoundError: pass\n",
        worktree,
    )
    assert done.exit_code == 0, said(done)
    held = [line.split()[1] for line in said(done).splitlines() if line.startswith("FD ")]
    assert held == ["0", "1", "2"], said(done)


def test_other_worktrees_and_the_source_repository_are_invisible(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "calc")
    workspace = tmp_path / "ws"
    mine = ensure_worktree(repo, workspace, "run-a", "HEAD").path
    other = ensure_worktree(repo, workspace, "run-b", "HEAD").path
    gitdir = (mine / ".git").read_text().split(":", 1)[1].strip()
    done = run_python(
        "import os\n"
        f"for p in {[str(other), str(repo), str(repo / '.git'), gitdir]!r}:\n"
        "    print(p, 'VISIBLE' if os.path.exists(p) else 'absent')\n"
        "try: open('.git', 'w').write('gitdir: /tmp/evil'); print('REDIRECTED')\n"
        "except OSError as e: print('git file', type(e).__name__)\n",
        mine,
        protected=(str(workspace), str(repo)),
    )
    assert "VISIBLE" not in said(done), said(done)
    assert said(done).count("absent") == 4
    assert "REDIRECTED" not in said(done)
    assert (mine / ".git").read_text().strip() == f"gitdir: {gitdir}"


def test_a_setsid_daemon_is_gone_when_the_command_ends(worktree: Path, marker: str) -> None:
    done = run_python(
        "import os, subprocess\n"
        f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True,"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "if os.fork() == 0:\n"  # and a classic double fork
        "    os.setsid()\n"
        f"    if os.fork() == 0: os.execvp('sleep', ['sleep', '{marker}'])\n"
        "    os._exit(0)\n"
        "print('daemons started')\n",
        worktree,
    )
    assert done.exit_code == 0, said(done)
    wait_until(lambda: processes_with(marker) == [], 5, f"every `sleep {marker}` to be gone")


def test_a_timeout_kills_the_whole_process_tree(worktree: Path, marker: str) -> None:
    began = time.monotonic()
    done = run_python(
        "import subprocess, time\n"
        f"for _ in range(3): subprocess.Popen(['sleep', '{marker}'])\n"
        "print('tree up', flush=True)\n"
        "time.sleep(600)\n",
        worktree,
        timeout_s=2,
    )
    assert done.timed_out
    assert done.exit_code is None
    assert time.monotonic() - began < 10
    assert "tree up" in said(done)
    wait_until(lambda: processes_with(marker) == [], 5, f"every `sleep {marker}` to be gone")


def test_a_bubblewrap_that_never_makes_its_sandbox_is_killed_and_the_command_never_runs(
    worktree: Path, tmp_path: Path, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the command runs the worker waits for bubblewrap to say it made the
    namespaces; one that hangs there (here: holds its info pipe and says nothing) is
    killed at runner.START_S, not waited on for good, and the step is told why."""
    if os.geteuid() != 0:
        pytest.skip("root mode waits on bubblewrap's info pipe; without root nothing does")
    box = sandbox_of(Settings(), dict(os.environ))
    assert box.unavailable() is None  # probed with the real bubblewrap
    stuck = tmp_path / "bwrap"
    stuck.write_text(f"#!/bin/sh\nexec sleep {marker}\n")  # inherits the pipes, writes nothing
    stuck.chmod(0o755)
    monkeypatch.setattr(runner, "START_S", 1.0)
    fds = len(os.listdir("/proc/self/fd"))
    began = time.monotonic()
    with pytest.raises(runner.SandboxUnavailable, match=r"^sandbox_start: .* within 1s"):
        dataclasses.replace(box, bwrap=str(stuck)).run(
            ["/usr/bin/true"], worktree, timeout_s=600, cap=4096, protected=()
        )
    assert time.monotonic() - began < 10, "bounded by START_S, not by the command's timeout"
    wait_until(lambda: processes_with(marker) == [], 5, f"the stuck `sleep {marker}` killed")
    assert len(os.listdir("/proc/self/fd")) == fds, "no pipe left open"
    assert (worktree / "calc.py").stat().st_uid == os.geteuid(), "the worktree taken back"


def test_a_fork_bomb_is_bounded_and_the_worker_keeps_working(worktree: Path) -> None:
    done = run_python(
        "import os, time\n"
        "children = 0\n"
        "try:\n"
        "    while children < 5000:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(5); os._exit(0)\n"
        "        children += 1\n"
        "except OSError as e: print('stopped', type(e).__name__)\n"
        "print('children', children)\n",
        worktree,
        settings=Settings(exec_nproc=40),
        timeout_s=20,
    )
    assert "stopped" in said(done), said(done)
    children = int(said(done).split("children", 1)[1].split()[0])
    assert children < 40
    assert subprocess.run(["true"], check=False).returncode == 0, "the worker can still fork"


LIMITS_SEEN = """
import resource
for name in ('CPU', 'AS', 'NPROC', 'FSIZE', 'CORE'):
    which = getattr(resource, 'RLIMIT_' + name)
    soft, hard = resource.getrlimit(which)
    try:
        resource.setrlimit(which, (hard, hard + 1))
        raised = 'RAISED'
    except (ValueError, OSError):
        raised = 'KEPT'
    print(name, soft, hard, raised)
"""


def test_the_commands_rlimits_are_the_settings_soft_and_hard_and_cannot_be_raised(
    worktree: Path,
) -> None:
    """As root the worker sets them on the sandbox's first process before it starts
    anything (no prlimit program); without root prlimit sets them: the command sees the
    same either way, and cannot lift one."""
    settings = Settings(
        exec_cpu_s=77, exec_memory_bytes=3 << 30, exec_nproc=99, exec_fsize_bytes=5 << 20
    )
    done = run_python(LIMITS_SEEN, worktree, settings=settings)
    seen = {line.split()[0]: line.split()[1:] for line in said(done).splitlines() if line}
    assert seen == {
        "CPU": ["77", "77", "KEPT"],
        "AS": [str(3 << 30), str(3 << 30), "KEPT"],
        "NPROC": ["99", "99", "KEPT"],
        "FSIZE": [str(5 << 20), str(5 << 20), "KEPT"],
        "CORE": ["0", "0", "KEPT"],
    }, said(done)


@pytest.mark.skipif(os.geteuid() != 0, reason="only the sandbox's root can mount the overlay")
def test_the_overlay_root_keeps_the_worktrees_mode_and_is_the_commands(worktree: Path) -> None:
    worktree.chmod(0o750)
    done = run_python(
        "import os\nst = os.stat('.')\nprint('ROOT', oct(st.st_mode & 0o7777), st.st_uid)\n"
        "open('new.txt', 'w').write('made')\nprint('MADE', os.stat('new.txt').st_uid)\n",
        worktree,
    )
    assert "ROOT 0o750 65534" in said(done), said(done)
    assert "MADE 65534" in said(done), said(done)
    assert not (worktree / "new.txt").exists(), "the overlay's writes stay in the sandbox"
    assert (worktree.stat().st_mode & 0o7777, worktree.stat().st_uid) == (0o750, os.geteuid())


def test_a_lending_that_fails_half_way_takes_the_worktree_back_and_leaks_no_pipe(
    worktree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worktree is lent to the command's uid before it starts; if that fails after
    part of the tree changed hands, the part is given back and the pipes are closed."""
    if os.geteuid() != 0:
        pytest.skip("root mode lends the worktree; without root the command runs as us")
    assert sandbox_of(Settings(), dict(os.environ)).unavailable() is None  # probed unpatched
    real = runner.lend_tree
    calls: list[int] = []

    def half_lend(root: Path, uid: int, gid: int, *, keep: tuple[Path, ...] = ()) -> None:
        if root != worktree:
            real(root, uid, gid, keep=keep)
            return
        calls.append(uid)
        if len(calls) == 1:
            os.chown(root / "calc.py", uid, gid)  # part of the tree changed hands
            raise runner.SandboxUnavailable("cannot hand the worktree over: injected")
        real(root, uid, gid, keep=keep)

    monkeypatch.setattr(runner, "lend_tree", half_lend)
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(runner.SandboxUnavailable, match="injected"):
        run_python("print('never')", worktree)
    assert len(calls) == 2, "the worktree was taken back"
    assert (worktree / "calc.py").stat().st_uid == os.geteuid()
    assert len(os.listdir("/proc/self/fd")) == fds, "no pipe left open"


def test_300_mb_of_output_neither_grows_the_worker_nor_the_artifact(worktree: Path) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    done = run_python(
        "import sys\nblock = b'x' * (1 << 20)\n"
        "for _ in range(300): sys.stdout.buffer.write(block)\n",
        worktree,
        cap=65536,
        timeout_s=120,
    )
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert done.exit_code == 0
    assert done.total_bytes == 300 << 20
    assert len(done.head) == 65536
    assert done.truncated
    assert grown_kib < 16 * 1024, f"the worker's peak RSS grew {grown_kib} KiB"


def test_a_file_larger_than_the_size_limit_cannot_be_written(worktree: Path) -> None:
    done = run_python(
        "import os, signal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "block = b'x' * (1 << 20)\n"
        "try:\n"
        "    with open('big.bin', 'wb') as f:\n"
        "        for _ in range(8): f.write(block); f.flush()\n"
        "except OSError as e: print('REFUSED', e.errno)\n"
        "print('SIZE', os.path.getsize('big.bin'))\n",
        worktree,
        settings=Settings(exec_fsize_bytes=2 << 20),
    )
    assert "REFUSED 27" in said(done), said(done)  # EFBIG
    assert int(said(done).split("SIZE", 1)[1].split()[0]) <= 2 << 20


WORKTREE_FILL = """
import errno, os
block = b'x' * (1 << 20)
written = 0
try:
    for i in range(64):
        with open(f'fill-{i}.bin', 'wb') as f:
            f.write(block)
        written += len(block)
except OSError as e:
    print('STOPPED', errno.errorcode[e.errno])
print('WROTE-MB', written >> 20)
made = 0
try:
    os.mkdir('many')
    for i in range(100000):
        open(f'many/{i}', 'w').close()
        made += 1
except OSError as e:
    print('FILES-STOPPED', errno.errorcode[e.errno])
print('FILES', made)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="only the sandbox's root can mount the overlay")
def test_what_the_command_writes_to_the_worktree_is_bounded_and_never_reaches_the_disk(
    worktree: Path,
) -> None:
    """A command may fill neither the host's disk nor its inodes through the worktree:
    its writes land in a tmpfs of KODO_EXEC_WORKTREE_BYTES (one file or folder per 4 KiB
    of it, at least 1024) and vanish with the sandbox."""
    before = sorted(p.name for p in worktree.iterdir())
    done = run_python(WORKTREE_FILL, worktree, settings=Settings(exec_worktree_bytes=8 << 20))
    assert "STOPPED ENOSPC" in said(done), said(done)
    assert int(said(done).split("WROTE-MB", 1)[1].split()[0]) <= 8
    assert "FILES-STOPPED ENOSPC" in said(done), said(done)
    files = re.search(r"^FILES (\d+)$", said(done), re.MULTILINE)
    assert files is not None, said(done)
    assert int(files.group(1)) <= 2048
    assert sorted(p.name for p in worktree.iterdir()) == before


def test_the_command_runs_unprivileged_without_capabilities(worktree: Path) -> None:
    done = run_python(
        "import os\nprint('uid', os.getuid(), os.geteuid())\n"
        "print([l for l in open('/proc/self/status') if l.startswith('CapEff')])\n"
        "print(sorted(os.listdir('/')))\n",
        worktree,
    )
    assert "uid 65534 65534" in said(done)
    assert "CapEff:\\t0000000000000000" in said(done)
    shown = said(done).rsplit("[", 1)[1]
    for hidden in ("'run'", "'var'", "'home'", "'opt'", "'srv'", "'mnt'"):
        assert hidden not in shown, shown


KEYS = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
found = libc.syscall({keyctl}, 10, -3, b"user", {name!r}, 0)  # KEYCTL_SEARCH in @s
if found < 0:
    print("NOT-FOUND", ctypes.get_errno())
else:
    buf = ctypes.create_string_buffer(256)
    n = libc.syscall({keyctl}, 11, found, buf, 256)  # KEYCTL_READ
    print("READ", n, buf.raw[: max(n, 0)].hex())
left = libc.syscall({add_key}, b"user", b"left-by-a-run", b"run-a-was-here", 14, -3)
print("LEFT", left)
"""
"""Search the session keyring for the key ``name`` and read it; leave one behind."""


def join_keyring_with(name: str, secret: bytes) -> None:
    """This thread joins a new session keyring holding a user key (the worker's own)."""
    state = in_keyring.join_with_key(name.encode(), secret)
    assert not state.startswith("unavailable: add_key"), state
    if state != "joined":
        pytest.skip(f"no keyrings here: {state}")


@pytest.mark.parametrize("shim", ["perl", "python"])
def test_the_command_possesses_neither_the_workers_session_keyring_nor_an_earlier_ones(
    worktree: Path, shim: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Possessing a keyring grants its keys' possessor rights whatever the uid, and a
    process inherits its parent's session keyring: a sandboxed command read a key from
    the worker's (a login's or a systemd service's keyring: Kerberos tickets, tokens),
    and a key one command left there, the next read. Each command now has its own,
    whichever shim joined it (Perl, or the Python one where there is no Perl)."""
    if shim == "perl":
        assert os.access(keyring.PERL, os.X_OK), "Perl is Essential on Debian: CI has it"
    else:
        monkeypatch.setattr(keyring, "PERL", "/nonexistent/perl")
    secret = b"keyringcanary" + uuid.uuid4().hex.encode()
    join_keyring_with("kodo-canary", secret)
    machine = os.uname().machine
    numbers = {"keyctl": KEYCTL_SYSCALL[machine], "add_key": in_keyring.ADD_KEY[machine]}
    first = run_python(KEYS.format(name=b"kodo-canary", **numbers), worktree)
    second = run_python(KEYS.format(name=b"left-by-a-run", **numbers), worktree)

    assert secret.hex() not in said(first), said(first)
    assert "NOT-FOUND" in said(first), said(first)
    assert "LEFT -1" not in said(first), said(first)  # it could leave one
    assert "NOT-FOUND" in said(second), f"a key the first command left was found: {said(second)}"


TMP_FILES = """
import errno
made = 0
try:
    for i in range(100000):
        open(f'/tmp/e{i}', 'w').close()
        made += 1
except OSError as e:
    print('TMP-STOPPED', errno.errorcode[e.errno])
print('TMP-FILES', made)
"""


def test_without_a_memory_cgroup_tmp_is_bounded_in_files_too(worktree: Path) -> None:
    """The sandbox's /tmp is a tmpfs of KODO_EXEC_TMP_BYTES; an empty file takes no byte:
    only an inode of host kernel memory, which nothing counts without a cgroup (found
    by the non-root security campaign, whose worker has none; a root worker whose
    cgroup is unavailable or off is no different). One file per 4 KiB of it, at least
    1024."""
    settings = Settings(sandbox_cgroup="off", exec_tmp_bytes=8 << 20)
    done = run_python(TMP_FILES, worktree, settings=settings)
    assert "TMP-STOPPED ENOSPC" in said(done), said(done)
    made = re.search(r"^TMP-FILES (\d+)$", said(done), re.MULTILINE)
    assert made is not None, said(done)
    assert int(made.group(1)) <= 2048


@pytest.mark.skipif(os.geteuid() != 0, reason="only the sandbox's root can mount the overlay")
def test_without_a_memory_cgroup_the_overlay_is_held_to_the_tmp_size(worktree: Path) -> None:
    """The overlay's tmpfs is memory: with no cgroup to charge it to (a red-team pass
    pinned 200 MiB under a 64 MiB limit), it gets /tmp's size, not the worktree bound."""
    settings = Settings(sandbox_cgroup="off", exec_worktree_bytes=64 << 20, exec_tmp_bytes=8 << 20)
    done = run_python(WORKTREE_FILL, worktree, settings=settings)
    assert "STOPPED ENOSPC" in said(done), said(done)
    assert int(said(done).split("WROTE-MB", 1)[1].split()[0]) <= 8


def test_a_toolchain_folder_under_tmp_still_runs_its_programs(worktree: Path) -> None:
    """The sandbox bounds its /tmp in place (a remount of bubblewrap's tmpfs), so the
    allowlisted programs' folders bound beneath it stay there: a checkout or virtualenv
    under /tmp (a CI runner's) ran no verification at all while a fresh tmpfs was
    mounted over them ("prlimit: failed to execute .../.venv/bin/python3")."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="kodo-toolchain-") as folder:
        bin_dir = Path(folder) / "bin"
        bin_dir.mkdir()
        shutil.copy("/bin/echo", bin_dir / "kodo-echo")
        os.chmod(folder, 0o755)  # noqa: S103 - the command's uid must reach it
        allowlist = (*Settings().exec_allowlist, "kodo-echo")
        for cgroup in ("auto", "off"):
            settings = Settings(sandbox_cgroup=cgroup, exec_allowlist=allowlist)
            box = sandbox_of(settings, {"PATH": f"{bin_dir}:/usr/bin:/bin"})
            tools = box.toolchain(settings.exec_allowlist, ())
            assert tools.binds == (folder,), tools
            done = box.run(
                [tools.programs["kodo-echo"], "HELLO-FROM-TMP"],
                worktree,
                timeout_s=30,
                cap=1 << 16,
                protected=(),
                toolchain=tools,
            )
            assert (done.exit_code, said(done).strip()) == (0, "HELLO-FROM-TMP"), said(done)


MOUNTS_SEEN = """
import errno, os
here = os.getcwd()
for line in open('/proc/self/mountinfo'):
    f = line.split()
    tail = f[f.index('-') + 1:]
    if f[4] in ('/tmp', here, here + '/.git') or f[4].startswith('/.kodo'):
        print('MOUNT', f[4], f[5], tail[0], tail[1], tail[2])
try:
    open('.git', 'a').close()
    print('GIT writable')
except OSError as e:
    print('GIT', errno.errorcode[e.errno])
print('ROOT', oct(os.stat('.').st_mode & 0o7777), os.stat('.').st_uid)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="only the sandbox's root can mount the overlay")
@pytest.mark.skipif(
    runner.overlay_mounter(os.uname().machine, os.access(runner.PERL, os.X_OK)) is None,
    reason="no Perl, or mount(2)'s number unknown on this machine",
)
def test_the_perl_mounter_makes_the_worktree_the_shell_script_made(
    worktree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overlay, its bounded tmpfs, /tmp's bound in files and the read-only ``.git``
    pointer, flag for flag, whichever of the two mounts them; the layers' own mounts are
    gone before the command starts."""
    (worktree / ".git").write_text("gitdir: /nowhere\n")
    (worktree / ".git").chmod(0o666)  # writable by its mode: only the mount refuses
    worktree.chmod(0o750)
    settings = Settings(sandbox_cgroup="off", exec_tmp_bytes=8 << 20)
    by_perl = said(run_python(MOUNTS_SEEN, worktree, settings=settings))
    monkeypatch.setattr(runner, "overlay_mounter", lambda machine, perl_usable: None)
    by_shell = said(run_python(MOUNTS_SEEN, worktree, settings=settings))

    assert by_perl == by_shell
    mounts = [line.split() for line in by_perl.splitlines() if line.startswith("MOUNT ")]
    points = [m[1] for m in mounts]  # the layers' own mounts (/.kodo/...) are gone
    assert points == ["/tmp", str(worktree), f"{worktree}/.git"], by_perl  # noqa: S108
    tmp, tree, pointer = mounts
    assert "size=8192k" in tmp[5], tmp
    assert "nr_inodes=2048" in tmp[5], tmp
    assert tree[3:5] == ["overlay", "kodo-worktree"], tree
    assert "lowerdir=/.kodo/lower,upperdir=/.kodo/disk/upper,workdir=/.kodo/disk/work" in tree[5]
    assert {"nosuid", "nodev"} <= set(tree[2].split(",")), tree
    assert {"ro", "nosuid", "nodev"} <= set(pointer[2].split(",")), pointer
    assert "GIT EROFS" in by_perl, by_perl
    assert "ROOT 0o750 65534" in by_perl, by_perl


@pytest.mark.skipif(os.geteuid() != 0, reason="only the sandbox's root can mount the overlay")
def test_a_lang_the_system_has_no_locale_for_adds_nothing_to_the_output(
    worktree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command gets the caller's LANG as it is; whatever mounts its worktree says no
    word about it, and leaves nothing of its own in the command's environment."""
    monkeypatch.setenv("LANG", "xx_XX.UTF-8")
    done = run_python("import os\nprint(sorted(os.environ.items()))", worktree)
    assert "warning" not in said(done), said(done)
    assert "('LANG', 'xx_XX.UTF-8')" in said(done), said(done)
    assert "PERL" not in said(done), said(done)


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root worker lends the worktree")
def test_a_disposable_tree_is_not_taken_back_after_the_command(worktree: Path) -> None:
    """A private checkout is removed right after its command: the root worker lends it to
    the command's uid and leaves it so (no second ``chown -R`` of the whole tree); any
    other tree is given back as it was."""
    settings = Settings()
    box = sandbox_of(settings, dict(os.environ))
    tools = box.toolchain(settings.exec_allowlist, ())
    python3 = tools.programs["python3"]
    for disposable in (False, True):
        done = box.run(
            [python3, "-c", "print('RAN')"],
            worktree,
            timeout_s=30,
            cap=4096,
            protected=(),
            toolchain=tools,
            disposable=disposable,
        )
        assert "RAN" in said(done), said(done)
        owner = (worktree / "calc.py").stat().st_uid
        assert owner == (box.host_uid if disposable else os.geteuid()), disposable
