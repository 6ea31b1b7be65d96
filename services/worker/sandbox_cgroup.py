"""A cgroup per sandboxed execution: the memory and process bounds rlimits cannot give.

RLIMIT_AS does not count shared memory (memfds, the sandbox's tmpfs ``/tmp``), and
RLIMIT_NPROC counts per uid, not per sandbox. A child cgroup of the worker's own cgroup,
made for one execution, bounds both for the whole process tree: ``memory`` (v1
``memory.limit_in_bytes`` + ``memory.memsw.limit_in_bytes``; v2 ``memory.max`` +
``memory.swap.max=0``) and ``pids``. The sandbox joins it through :data:`JOIN_SHIM`
before bubblewrap starts, so no agent code ever runs outside it; the worker never joins.
At the end anything left in it is killed and the child removed.

The top half is pure (parsing ``/proc/self/cgroup`` and mountinfo, choosing files and
values); :func:`create` and :class:`ExecCgroup` do the IO.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

MOUNTS = Path("/sys/fs/cgroup")
"""Where cgroup hierarchies are looked for (a test points it at a nonexistent directory)."""
SHELL = "/bin/sh"
JOIN_SHIM = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
"""Writes its own pid to each ``cgroup.procs`` named before ``--``, then execs the rest
unchanged (arguments are never re-parsed). Exit 125: it could not join, nothing ran."""
JOIN_FAILED = 125


class CgroupUnavailable(RuntimeError):
    """No writable cgroup for the sandbox here; the message says why."""


# --- pure ----------------------------------------------------------------------------


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
    controllers: frozenset[str]  # of {"memory", "pids"}


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
        controllers = (
            frozenset(options & {"memory", "pids"}) if tail[0] == "cgroup" else frozenset()
        )
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
    """Where the worker's own cgroups are: v1 memory and pids hierarchies if mounted
    (memory in v1 means v2 cannot have it), else the v2 unified hierarchy."""
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
                return [Hierarchy(2, directory, frozenset({"memory", "pids"}))]
    return found


def limit_writes(
    version: int, controllers: frozenset[str], memory_bytes: int, nproc: int, files: set[str]
) -> list[tuple[str, str]]:
    """(file, value) to write in a fresh child, in order; optional files only if present."""
    writes: list[tuple[str, str]] = []
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


def child_name(label: str, suffix: str) -> str:
    """A cgroup directory name from a run id (anything else replaced) and a random suffix."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", label)[:64] or "exec"
    return f"kodo-exec-{safe}-{suffix}"


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


# --- IO -------------------------------------------------------------------------------


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
    directories: list[Path]  # one per hierarchy (v1: memory and pids; v2: one)

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
            time.sleep(0.02)


def _v2_enable(directory: Path) -> None:
    """Let children of ``directory`` have memory and pids.

    cgroup v2's no-internal-processes rule refuses that while ``directory`` holds
    processes itself. kodo never moves processes it did not start to make room: the
    operator starts the worker in a delegated cgroup of its own (systemd ``Delegate=yes``
    on a unit whose main process sits in a leaf), else the cgroup is unavailable."""
    wanted = {"memory", "pids"}
    enabled = set((directory / "cgroup.subtree_control").read_text().split())
    if wanted <= enabled:
        return
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
            f"cgroup v2 {directory} holds processes, so its children cannot get memory and"
            " pids limits: start the worker in a delegated cgroup of its own (systemd"
            " Delegate=yes)"
        ) from exc


def create(label: str, memory_bytes: int, nproc: int, mounts_under: Path = MOUNTS) -> ExecCgroup:
    """A fresh, limited child cgroup for one execution, or :class:`CgroupUnavailable`."""
    try:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError as exc:
        raise CgroupUnavailable(f"cannot read /proc/self/cgroup: {exc}") from exc
    places = locate(proc_cgroup, mountinfo, mounts_under)
    if not any("memory" in h.controllers for h in places):
        raise CgroupUnavailable(f"no cgroup memory controller mounted under {mounts_under}")
    name = child_name(label, secrets.token_hex(4))
    made = ExecCgroup(places[0].version, [])
    try:
        for place in places:
            if place.version == 2:
                _v2_enable(Path(place.directory))
            child = Path(place.directory) / name
            child.mkdir(mode=0o755)
            made.directories.append(child)
            files = {p.name for p in child.iterdir()}
            for file, value in limit_writes(
                place.version, place.controllers, memory_bytes, nproc, files
            ):
                (child / file).write_text(value)
    except (OSError, CgroupUnavailable) as exc:
        with contextlib.suppress(OSError):
            made.destroy(wait_s=1.0)
        if isinstance(exc, CgroupUnavailable):
            raise
        raise CgroupUnavailable(f"cannot make a child cgroup: {exc}") from exc
    return made
