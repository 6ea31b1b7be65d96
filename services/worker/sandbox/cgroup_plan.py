"""The pure half of the sandbox's cgroup: where the worker's cgroups are, what to write.

Parses ``/proc/self/cgroup`` and mountinfo, chooses a fresh child's files and values,
and builds the join shim's argv; :mod:`services.worker.sandbox.cgroup` does the IO.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MOUNTS = Path("/sys/fs/cgroup")
"""Where cgroup hierarchies are looked for (a test points it at a nonexistent directory)."""
SHELL = "/bin/sh"
JOIN_SHIM = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
"""Writes its own pid to each ``cgroup.procs`` named before ``--``, then execs the rest
unchanged (arguments are never re-parsed). Exit 125: it could not join, nothing ran."""
JOIN_FAILED = 125


CONTROLLERS = frozenset({"memory", "pids", "cpu"})
"""What an execution's cgroup bounds: memory and pids always, the CPU where the worker's
cgroup can give it (optional: a container may not delegate it)."""
OPTIONAL = frozenset({"cpu"})

CPU_PERIOD_US = 100_000
CPU_SHARES_V1 = 256
"""A quarter of a v1 group's default weight (1024): under contention the command yields
to the worker, Postgres and the API, within its quota."""
CPU_WEIGHT_V2 = 25
"""The same quarter of v2's default weight (100)."""


@dataclass(frozen=True)
class Mount:
    point: str  # where it is mounted
    root: str  # the cgroup path shown at that mount point
    fstype: str  # cgroup or cgroup2
    controllers: frozenset[str]  # v1: from the super options; v2: empty (read at IO time)


@dataclass(frozen=True)
class Hierarchy:
    """One place to make execution children: a directory and the controllers it bounds."""

    version: int  # 1 or 2
    directory: str  # the worker's own cgroup directory in this hierarchy
    controllers: frozenset[str]  # of {"memory", "pids", "cpu"}


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as controller -> path; the v2 entry (``0::/x``) is key ``""``."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, names, path = parts
        if names == "":
            found[""] = path
        for name in names.split(","):
            if name:
                found[name] = path
    return found


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts of a ``/proc/self/mountinfo`` text."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        options = set(tail[2].split(","))
        controllers = frozenset(options & CONTROLLERS) if tail[0] == "cgroup" else frozenset()
        mounts.append(Mount(_unescape(fields[4]), _unescape(fields[3]), tail[0], controllers))
    return mounts


def _under(point: str, base: Path) -> bool:
    return Path(point) == base or Path(point).is_relative_to(base)


def _join(mount: Mount, path: str) -> str | None:
    """The directory of cgroup ``path`` under ``mount`` (None: outside what it shows)."""
    rel = Path(path)
    root = Path(mount.root)
    if not (rel == root or rel.is_relative_to(root)):
        return None
    return str(Path(mount.point) / rel.relative_to(root))


def locate(proc_cgroup: str, mountinfo: str, mounts_under: Path = MOUNTS) -> list[Hierarchy]:
    """Where the worker's own cgroups are: v1 memory, pids and cpu hierarchies if mounted
    (memory in v1 means v2 cannot have it), else the v2 unified hierarchy (whose cpu
    controller is asked for at IO time).

    The answer is remembered by the texts themselves (the files are read on every
    execution; they are parsed again only when what they say changed): a worker's
    mount table and cgroup seldom change, and parsing them was about 1% of its CPU."""
    return list(_located(proc_cgroup, mountinfo, mounts_under))


@functools.lru_cache(maxsize=8)
def _located(proc_cgroup: str, mountinfo: str, mounts_under: Path) -> tuple[Hierarchy, ...]:
    return tuple(_locate(proc_cgroup, mountinfo, mounts_under))


def _locate(proc_cgroup: str, mountinfo: str, mounts_under: Path) -> list[Hierarchy]:
    mine = parse_proc_cgroup(proc_cgroup)
    mounts = [m for m in parse_mountinfo(mountinfo) if _under(m.point, mounts_under)]
    found: list[Hierarchy] = []
    for mount in mounts:
        if mount.fstype != "cgroup":
            continue
        for controller in sorted(mount.controllers):
            if controller in mine and not any(controller in h.controllers for h in found):
                directory = _join(mount, mine[controller])
                if directory is not None:
                    found.append(Hierarchy(1, directory, frozenset({controller})))
    if any("memory" in h.controllers for h in found):
        return found
    for mount in mounts:
        if mount.fstype == "cgroup2" and "" in mine:
            directory = _join(mount, mine[""])
            if directory is not None:
                return [Hierarchy(2, directory, CONTROLLERS)]
    return found


def limit_writes(
    version: int,
    controllers: frozenset[str],
    memory_bytes: int,
    nproc: int,
    files: set[str],
    cpus: float = 0.0,
) -> list[tuple[str, str]]:
    """(file, value) to write in a fresh child, in order; optional files only if present.
    ``cpus``: the most CPU time the execution may use, in CPUs (0: no quota), and, with
    the cpu controller, a quarter of the default weight: a command forking spinners
    (each in a session of its own, so past the kernel's autogroups) left a host process
    a tenth of a core (red-team helper-130)."""
    writes: list[tuple[str, str]] = []
    if "cpu" in controllers and cpus > 0:
        quota = max(1000, round(cpus * CPU_PERIOD_US))
        if version == 1:
            writes.append(("cpu.cfs_period_us", str(CPU_PERIOD_US)))
            writes.append(("cpu.cfs_quota_us", str(quota)))
            writes.append(("cpu.shares", str(CPU_SHARES_V1)))
        else:
            writes.append(("cpu.max", f"{quota} {CPU_PERIOD_US}"))
            writes.append(("cpu.weight", str(CPU_WEIGHT_V2)))
    if "memory" in controllers:
        if version == 1:
            writes.append(("memory.limit_in_bytes", str(memory_bytes)))
            if "memory.memsw.limit_in_bytes" in files:
                writes.append(("memory.memsw.limit_in_bytes", str(memory_bytes)))
        else:
            writes.append(("memory.max", str(memory_bytes)))
            if "memory.swap.max" in files:
                writes.append(("memory.swap.max", "0"))
            if "memory.oom.group" in files:
                writes.append(("memory.oom.group", "1"))
    if "pids" in controllers:
        writes.append(("pids.max", str(nproc)))
    return writes


@dataclass(frozen=True)
class Owner:
    """The worker process that made an execution's cgroup: its pid namespace (an inode
    number), pid, and start time in clock ticks (so a reused pid is not taken for it)."""

    pid_ns: int
    pid: int
    ticks: int

    @property
    def tag(self) -> str:
        return f"o{self.pid_ns}.{self.pid}.{self.ticks}"


_OWNED = re.compile(
    r"^kodo-exec-[A-Za-z0-9_-]+-o(?P<ns>[0-9]{1,20})\.(?P<pid>[0-9]{1,10})\.(?P<ticks>[0-9]{1,20})"
    r"-[0-9a-f]+$"
)


def child_name(label: str, owner: Owner, suffix: str) -> str:
    """A cgroup directory name from a run id (anything else replaced), the worker that
    makes it and a random suffix. The run id part never holds a dot, so the owner's
    tag is read back unambiguously (:func:`owner_of`)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", label)[:64] or "exec"
    return f"kodo-exec-{safe}-{owner.tag}-{suffix}"


def owner_of(name: str) -> Owner | None:
    """Who made the execution cgroup ``name``; None for anything else (another program's
    folder, or one made before names carried their owner)."""
    found = _OWNED.fullmatch(name)
    if found is None:
        return None
    return Owner(int(found["ns"]), int(found["pid"]), int(found["ticks"]))


def start_ticks(proc_stat: str) -> int | None:
    """A process's start time in clock ticks from its ``/proc/PID/stat`` line (field 22,
    counted after the command name, which may hold spaces and parentheses)."""
    fields = proc_stat.rpartition(")")[2].split()
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def counter(text: str, key: str) -> int:
    """``key N`` from a flat-keyed cgroup file (memory.events, memory.oom_control)."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def join_argv(procs_files: list[str], argv: list[str]) -> list[str]:
    """``argv`` started through the join shim (pure; ``procs_files`` are kodo's paths)."""
    if any(f == "--" for f in procs_files):
        raise ValueError("a cgroup.procs path cannot be --")
    return [SHELL, "-c", JOIN_SHIM, "kodo-cgroup-join", *procs_files, "--", *argv]


FIRST_PAUSE_S = 0.0005
LAST_PAUSE_S = 0.02


def removal_pauses() -> Iterator[float]:
    """How long to wait between tries at removing a child cgroup the kernel still calls
    busy: the command's processes have exited, but the last leaves the cgroup a fraction
    of a millisecond later (measured: p50 0.12 ms, p90 0.5). Half a millisecond first,
    doubling up to 20 ms: a fixed 20 ms pause made every sandboxed execution 20 ms
    longer, as the first try always came too soon."""
    pause = FIRST_PAUSE_S
    while True:
        yield pause
        pause = min(pause * 2, LAST_PAUSE_S)
