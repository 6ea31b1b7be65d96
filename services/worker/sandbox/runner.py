"""The sandbox as the worker's settings describe it: probe it, run a command in it.

:class:`Sandbox` puts the pieces together (a cgroup, the layout, the capped run); as
root it maps the sandbox's uid itself, forbids nested user namespaces and lends the
worktree to that uid for the command's lifetime; without root the command's worktree is
a bounded tmpfs holding a copy of the checkout (:data:`COPIED`). The ``*_of`` and ``sandbox_*``
functions adapt :class:`~shared.config.Settings` for ExecuteST, `kodo up` and `kodo doctor`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import resource
import select
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from services.worker.sandbox.capture import Finished, stream_capped
from services.worker.sandbox.cgroup import CgroupUnavailable, ExecCgroup
from services.worker.sandbox.cgroup import create as create_cgroup
from services.worker.sandbox.cgroup_plan import MOUNTS, join_argv
from services.worker.sandbox.keyring import own_keyring_argv
from services.worker.sandbox.layout import (
    BYTES_PER_INODE,
    PERL,
    PRIVATE_ETC,
    PRLIMIT,
    SETPRIV,
    Layout,
    Limits,
    Toolchain,
    bwrap_argv,
    id_map,
    overlay_mounter,
    sandbox_env,
    under_tmp,
)
from services.worker.sandbox.toolchain import (
    host_system,
    resolve_toolchain,
    which,
)
from shared.apart import run_apart
from shared.config import Settings
from shared.real_path import resolved

log = structlog.get_logger("kodo.sandbox")

MAX_USERNS = "/proc/sys/user/max_user_namespaces"
COPIED = (
    "the worker is not root, so the sandbox cannot mount an overlay: the command runs on a"
    " copy of the checkout in a tmpfs holding the checkout plus KODO_EXEC_WORKTREE_BYTES"
    " (and one file per 4096 of those bytes; charged to the execution's memory cgroup, if"
    " any); nothing it writes reaches the disk"
)
PAGE = 4096
"""tmpfs counts whole pages: a file takes its size rounded up to them."""
SHORT_LINK = 128
"""A link whose target is shorter is kept beside its inode, in no page (shmem's
SHORT_SYMLINK_LEN)."""
NSENTER = "/usr/bin/nsenter"


START_S = 30.0
"""How long bubblewrap may take to make the sandbox's namespaces and say so on its info
pipe (a few milliseconds here). Until it does, the worker waits on bubblewrap alone,
checking neither the command's timeout nor the step's lease: this wait has its own bound."""


class SandboxUnavailable(RuntimeError):
    """No sandbox can be made here (missing or failing bubblewrap)."""


def read_to_end(fd: int, within_s: float) -> bytes:
    """Everything written to ``fd`` until its writers close it, within ``within_s``, else
    :class:`SandboxUnavailable` (rule ``sandbox_start``): the command has not run."""
    deadline = time.monotonic() + within_s
    poller = select.poll()  # not select(): a busy worker's descriptors may pass 1023
    poller.register(fd, select.POLLIN)
    said = b""
    while True:
        left_ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))
        if not poller.poll(left_ms):
            raise SandboxUnavailable(
                f"sandbox_start: bubblewrap did not make the sandbox within {within_s:g}s;"
                " it was killed and the command did not run"
            )
        chunk = os.read(fd, 4096)
        if not chunk:
            return said
        said += chunk


def forbid_nested_userns(child: int) -> None:
    """Root mode: the sandbox's user namespace may create no user namespace of its own.

    A nested user namespace would give the command root over mounts of its own (an
    unbounded tmpfs, namespace tricks). bubblewrap's ``--disable-userns`` does not combine
    with ``--userns-block-fd``, so the worker (owner of the namespace) sets its
    ``max_user_namespaces`` to 0 from inside it while bubblewrap still waits.
    """
    done = run_apart(
        [NSENTER, "--user", f"--target={child}", "--", "/usr/bin/tee", MAX_USERNS],
        input=b"0\n",
        capture_output=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip()
        raise SandboxUnavailable(f"cannot forbid nested user namespaces: {said}")


def bound_rlimits(child: int, limits: Limits) -> None:
    """Root mode: the command's rlimits, set on the sandbox's first process before it
    runs anything (bubblewrap still waits for its map), so every process of the sandbox
    inherits them; nothing runs unbounded: a limit that cannot be set is the sandbox's
    failure (SandboxUnavailable)."""
    for limit, value in limits.rlimits():
        try:
            resource.prlimit(child, limit, (value, value))
        except OSError as exc:
            raise SandboxUnavailable(f"cannot set the command's rlimits: {exc}") from exc


def lend_tree(root: Path, uid: int, gid: int, *, keep: Sequence[Path] = ()) -> None:
    """Give every entry under ``root`` (itself included) to uid:gid, except the entries
    ``keep`` names; never follow links.

    ``chown -R -P -h``, not a walk in the worker: the tree is what the last command left,
    and a walk here recursed past Python's limit on a folder chain a few thousand deep,
    failed on paths past PATH_MAX and held every name of a folder in memory at once.
    Nothing runs in the worktree meanwhile (before the command starts, after it ended).
    Raises SandboxUnavailable when the tree cannot be handed over.
    """
    kept = []
    for path in keep:
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(path)
            kept.append((path, st.st_uid, st.st_gid))
    done = run_apart(
        [_CHOWN, "-R", "-P", "-h", f"{uid}:{gid}", "--", str(root)],
        capture_output=True,
        timeout=LEND_TIMEOUT_S,
        check=False,
    )
    for path, owner_uid, owner_gid in kept:
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, owner_uid, owner_gid, follow_symlinks=False)
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip()[:500]
        raise SandboxUnavailable(f"cannot hand the worktree to uid {uid}: {said}")


_CHOWN = "/bin/chown" if os.path.exists("/bin/chown") else "chown"
LEND_TIMEOUT_S = 120


@dataclass(frozen=True)
class _Watched:
    """How bubblewrap's process is run and watched, whichever mode built its argv."""

    timeout_s: float
    cap: int
    on_poll: Callable[[], None]
    poll_s: float
    joined: Callable[[list[str]], list[str]]  # into the execution's cgroup, if it has one
    # and always started with a session keyring of its own (keyring.PERL_SHIM, or
    # keyring.SHIM on the worker's own binary where there is no Perl), never the worker's

    def run(
        self,
        command: list[str],
        *,
        pass_fds: Sequence[int] = (),
        started: Callable[[subprocess.Popen[bytes]], None] = lambda _: None,
        stdin: int | None = None,
    ) -> Finished:
        return stream_capped(
            own_keyring_argv(self.joined(command)),
            env={},
            cwd=Path("/"),
            timeout_s=self.timeout_s,
            cap=self.cap,
            on_poll=self.on_poll,
            poll_s=self.poll_s,
            pass_fds=pass_fds,
            started=started,
            stdin=stdin,
        )


@contextlib.contextmanager
def private_etc() -> Iterator[dict[str, int]]:
    """:data:`PRIVATE_ETC` on pipes, each a descriptor bubblewrap reads its file from
    (``--ro-bind-data``): written whole before the sandbox starts (each far below a
    pipe's buffer), closed after it. A folder of files per execution cost the disk four
    creations and four deletions, and left them on the host while the command ran."""
    fds: dict[str, int] = {}
    try:
        for name, data in PRIVATE_ETC.items():
            readable, writable = os.pipe()
            fds[name] = readable
            try:
                os.write(writable, data)
            finally:
                os.close(writable)
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


_probe_lock = threading.Lock()
_probed: dict[tuple[str, bool, int], str | None] = {}


@dataclass(frozen=True)
class Sandbox:
    """The sandbox as the worker's settings describe it."""

    bwrap: str
    limits: Limits
    network: bool
    tmp_bytes: int
    worktree_bytes: int  # what a command may write to the worktree (root mode: enforced)
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
        return which(self.bwrap, self.search_path.split(os.pathsep))

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
        probed = self._probe_cgroup()
        return probed if isinstance(probed, str) else None

    def cpu_quota(self) -> float | None:
        """The CPUs' time a command's cgroup is held to here (None: no cgroup, or no cpu
        controller the worker may use)."""
        probed = self._probe_cgroup()
        return None if isinstance(probed, str) else probed.cpu_max

    def _probe_cgroup(self) -> ExecCgroup | str:
        """A cgroup made as a command's would be, then removed; or why it cannot be."""
        if self.cgroup == "off":
            return "KODO_SANDBOX_CGROUP=off"
        try:
            made = create_cgroup(
                "probe",
                self.limits.memory_bytes,
                self.limits.nproc,
                self.cgroup_mounts,
                self.limits.cpus,
            )
        except CgroupUnavailable as exc:
            return str(exc)
        try:
            made.destroy()
        except OSError as exc:
            return f"cannot remove a child cgroup: {exc}"
        return made

    def _make_cgroup(self, label: str) -> tuple[ExecCgroup | None, str]:
        """The execution's cgroup and the note recorded when there is none."""
        if self.cgroup == "off":
            return None, "off"
        try:
            return create_cgroup(
                label,
                self.limits.memory_bytes,
                self.limits.nproc,
                self.cgroup_mounts,
                self.limits.cpus,
            ), ""
        except CgroupUnavailable as exc:
            if self.cgroup == "required":
                raise
            log.warning("sandbox.cgroup_unavailable", reason=str(exc), label=label)
            return None, f"unavailable: {exc}"

    @contextlib.contextmanager
    def _layout(self, worktree: Path, toolchain: Toolchain, *, counted: bool) -> Iterator[Layout]:
        """``counted``: the execution has a memory cgroup, which the overlay's tmpfs is
        charged to; without one the overlay is held to KODO_EXEC_TMP_BYTES, as /tmp is."""
        writes = self.worktree_bytes if counted else min(self.worktree_bytes, self.tmp_bytes)
        hidden = [] if self.root_mode else under_tmp(toolchain.binds)
        if hidden:
            raise SandboxUnavailable(
                f"toolchain_under_tmp: {', '.join(hidden)} (allowlisted programs' folders)"
                " lie under /tmp, which a worker that is not root replaces with a bounded"
                " tmpfs: move the toolchain out of /tmp, or run the worker as root"
            )
        with private_etc() as etc:
            yield Layout(
                worktree=resolved(worktree),
                toolchain=toolchain,
                host=host_system(),
                private_etc=etc,
                network=self.network,
                tmp_bytes=self.tmp_bytes,
                root_mode=self.root_mode,
                overlay_bytes=writes if self.root_mode else None,
                copy_bytes=None if self.root_mode else tmpfs_footprint(worktree) + writes,
                copy_inodes=0 if self.root_mode else tree_entries(worktree) + file_bound(writes),
                worktree_mode=stat.S_IMODE(os.stat(worktree).st_mode),
                mounter=overlay_mounter(os.uname().machine, os.access(PERL, os.X_OK)),
            )

    def worktree_note(self) -> dict[str, Any]:
        """How the command's writes to the worktree are bounded, for the step's output."""
        if self.root_mode:
            return {"mode": "overlay", "limit_bytes": self.worktree_bytes}
        return {"mode": "copy", "limit_bytes": self.worktree_bytes, "note": COPIED}

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
        disposable: bool = False,
        hide_bytecode: bool = True,
    ) -> Finished:
        """Run ``argv`` (argv[0] an absolute path) in the sandbox, on ``worktree``.

        ``label`` (the run id) names the execution's cgroup. With KODO_SANDBOX_CGROUP
        ``required`` and no cgroup, :class:`CgroupUnavailable` is raised, nothing runs.
        ``disposable``: the caller removes ``worktree`` right after (a private checkout),
        so a root worker does not take back the tree it lent the command (``chown -R``
        of the whole tree once more, for nothing). ``hide_bytecode``: see
        :func:`sandbox_env` (False only where the tree was weighed and carries none).
        """
        bwrap = self.bwrap_path()
        if bwrap is None:
            raise SandboxUnavailable(f"bubblewrap ({self.bwrap}) is not installed")
        tools = toolchain or Toolchain()
        env = sandbox_env(tools, self.passed_env, hide_bytecode=hide_bytecode)
        cgroup, note = self._make_cgroup(label)
        joined: Callable[[list[str]], list[str]] = (
            (lambda command: command)
            if cgroup is None
            else (lambda command: join_argv(cgroup.procs_files, command))
        )
        try:
            watched = _Watched(timeout_s, cap, on_poll, poll_s, joined)
            with self._layout(worktree, tools, counted=cgroup is not None) as layout:
                if not layout.root_mode:
                    done = self._run_on_copy(bwrap, layout, env, argv, watched)
                else:
                    done = self._run_as_root(bwrap, layout, env, argv, watched, disposable)
        finally:
            usage = cgroup.usage() if cgroup is not None else None
            if cgroup is not None:
                cgroup.destroy()
        if usage is None:
            return dataclasses.replace(done, memory_cgroup=note)
        report = {
            "limit_bytes": self.limits.memory_bytes,
            "pids_max": self.limits.nproc,
            # its CPU quota in thousandths of a CPU; 0: none (no cpu controller here)
            "cpu_max_millicpus": round(cgroup.cpu_max * 1000) if cgroup and cgroup.cpu_max else 0,
            **usage.as_dict(),
        }
        return dataclasses.replace(done, memory_cgroup=report)

    def _run_on_copy(
        self,
        bwrap: str,
        layout: Layout,
        env: dict[str, str],
        argv: Sequence[str],
        watched: _Watched,
    ) -> Finished:
        """Without root: the command runs on a copy of the checkout (COPY_SCRIPT), which
        says on a pipe of its own (bubblewrap's standard input) that it copied. No word
        and no timeout: the copy failed and the command never ran, which is the
        sandbox's failure, not the command's (whatever exit status or text the output
        shows)."""
        said, copied_fd = os.pipe()
        try:
            os.set_blocking(said, False)
            done = watched.run(
                bwrap_argv(bwrap, layout, env, argv, self.limits),
                stdin=copied_fd,
                pass_fds=tuple(layout.private_etc.values()),
            )
            try:
                word = os.read(said, 64)
            except BlockingIOError:
                word = b""
        finally:
            os.close(said)
            os.close(copied_fd)
        if word.startswith(b"copied") or done.timed_out:
            return done
        shown = done.head.decode(errors="replace").strip()[-500:]
        raise SandboxUnavailable(
            f"worktree_copy: the checkout could not be copied into the command's bounded"
            f" worktree ({layout.copy_bytes} bytes); the command did not run: {shown}"
        )

    def _run_as_root(
        self,
        bwrap: str,
        layout: Layout,
        env: dict[str, str],
        argv: Sequence[str],
        watched: _Watched,
        disposable: bool = False,
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

        def map_ids(_: subprocess.Popen[bytes]) -> None:
            close(block_r)
            close(info_w)
            info = read_to_end(info_r, START_S)
            if not info:
                return  # bubblewrap failed before its namespace existed: its output says why
            child = int(json.loads(info)["child-pid"])
            Path(f"/proc/{child}/uid_map").write_text(id_map(self.host_uid))
            Path(f"/proc/{child}/gid_map").write_text(id_map(self.host_uid))
            forbid_nested_userns(child)
            bound_rlimits(child, self.limits)
            os.write(block_w, b"1")
            close(block_w)

        try:
            # Inside the try: a lending that fails half way (a timeout, a refused entry)
            # still closes the pipes and takes back what it gave.
            lend_tree(wt, self.host_uid, self.host_uid, keep=[wt / ".git"])
            data = tuple(layout.private_etc.values())
            return watched.run(command, pass_fds=(block_r, info_w, *data), started=map_ids)
        finally:
            for fd in list(open_fds):
                close(fd)
            if not disposable:
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


def _walk(tree: Path) -> Iterator[os.stat_result]:
    """Every file, folder and link under ``tree``, as ``lstat`` sees it: without recursion
    (a checkout may nest thousands of folders deep) and never following links. A tree
    that cannot be read (a path past PATH_MAX, say) is refused with SandboxUnavailable:
    the command does not run on a guess."""
    folders = [os.fspath(tree)]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode):
                        folders.append(entry.path)
                    yield info
        except FileNotFoundError:
            continue  # gone meanwhile: the copy needs less
        except OSError as exc:
            raise SandboxUnavailable(
                f"worktree_copy: cannot measure the checkout for its copy: {exc}"
            ) from exc


def tmpfs_footprint(tree: Path) -> int:
    """What a copy of ``tree`` takes on a tmpfs, which counts pages only: a file's size
    rounded up to them (none when empty), a link's target of SHORT_LINK bytes or more one
    page; folders and shorter targets none."""
    total = 0
    for info in _walk(tree):
        if stat.S_ISLNK(info.st_mode):
            total += PAGE if info.st_size >= SHORT_LINK else 0
        elif not stat.S_ISDIR(info.st_mode):
            total += -(-info.st_size // PAGE) * PAGE
    return total


def file_bound(size: int) -> int:
    """How many files and folders a tmpfs of ``size`` bytes may hold (as the overlay's)."""
    return max(1024, size // BYTES_PER_INODE)


def tree_entries(tree: Path) -> int:
    """The files, folders and links under ``tree`` and itself: the inodes its copy takes."""
    return 1 + sum(1 for _ in _walk(tree))


def limits_of(settings: Settings) -> Limits:
    return Limits(
        cpu_s=settings.exec_cpu_s,
        memory_bytes=settings.exec_memory_bytes,
        nproc=settings.exec_nproc,
        fsize_bytes=settings.exec_fsize_bytes,
        cpus=settings.exec_cpus or default_cpus(),
    )


def default_cpus() -> float:
    """Half of the CPUs this process may run on, at least one: a verification's quota
    unless KODO_EXEC_CPUS says otherwise (the rest is the worker's, Postgres's and the
    other runs')."""
    return float(max(1, len(os.sched_getaffinity(0)) // 2))


def sandbox_of(settings: Settings, environ: dict[str, str]) -> Sandbox:
    return Sandbox(
        bwrap=settings.sandbox_bwrap,
        limits=limits_of(settings),
        network=settings.sandbox_network,
        tmp_bytes=settings.exec_tmp_bytes,
        worktree_bytes=settings.exec_worktree_bytes,
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
        " only (shared memory, /tmp and the worktree overlay, held to KODO_EXEC_TMP_BYTES,"
        " are not counted against KODO_EXEC_MEMORY_BYTES)"
    )
