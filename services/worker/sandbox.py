"""A bubblewrap sandbox for every command an agent chose (see README "Security").

The command gets its own PID, mount, network, IPC, UTS and user namespaces (and may
make no user namespace of its own), an
unprivileged uid with no capabilities, a read-only system (``/usr`` and the prefixes of
the allowlisted programs), a minimal ``/etc``, a fresh ``/proc``, a minimal ``/dev``, a
private ``/tmp``, and the run's worktree as the only writable host directory (its
``.git`` file read-only). Nothing else of the host is mounted: not ``/root``, ``/home``,
``/run``, ``/var``, kodo's state or workspace, other worktrees or the source repository.
rlimits bound CPU time, address space, processes and file size; a child cgroup per
execution (services/worker/sandbox_cgroup.py) bounds the whole tree's memory, shared
memory and tmpfs included, and its process count. When the command ends (or is killed)
the PID namespace's init dies and the kernel kills every process left; the cgroup is
then emptied and removed.

RLIMIT_NPROC never binds host uid 0, so a worker running as root maps the sandbox to
``KODO_SANDBOX_UID`` itself (bubblewrap's ``--userns-block-fd``), drops to it with
``setpriv`` and lends the worktree to that uid for the command's lifetime.

:func:`bwrap_argv` is pure (tested without bubblewrap); the rest does the IO.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from services.worker.sandbox_cgroup import MOUNTS, CgroupUnavailable, ExecCgroup, join_argv
from services.worker.sandbox_cgroup import create as create_cgroup
from shared.config import Settings

log = structlog.get_logger("kodo.sandbox")

INNER_UID = 65534
"""The uid (and gid) the command has inside the sandbox."""
PRLIMIT = "/usr/bin/prlimit"
MAX_USERNS = "/proc/sys/user/max_user_namespaces"
SETPRIV = "/usr/bin/setpriv"
NSENTER = "/usr/bin/nsenter"
SYSTEM_TOP = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/protocols",
    "/etc/services",
    "/etc/mime.types",
)
"""Host files programs need to start; everything else of /etc stays out."""
NETWORK_ETC = ("/etc/resolv.conf", "/etc/ssl", "/etc/ca-certificates", "/etc/gai.conf")
"""Added only when the operator allows the network."""
ALWAYS_PROTECTED = ("/", "/root", "/home", "/etc", "/var", "/run", "/tmp", "/proc", "/sys")  # noqa: S108
"""No bind source may be one of these or contain one (nor contain a run-specific one)."""
TMP = "/tmp"  # noqa: S108 (inside the sandbox: its own private tmpfs, never the host's)
PASSED_ENV = ("LANG", "LC_ALL")
"""Host variables a command inherits; everything else is set here, never copied."""


class SandboxUnavailable(RuntimeError):
    """No sandbox can be made here (missing or failing bubblewrap)."""


@dataclass(frozen=True)
class Limits:
    cpu_s: int
    memory_bytes: int
    nproc: int
    fsize_bytes: int

    def prlimit_argv(self) -> list[str]:
        """``prlimit`` applies them to the command (and its children) only, not the worker."""
        return [
            PRLIMIT,
            f"--cpu={self.cpu_s}:{self.cpu_s}",
            f"--as={self.memory_bytes}:{self.memory_bytes}",
            f"--nproc={self.nproc}:{self.nproc}",
            f"--fsize={self.fsize_bytes}:{self.fsize_bytes}",
            "--core=0:0",
            "--",
        ]


@dataclass(frozen=True)
class Toolchain:
    """Where the allowlisted programs live: the PATH inside and what must be bound."""

    programs: dict[str, str] = field(default_factory=dict)  # name -> absolute path
    binds: tuple[str, ...] = ()  # read-only prefixes outside /usr
    path: tuple[str, ...] = ()
    skipped: dict[str, list[str]] = field(default_factory=dict)  # name -> why not usable


@dataclass(frozen=True)
class HostSystem:
    """What the host's root looks like: /bin etc. as symlinks or dirs; which /etc exists."""

    links: tuple[tuple[str, str], ...]  # (path, target) of merged-/usr symlinks
    dirs: tuple[str, ...]  # top-level system dirs that are real directories
    etc: tuple[str, ...]  # host /etc entries present (ETC_FILES, NETWORK_ETC)


@dataclass(frozen=True)
class Layout:
    """Everything the sandbox shows the command."""

    worktree: Path
    toolchain: Toolchain
    host: HostSystem
    private_etc: Path  # holds passwd, group, hosts written for the sandbox
    network: bool
    tmp_bytes: int
    root_mode: bool  # the worker is root: map the sandbox uid itself and drop with setpriv


def sandbox_env(toolchain: Toolchain, passed: dict[str, str]) -> dict[str, str]:
    path = [*toolchain.path, "/usr/local/bin", "/usr/bin", "/bin"]
    env = {k: passed[k] for k in PASSED_ENV if k in passed}
    env.update(
        {
            "PATH": ":".join(dict.fromkeys(path)),
            "HOME": TMP,
            "TMPDIR": TMP,
            "PYTHONDONTWRITEBYTECODE": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_TERMINAL_PROMPT": "0",
        }
    )
    return env


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parents
    return [str(p) for p in reversed(list(parts)) if str(p) != "/"]


def _made_dirs(destinations: Sequence[str]) -> list[str]:
    """Directories to create (0755) so the command may walk to every bind."""
    made: list[str] = []
    for dest in destinations:
        for parent in _ancestors(dest):
            if parent in (TMP, "/usr") or parent.startswith(("/usr/", "/proc/", "/dev/")):
                continue
            if parent not in made:
                made.append(parent)
    return made


def bwrap_argv(
    bwrap: str,
    layout: Layout,
    env: dict[str, str],
    command: Sequence[str],
    limits: Limits,
    *,
    block_fd: int | None = None,
    info_fd: int | None = None,
) -> list[str]:
    """The full bubblewrap command line for ``command`` (pure)."""
    wt = str(layout.worktree)
    argv = [bwrap, "--unshare-all", "--unshare-user"]
    if not layout.root_mode:  # root mode forbids them itself (forbid_nested_userns)
        argv.append("--disable-userns")
    if layout.network:
        argv.append("--share-net")
    argv += ["--die-with-parent", "--new-session", "--hostname", "kodo-sandbox"]
    if layout.root_mode:
        if block_fd is None or info_fd is None:
            raise ValueError("root mode maps the user namespace itself: needs block/info fds")
        argv += ["--userns-block-fd", str(block_fd), "--info-fd", str(info_fd)]
    else:
        argv += ["--uid", str(INNER_UID), "--gid", str(INNER_UID)]
    argv += ["--ro-bind", "/usr", "/usr"]
    for path, target in layout.host.links:
        argv += ["--symlink", target, path]
    for path in layout.host.dirs:
        argv += ["--ro-bind", path, path]
    argv += ["--perms", "0755", "--dir", "/etc"]
    wanted_etc = ETC_FILES + (NETWORK_ETC if layout.network else ())
    for path in layout.host.etc:
        if path in wanted_etc:
            argv += ["--ro-bind", path, path]
    for name in ("passwd", "group", "hosts"):
        argv += ["--ro-bind", str(layout.private_etc / name), f"/etc/{name}"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--size", str(layout.tmp_bytes), "--tmpfs", TMP]
    for made in _made_dirs([*layout.toolchain.binds, wt]):
        argv += ["--perms", "0755", "--dir", made]
    for prefix in layout.toolchain.binds:
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--bind", wt, wt]
    # The .git file points kodo's later git at the source repository's gitdir: read-only.
    argv += ["--ro-bind-try", f"{wt}/.git", f"{wt}/.git", "--chdir", wt, "--clearenv"]
    for key, value in sorted(env.items()):
        argv += ["--setenv", key, value]
    if layout.root_mode:
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]
        argv += [
            SETPRIV,
            f"--reuid={INNER_UID}",
            f"--regid={INNER_UID}",
            "--clear-groups",
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--",
        ]
    else:
        argv.append("--")
    return argv + limits.prlimit_argv() + list(command)


def id_map(host_id: int) -> str:
    """The root-mode user namespace map: inner 0 is host root (bubblewrap's own setup),
    the command's uid is ``host_id``."""
    return f"0 0 1\n{INNER_UID} {host_id} 1\n"


def forbid_nested_userns(child: int) -> None:
    """Root mode: the sandbox's user namespace may create no user namespace of its own.

    A nested user namespace would give the command root over mounts of its own (an
    unbounded tmpfs, namespace tricks). bubblewrap's ``--disable-userns`` does not combine
    with ``--userns-block-fd``, so the worker (owner of the namespace) sets its
    ``max_user_namespaces`` to 0 from inside it while bubblewrap still waits.
    """
    done = subprocess.run(
        [NSENTER, "--user", f"--target={child}", "--", "/usr/bin/tee", MAX_USERNS],
        input=b"0\n",
        capture_output=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip()
        raise SandboxUnavailable(f"cannot forbid nested user namespaces: {said}")


# --- host discovery -------------------------------------------------------------------


def host_system() -> HostSystem:
    links: list[tuple[str, str]] = []
    dirs: list[str] = []
    for top in SYSTEM_TOP:
        if os.path.islink(top):
            links.append((top, os.readlink(top)))
        elif os.path.isdir(top):
            dirs.append(top)
    etc = tuple(p for p in (*ETC_FILES, *NETWORK_ETC) if os.path.exists(p))
    return HostSystem(tuple(links), tuple(dirs), etc)


def unsafe_bind(source: str, protected: Sequence[str]) -> str | None:
    """The protected path ``source`` would expose (it is it, or contains it), if any."""
    src = Path(source)
    for raw in (*ALWAYS_PROTECTED, *protected):
        guarded = Path(raw)
        if src == guarded or guarded.is_relative_to(src):
            return raw
    return None


def _prefix(executable: str) -> str:
    """The installation prefix of a program: the parent of its bin/ dir."""
    parent = Path(executable).parent
    return str(parent.parent if parent.name in ("bin", "sbin") else parent)


def _shebang(path: str) -> list[str]:
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
    except OSError:
        return []
    if not head.startswith(b"#!"):
        return []
    return head[2:].split(b"\n", 1)[0].decode(errors="replace").split()


def _needs(candidate: str, search: Sequence[str], depth: int = 0) -> list[str] | None:
    """Every prefix ``candidate`` needs to start (itself, its real file, its interpreter)."""
    real = os.path.realpath(candidate)
    needs = [_prefix(candidate), _prefix(real)]
    line = _shebang(real)
    if line and depth < 3:
        interp = line[0]
        if os.path.basename(interp) == "env" and len(line) > 1:
            found = _which(line[1], search)
            interp = found or ""
        if not interp:
            return None
        more = _needs(interp, search, depth + 1)
        if more is None:
            return None
        needs += more
    return [p for p in dict.fromkeys(needs) if p != "/usr" and not p.startswith("/usr/")]


def _which(name: str, search: Sequence[str]) -> str | None:
    for directory in search:
        if Path(directory).name == "shims":
            continue  # pyenv/rbenv/asdf shims re-exec through the manager's whole tree
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def resolve_toolchain(
    programs: Sequence[str], search_path: str, protected: Sequence[str]
) -> Toolchain:
    """Find each allowlisted program on ``search_path`` with a prefix safe to bind."""
    search = [d for d in search_path.split(os.pathsep) if d]
    found: dict[str, str] = {}
    binds: list[str] = []
    skipped: dict[str, list[str]] = {}
    for name in programs:
        for directory in search:
            candidate = os.path.join(directory, name)
            if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
                continue
            if Path(directory).name == "shims":
                skipped.setdefault(name, []).append(f"{candidate}: a version-manager shim")
                continue
            needs = _needs(candidate, search)
            if needs is None:
                skipped.setdefault(name, []).append(f"{candidate}: interpreter not found")
                continue
            exposed = [(p, hit) for p in needs if (hit := unsafe_bind(p, protected))]
            if exposed:
                why = ", ".join(f"binding {p} would expose {hit}" for p, hit in exposed)
                skipped.setdefault(name, []).append(f"{candidate}: {why}")
                continue
            found[name] = candidate
            binds += needs
            break
    path = tuple(dict.fromkeys(str(Path(p).parent) for p in found.values()))
    return Toolchain(found, tuple(dict.fromkeys(binds)), path, skipped)


def write_private_etc(directory: Path) -> None:
    (directory / "passwd").write_text(
        f"root:x:0:0:root:/:/usr/sbin/nologin\nsandbox:x:{INNER_UID}:{INNER_UID}:"
        "kodo sandbox:/tmp:/usr/sbin/nologin\n"
    )
    (directory / "group").write_text(f"root:x:0:\nsandbox:x:{INNER_UID}:\n")
    (directory / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    for name in ("passwd", "group", "hosts"):
        (directory / name).chmod(0o644)
    directory.chmod(0o755)


def lend_tree(root: Path, uid: int, gid: int, *, keep: Sequence[Path] = ()) -> None:
    """Give every entry under ``root`` (itself included) to uid:gid; never follow links."""
    kept = {str(p) for p in keep}
    if str(root) not in kept:
        os.lchown(root, uid, gid)
    for parent, dirs, files in os.walk(root, followlinks=False):
        for name in (*dirs, *files):
            path = os.path.join(parent, name)
            if path not in kept:
                with contextlib.suppress(FileNotFoundError):
                    os.lchown(path, uid, gid)


# --- running --------------------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    exit_code: int | None  # None: killed at the timeout
    head: bytes  # the first ``cap`` bytes of stdout+stderr
    total_bytes: int
    timed_out: bool
    memory_cgroup: dict[str, int] | str = "off"  # usage, or "off" / "unavailable: why"

    @property
    def truncated(self) -> bool:
        return self.total_bytes > len(self.head)

    @property
    def oom_killed(self) -> bool:
        """The cgroup's memory limit killed a process of the command."""
        return isinstance(self.memory_cgroup, dict) and self.memory_cgroup["oom_kills"] > 0


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the sandbox's process group: bwrap dies, its PID namespace with it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def stream_capped(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    timeout_s: float,
    cap: int,
    on_poll: Callable[[], None] = lambda: None,
    poll_s: float = 1.0,
    pass_fds: Sequence[int] = (),
    started: Callable[[subprocess.Popen[bytes]], None] = lambda _: None,
) -> Finished:
    """Run ``argv``; keep the first ``cap`` bytes of its output, count and drop the rest.

    The worker never holds more than ``cap`` bytes plus one read. ``on_poll`` runs every
    ``poll_s`` while the command runs (the step's lease check): if it raises, the
    process group is killed and the exception propagates.
    """
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        pass_fds=tuple(pass_fds),
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    head = bytearray()
    total = 0
    timed_out = False
    deadline = time.monotonic() + timeout_s
    next_poll = time.monotonic() + poll_s
    try:
        started(proc)
        while True:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                _kill(proc)
                break
            if now >= next_poll:
                on_poll()
                next_poll = now + poll_s
            wait = max(0.0, min(deadline, next_poll) - now)
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break  # every writer is gone: the sandbox's processes are dead
            total += len(chunk)
            if len(head) < cap:
                head += chunk[: cap - len(head)]
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except BaseException:
        _kill(proc)
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    return Finished(None if timed_out else code, bytes(head), total, timed_out)


_probe_lock = threading.Lock()
_probed: dict[tuple[str, bool, int], str | None] = {}


@dataclass(frozen=True)
class Sandbox:
    """The sandbox as the worker's settings describe it."""

    bwrap: str
    limits: Limits
    network: bool
    tmp_bytes: int
    host_uid: int  # the uid the command has on the host when the worker is root
    search_path: str
    passed_env: dict[str, str]
    cgroup: str = "auto"  # KODO_SANDBOX_CGROUP: auto | required | off
    cgroup_mounts: Path = MOUNTS  # where cgroup hierarchies are looked for (tests move it)

    @property
    def root_mode(self) -> bool:
        return os.geteuid() == 0

    def bwrap_path(self) -> str | None:
        if "/" in self.bwrap:
            return self.bwrap if os.access(self.bwrap, os.X_OK) else None
        return _which(self.bwrap, self.search_path.split(os.pathsep))

    def unavailable(self) -> str | None:
        """Why no sandbox can be made here (None: it can); probed once per process."""
        key = (self.bwrap, self.root_mode, self.host_uid)
        with _probe_lock:
            if key not in _probed:
                _probed[key] = self._probe()
            return _probed[key]

    def _probe(self) -> str | None:
        if self.bwrap_path() is None:
            return f"bubblewrap ({self.bwrap}) is not installed"
        for tool in (PRLIMIT, *((SETPRIV, NSENTER) if self.root_mode else ())):
            if not os.access(tool, os.X_OK):
                return f"{tool} (util-linux) is missing"
        with tempfile.TemporaryDirectory(prefix="kodo-probe-") as scratch:
            worktree = Path(scratch) / "wt"
            worktree.mkdir()
            try:
                box = (
                    self if self.cgroup != "required" else dataclasses.replace(self, cgroup="auto")
                )
                done = box.run(["/usr/bin/true"], worktree, timeout_s=30, cap=4096, protected=())
            except (OSError, SandboxUnavailable, ValueError) as exc:
                return f"bubblewrap failed to start: {exc}"
        if done.exit_code != 0:
            said = done.head.decode(errors="replace").strip()
            return f"bubblewrap failed its probe (exit {done.exit_code}): {said}"
        return None

    def cgroup_unavailable(self) -> str | None:
        """Why no per-execution cgroup can be made here (None: it can, or mode off)."""
        if self.cgroup == "off":
            return None
        try:
            made = create_cgroup(
                "probe", self.limits.memory_bytes, self.limits.nproc, self.cgroup_mounts
            )
        except CgroupUnavailable as exc:
            return str(exc)
        try:
            made.destroy()
        except OSError as exc:
            return f"cannot remove a child cgroup: {exc}"
        return None

    def _make_cgroup(self, label: str) -> tuple[ExecCgroup | None, str]:
        """The execution's cgroup and the note recorded when there is none."""
        if self.cgroup == "off":
            return None, "off"
        try:
            return create_cgroup(
                label, self.limits.memory_bytes, self.limits.nproc, self.cgroup_mounts
            ), ""
        except CgroupUnavailable as exc:
            if self.cgroup == "required":
                raise
            log.warning("sandbox.cgroup_unavailable", reason=str(exc), label=label)
            return None, f"unavailable: {exc}"

    @contextlib.contextmanager
    def _layout(self, worktree: Path, toolchain: Toolchain) -> Iterator[Layout]:
        with tempfile.TemporaryDirectory(prefix="kodo-sandbox-etc-") as etc:
            write_private_etc(Path(etc))
            yield Layout(
                worktree=worktree.resolve(),
                toolchain=toolchain,
                host=host_system(),
                private_etc=Path(etc),
                network=self.network,
                tmp_bytes=self.tmp_bytes,
                root_mode=self.root_mode,
            )

    def toolchain(self, programs: Sequence[str], protected: Sequence[str]) -> Toolchain:
        return resolve_toolchain(programs, self.search_path, protected)

    def run(
        self,
        argv: Sequence[str],
        worktree: Path,
        *,
        timeout_s: float,
        cap: int,
        protected: Sequence[str],
        toolchain: Toolchain | None = None,
        on_poll: Callable[[], None] = lambda: None,
        poll_s: float = 1.0,
        label: str = "probe",
    ) -> Finished:
        """Run ``argv`` (argv[0] an absolute path) in the sandbox, on ``worktree``.

        ``label`` (the run id) names the execution's cgroup. With KODO_SANDBOX_CGROUP
        ``required`` and no cgroup, :class:`CgroupUnavailable` is raised, nothing runs.
        """
        bwrap = self.bwrap_path()
        if bwrap is None:
            raise SandboxUnavailable(f"bubblewrap ({self.bwrap}) is not installed")
        tools = toolchain or Toolchain()
        env = sandbox_env(tools, self.passed_env)
        cgroup, note = self._make_cgroup(label)
        joined: Callable[[list[str]], list[str]] = (
            (lambda command: command)
            if cgroup is None
            else (lambda command: join_argv(cgroup.procs_files, command))
        )
        try:
            with self._layout(worktree, tools) as layout:
                if not layout.root_mode:
                    done = stream_capped(
                        joined(bwrap_argv(bwrap, layout, env, argv, self.limits)),
                        env={},
                        cwd=Path("/"),
                        timeout_s=timeout_s,
                        cap=cap,
                        on_poll=on_poll,
                        poll_s=poll_s,
                    )
                else:
                    done = self._run_as_root(
                        bwrap, layout, env, argv, timeout_s, cap, on_poll, poll_s, joined
                    )
        finally:
            usage = cgroup.usage() if cgroup is not None else None
            if cgroup is not None:
                cgroup.destroy()
        if usage is None:
            return dataclasses.replace(done, memory_cgroup=note)
        report = {
            "limit_bytes": self.limits.memory_bytes,
            "pids_max": self.limits.nproc,
            **usage.as_dict(),
        }
        return dataclasses.replace(done, memory_cgroup=report)

    def _run_as_root(
        self,
        bwrap: str,
        layout: Layout,
        env: dict[str, str],
        argv: Sequence[str],
        timeout_s: float,
        cap: int,
        on_poll: Callable[[], None],
        poll_s: float,
        joined: Callable[[list[str]], list[str]],
    ) -> Finished:
        block_r, block_w = os.pipe()
        info_r, info_w = os.pipe()
        open_fds = {block_r, block_w, info_r, info_w}

        def close(fd: int) -> None:
            if fd in open_fds:  # never close a number twice: another thread may reuse it
                open_fds.discard(fd)
                os.close(fd)

        command = bwrap_argv(
            bwrap, layout, env, argv, self.limits, block_fd=block_r, info_fd=info_w
        )
        wt = layout.worktree
        owner = os.stat(wt)
        lend_tree(wt, self.host_uid, self.host_uid, keep=[wt / ".git"])

        def map_ids(_: subprocess.Popen[bytes]) -> None:
            close(block_r)
            close(info_w)
            info = b""
            while chunk := os.read(info_r, 4096):
                info += chunk
            if not info:
                return  # bubblewrap failed before its namespace existed: its output says why
            child = int(json.loads(info)["child-pid"])
            Path(f"/proc/{child}/uid_map").write_text(id_map(self.host_uid))
            Path(f"/proc/{child}/gid_map").write_text(id_map(self.host_uid))
            forbid_nested_userns(child)
            os.write(block_w, b"1")
            close(block_w)

        try:
            return stream_capped(
                joined(command),
                env={},
                cwd=Path("/"),
                timeout_s=timeout_s,
                cap=cap,
                on_poll=on_poll,
                poll_s=poll_s,
                pass_fds=(block_r, info_w),
                started=map_ids,
            )
        finally:
            for fd in list(open_fds):
                close(fd)
            lend_tree(wt, owner.st_uid, owner.st_gid, keep=[wt / ".git"])


def run_unsandboxed(
    argv: Sequence[str],
    worktree: Path,
    *,
    env: dict[str, str],
    limits: Limits,
    timeout_s: float,
    cap: int,
    on_poll: Callable[[], None] = lambda: None,
    poll_s: float = 1.0,
) -> Finished:
    """The operator's opt-out (KODO_SANDBOX=off): rlimits and a process group, no more."""
    return stream_capped(
        [*limits.prlimit_argv(), *argv],
        env=env,
        cwd=worktree,
        timeout_s=timeout_s,
        cap=cap,
        on_poll=on_poll,
        poll_s=poll_s,
    )


def limits_of(settings: Settings) -> Limits:
    return Limits(
        cpu_s=settings.exec_cpu_s,
        memory_bytes=settings.exec_memory_bytes,
        nproc=settings.exec_nproc,
        fsize_bytes=settings.exec_fsize_bytes,
    )


def sandbox_of(settings: Settings, environ: dict[str, str]) -> Sandbox:
    return Sandbox(
        bwrap=settings.sandbox_bwrap,
        limits=limits_of(settings),
        network=settings.sandbox_network,
        tmp_bytes=settings.exec_tmp_bytes,
        host_uid=settings.sandbox_uid,
        search_path=environ.get("PATH", "/usr/bin:/bin"),
        passed_env=environ,
        cgroup=settings.sandbox_cgroup,
        cgroup_mounts=settings.sandbox_cgroup_mounts,
    )


def sandbox_problem(settings: Settings, environ: dict[str, str]) -> str | None:
    """For `kodo up` and `kodo doctor`: why ExecuteST would refuse (None: it would run)."""
    if not settings.sandbox:
        return None
    box = sandbox_of(settings, environ)
    why_not = box.unavailable()
    if why_not is not None:
        return f"{why_not}: install bubblewrap (scripts/bootstrap does: apt-get install bubblewrap)"
    if settings.sandbox_cgroup == "required":
        no_cgroup = box.cgroup_unavailable()
        if no_cgroup is not None:
            return f"sandbox_cgroup: KODO_SANDBOX_CGROUP=required but {no_cgroup}"
    return None


def sandbox_cgroup_warning(settings: Settings, environ: dict[str, str]) -> str | None:
    """For `kodo doctor` and worker start: commands run without a memory cgroup (auto)."""
    if not settings.sandbox or settings.sandbox_cgroup != "auto":
        return None
    no_cgroup = sandbox_of(settings, environ).cgroup_unavailable()
    if no_cgroup is None:
        return None
    return (
        f"memory cgroup unavailable: {no_cgroup}; sandboxed commands are bounded by rlimits"
        " only (shared memory and /tmp are not counted against KODO_EXEC_MEMORY_BYTES)"
    )
