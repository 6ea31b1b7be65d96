"""Percentiles and process probes (peak RSS from /proc, Redis command counts)."""

from __future__ import annotations

import math
import os
import resource
import threading
from pathlib import Path

from redis import Redis


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (prefork children, git and python grandchildren)."""
    found = [pid]
    for current in found:
        try:  # a git child may exit between being listed and being read
            tasks = list(Path(f"/proc/{current}/task").glob("*/children"))
        except OSError:
            continue
        for task in tasks:
            try:
                found += [int(c) for c in task.read_text().split()]
            except OSError:
                continue
    return found


def vm_hwm_kb(pid: int) -> int:
    """Peak resident set size of a process (kB), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Set a process's peak RSS (VmHWM) back to its current RSS, so the next reading is the
    peak of what follows (``/proc/PID/clear_refs``, value 5); False if the kernel refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb(pids: list[int]) -> tuple[float, float]:
    """(largest single process, sum over processes) peak RSS in MB."""
    peaks = [vm_hwm_kb(p) for p in pids]
    return (max(peaks, default=0) / 1024, sum(peaks) / 1024)


def redis_calls(client: Redis) -> int:
    """Commands the server has executed since its last stats reset (INFO commandstats)."""
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if isinstance(v, dict) and "calls" in v)


def cpu_ms(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU time of a process in ms; children are git, tests."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return (0.0, 0.0)
    fields = [int(f) for f in raw.rsplit(")", 1)[1].split()[11:15]]  # utime stime cutime cstime
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    return ((fields[0] + fields[1]) * tick_ms, (fields[2] + fields[3]) * tick_ms)


def thread_cpu_ms(pid: int) -> dict[str, float]:
    """A process's CPU so far by thread kind, in ms: its main thread's and the others',
    each split into user and kernel time (``main_user``, ``main_system``,
    ``others_user``, ``others_system``); empty if it is gone. A thread that ended took
    its time with it: measured across a phase, only long-lived threads count (a Celery
    worker's main thread runs its event loop; the threads pool's run the tasks)."""
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    found = {"main_user": 0.0, "main_system": 0.0, "others_user": 0.0, "others_system": 0.0}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return {}
    for task in tasks:
        try:
            raw = (task / "stat").read_text()
        except OSError:
            continue
        utime, stime = (int(f) for f in raw.rsplit(")", 1)[1].split()[11:13])
        kind = "main" if task.name == str(pid) else "others"
        found[f"{kind}_user"] += utime * tick_ms
        found[f"{kind}_system"] += stime * tick_ms
    return found


def _busy_idle_ticks() -> tuple[int, int]:
    """Clock ticks all cores spent busy, and idle or waiting on IO, since boot (steal is
    neither: another guest's time; guest time is in user)."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = ticks[:7]
    return user + nice + system + irq + softirq, idle + iowait


def machine_cpu_ms() -> float:
    """CPU ms the whole machine has spent (every core, outside idle and iowait), less this
    process's own (the bench's driver).

    Per-process figures miss what no kodo process reaps: a sandboxed command's PID
    namespace init is handed to the host's init when bubblewrap exits, taking the
    command's CPU (the verification itself) with it, and the kernel's own threads tear
    the namespaces down. Two readings around a phase say what the phase cost the
    machine, which is what bounds its wall time.
    """
    busy_ms = _busy_idle_ticks()[0] * 1000 / os.sysconf("SC_CLK_TCK")
    me = resource.getrusage(resource.RUSAGE_SELF)
    return busy_ms - (me.ru_utime + me.ru_stime) * 1000


class BusySampler:
    """How busy the machine's cores were, second by second, while a phase ran (every
    process, the bench's driver too): a wall time bound by CPU shows as every second
    near 100%, one bound by waiting as idle stretches."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.shares: list[float] = []  # busy share of all cores, per interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-busy", daemon=True)

    def __enter__(self) -> BusySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        busy, idle = _busy_idle_ticks()
        while not self._stop.wait(self.interval_s):
            now_busy, now_idle = _busy_idle_ticks()
            spent = (now_busy - busy) + (now_idle - idle)
            if spent > 0:
                self.shares.append((now_busy - busy) / spent)
            busy, idle = now_busy, now_idle

    def share_at_least(self, share: float) -> float | None:
        """The fraction of the sampled seconds at least ``share`` busy (None: no sample)."""
        if not self.shares:
            return None
        return sum(s >= share for s in self.shares) / len(self.shares)


def tree_cpu_ms(pid: int) -> float:
    """CPU ms so far of ``pid`` and every process under it (with their reaped children)."""
    return sum(sum(cpu_ms(p)) for p in descendants(pid))
