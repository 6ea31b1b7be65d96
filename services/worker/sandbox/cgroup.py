"""A cgroup per sandboxed execution: the memory and process bounds rlimits cannot give.

RLIMIT_AS does not count shared memory (memfds, the sandbox's tmpfs ``/tmp``), and
RLIMIT_NPROC counts per uid, not per sandbox. A child cgroup of the worker's own cgroup,
made for one execution, bounds both for the whole process tree: ``memory`` (v1
``memory.limit_in_bytes`` + ``memory.memsw.limit_in_bytes``; v2 ``memory.max`` +
``memory.swap.max=0``) and ``pids``. The sandbox joins it through :data:`JOIN_SHIM`
before bubblewrap starts, so no agent code ever runs outside it; the worker never joins.
At the end anything left in it is killed and the child removed.

The pure part (parsing ``/proc/self/cgroup`` and mountinfo, choosing files and
values) is :mod:`services.worker.sandbox.cgroup_plan`; :func:`create` and
:class:`ExecCgroup` here do the IO.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from services.worker.sandbox.cgroup_plan import (
    CONTROLLERS,
    MOUNTS,
    OPTIONAL,
    Owner,
    child_name,
    counter,
    limit_writes,
    locate,
    owner_of,
    removal_pauses,
    start_ticks,
)

log = structlog.get_logger("kodo.sandbox")
PREFIX = "kodo-exec-"


class CgroupUnavailable(RuntimeError):
    """No writable cgroup for the sandbox here; the message says why."""


@dataclass(frozen=True)
class Usage:
    """What the cgroup saw, read just before it is removed."""

    oom_kills: int
    pids_max_hits: int
    memory_peak: int

    def as_dict(self) -> dict[str, int]:
        return {
            "oom_kills": self.oom_kills,
            "pids_max_hits": self.pids_max_hits,
            "memory_peak_bytes": self.memory_peak,
        }


@dataclass
class ExecCgroup:
    """One execution's child cgroup(s): join them, read usage, kill and remove."""

    version: int
    directories: list[Path]  # one per hierarchy (v1: memory, pids, cpu; v2: one)
    cpu_max: float | None = None  # the CPUs' time it may use; None: no CPU quota here

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.directories]

    def _read(self, name: str) -> str:
        for directory in self.directories:
            with contextlib.suppress(OSError):
                return (directory / name).read_text()
        return ""

    def usage(self) -> Usage:
        if self.version == 1:
            oom = counter(self._read("memory.oom_control"), "oom_kill")
            peak = self._read("memory.max_usage_in_bytes").strip()
        else:
            oom = counter(self._read("memory.events"), "oom_kill")
            peak = self._read("memory.peak").strip()
        hits = counter(self._read("pids.events"), "max")
        return Usage(oom, hits, int(peak) if peak.isdigit() else 0)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for directory in self.directories:
            with contextlib.suppress(OSError):
                text = (directory / "cgroup.procs").read_text()
                found.update(int(p) for p in text.split() if p.isdigit())
        return sorted(found)

    def destroy(self, wait_s: float = 10.0) -> None:
        """Kill every process left in the child and remove it (the worker never is one)."""
        deadline = time.monotonic() + wait_s
        pauses = removal_pauses()
        for directory in self.directories:
            if self.version == 2 and (directory / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    (directory / "cgroup.kill").write_text("1")
        while True:
            left = [p for p in self.pids() if p != os.getpid()]
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            removed = True
            for directory in self.directories:
                try:
                    directory.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    removed = False
            if removed:
                return
            time.sleep(next(pauses))


def _v2_enable(directory: Path) -> frozenset[str]:
    """Let children of ``directory`` have memory and pids, and cpu where it is delegated
    (optional: refused or absent, the execution runs without a CPU quota); the
    controllers its children have.

    cgroup v2's no-internal-processes rule refuses that while ``directory`` holds
    processes itself. kodo never moves processes it did not start to make room: the
    operator starts the worker in a delegated cgroup of its own (systemd ``Delegate=yes``
    on a unit whose main process sits in a leaf), else the cgroup is unavailable."""
    wanted = {"memory", "pids"}
    enabled = set((directory / "cgroup.subtree_control").read_text().split())
    if not wanted <= enabled:
        available = set((directory / "cgroup.controllers").read_text().split())
        if not wanted <= available:
            raise CgroupUnavailable(
                f"cgroup v2 {directory}: controllers {sorted(wanted - available)} not delegated"
            )
        request = " ".join(f"+{c}" for c in sorted(wanted - enabled))
        try:
            (directory / "cgroup.subtree_control").write_text(request)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            raise CgroupUnavailable(
                f"cgroup v2 {directory} holds processes, so its children cannot get memory"
                " and pids limits: start the worker in a delegated cgroup of its own"
                " (systemd Delegate=yes)"
            ) from exc
        enabled |= wanted
    for optional in sorted(OPTIONAL - enabled):
        with contextlib.suppress(OSError):  # not delegated, or refused (realtime threads)
            (directory / "cgroup.subtree_control").write_text(f"+{optional}")
            enabled.add(optional)
    return frozenset(enabled & CONTROLLERS)


def create(
    label: str, memory_bytes: int, nproc: int, mounts_under: Path = MOUNTS, cpus: float = 0.0
) -> ExecCgroup:
    """A fresh, limited child cgroup for one execution, or :class:`CgroupUnavailable`.
    ``cpus``: its CPU quota where the cpu controller is there (see ``cpu_max``)."""
    try:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError as exc:
        raise CgroupUnavailable(f"cannot read /proc/self/cgroup: {exc}") from exc
    places = locate(proc_cgroup, mountinfo, mounts_under)
    if not any("memory" in h.controllers for h in places):
        raise CgroupUnavailable(f"no cgroup memory controller mounted under {mounts_under}")
    name = child_name(label, this_process(), secrets.token_hex(4))
    made = ExecCgroup(places[0].version, [])
    try:
        for place in places:
            controllers = place.controllers
            if place.version == 2:
                controllers = _v2_enable(Path(place.directory))
            child = Path(place.directory) / name
            try:
                child.mkdir(mode=0o755)
                made.directories.append(child)
                files = {p.name for p in child.iterdir()}
                for file, value in limit_writes(
                    place.version, controllers, memory_bytes, nproc, files, cpus
                ):
                    (child / file).write_text(value)
            except OSError as exc:
                if not controllers <= OPTIONAL:
                    raise
                # a v1 cpu hierarchy the worker cannot use: no CPU quota, said so
                log.info("sandbox.cgroup_cpu_unavailable", reason=str(exc))
                if made.directories and made.directories[-1] == child:
                    made.directories.pop()
                    with contextlib.suppress(OSError):
                        child.rmdir()
                continue
            if "cpu" in controllers and cpus > 0:
                made.cpu_max = cpus
    except (OSError, CgroupUnavailable) as exc:
        with contextlib.suppress(OSError):
            made.destroy(wait_s=1.0)
        if isinstance(exc, CgroupUnavailable):
            raise
        raise CgroupUnavailable(f"cannot make a child cgroup: {exc}") from exc
    return made


def _ticks_of(pid: int) -> int | None:
    try:
        return start_ticks(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return None


def _pid_namespace() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


_me: Owner | None = None


def this_process() -> Owner:
    """This worker process, as the names of the cgroups it makes say (read once per
    process: a forked child reads its own)."""
    global _me
    if _me is None or _me.pid != os.getpid():
        ticks = _ticks_of(os.getpid())
        if ticks is None:
            raise CgroupUnavailable("cannot read this process's start time from /proc/self/stat")
        _me = Owner(_pid_namespace(), os.getpid(), ticks)
    return _me


def sweep_orphans(mounts_under: Path = MOUNTS) -> list[str]:
    """Kill and remove the execution cgroups whose worker process is gone; their names.

    A worker killed mid-command (SIGKILL, the OOM killer, a crash) never removed its
    execution's cgroup, and a command it had just started may live on in it (bubblewrap
    ties the sandbox to the worker only once it runs). Each worker sweeps the cgroups
    beside its own at start-up. Only those whose maker is provably gone: made in this
    pid namespace by a pid that no longer runs, or runs but started at another time.
    Another live worker's (this host's other processes share the parent cgroup), one
    made in another pid namespace, and one of another program are never touched.
    """
    try:
        places = locate(
            Path("/proc/self/cgroup").read_text(),
            Path("/proc/self/mountinfo").read_text(),
            mounts_under,
        )
    except OSError:
        return []
    me = _pid_namespace()
    dead: dict[str, list[Path]] = {}
    for place in places:
        try:
            entries = [e for e in os.scandir(place.directory) if e.name.startswith(PREFIX)]
        except OSError:
            continue
        for entry in entries:
            owner = owner_of(entry.name)
            if owner is None or owner.pid_ns != me or _ticks_of(owner.pid) == owner.ticks:
                continue
            dead.setdefault(entry.name, []).append(Path(entry.path))
    version = places[0].version if places else 2
    for name, directories in sorted(dead.items()):
        try:
            ExecCgroup(version, directories).destroy(wait_s=2.0)
        except OSError as exc:
            log.warning("sandbox.cgroup_sweep_failed", cgroup=name, error=str(exc))
            continue
        log.warning("sandbox.cgroup_swept", cgroup=name, reason="its worker process is gone")
    return sorted(dead)
