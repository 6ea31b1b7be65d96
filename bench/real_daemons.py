"""``--opencode real --daemons N``: the think-time phase against real ``opencode serve``.

Issue 11 calls the real daemon the heavier side: this measures how heavy, per prompt.
The bench starts kodo's scripted LLM (its own process, so its CPU is its own) and N
daemons as ``kodo oc up`` does (each in its bubblewrap sandbox with its own port, HOME
and state directory; the runs' worktrees writable, their repositories read-only), and
points the stack at them: ``OC_BASE_URL`` lists the daemons, with their password,
provider and model. The think time is held by the scripted LLM (``[oc:slow=T]`` in the
goal reaches it through the daemon, once per kodo call), so a held prompt is a live
session on the daemon with a model request open, as with a real model.

Per daemon, over the phase: its CPU (the whole process tree, bubblewrap included, from
/proc), its RSS before, at peak and after, the prompts it served (ledger rows naming it
in their ``daemon`` column), the most it held at once (ledger rows' sent..recorded
spans overlapping), and the sessions still on it afterwards (kodo deletes each once its
answer is recorded). From those: daemon CPU ms per prompt, and MB of RSS per held
prompt ((peak - before) / most held at once). Each run works in a worktree of its own,
and a daemon boots an instance for every directory new to it (about 2 s of CPU, and
memory it keeps after the sessions are deleted), so the worktrees each daemon saw are
counted too, and the RSS growth per worktree beside the growth per held prompt.

Its memory mappings are counted as well: they grow with every worktree open at once,
and at ``vm.max_map_count`` (65,530 by default) the daemon livelocks, its main thread
spinning on a refused ``madvise``: measured here after about 90 new worktrees. The
phase's end waits for the reconciler to release the ended runs' worktrees
(``POST /instance/dispose``); the daemon keeps the RSS and mappings it reached (its
allocator does not return them), but reuses them for the next worktrees instead of
growing: ``python -m bench.daemon_churn`` measures that, one worktree after another.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from devstack.kodo_procs import wait_http
from devstack.oc_daemon import daemon, install
from devstack.oc_daemon.config import scripted_provider
from devstack.oc_daemon.daemon import Confinement, DaemonState
from devstack.supervisor import free_port

from .report import Row, none_row
from .stack import Bench
from .stats import descendants, reset_peak_rss, tree_cpu_ms, vm_hwm_kb

LLM_SEED = 0
DAEMON_ROLE = "opencode daemons"  # their CPU, beside the stack's roles
LLM_ROLE = "scripted-llm"  # the stack process's name, so cpu_by_role counts it
MAPS_SHARE = 0.95
"""A daemon holding this share of ``vm.max_map_count`` mappings is at the wall: opencode
1.18.33's allocator then spins on a refused ``madvise`` (EAGAIN) and answers nothing."""


class NotInstalled(RuntimeError):
    """The real OpenCode is not installed where ``kodo oc install`` puts it."""


def opencode_binary() -> Path:
    """The installed ``opencode`` 1.18.33; NotInstalled (saying how to install) if absent.

    The bench never installs it itself: that is a ~350 MB download, ``kodo oc install``'s
    job, not a side effect of a measurement."""
    where = install.cache_dir()
    found = install.find_binary(where)
    if found is None:
        raise NotInstalled(
            f"--opencode real needs opencode {install.VERSION}, which is not installed in"
            f" {where}: run `kodo oc install` (or set {install.CACHE_ENV} to where it is)"
        )
    return found


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def tree_rss_mb(pid: int) -> float:
    return sum(_status_kb(p, "VmRSS") for p in descendants(pid)) / 1024


def _tree_peak_mb(pid: int) -> float:
    return sum(vm_hwm_kb(p) for p in descendants(pid)) / 1024


def most_maps(pid: int) -> int:
    """The most memory mappings one process of the tree holds (the kernel caps each
    process at ``vm.max_map_count``)."""
    counts = [0]
    for p in descendants(pid):
        try:
            counts.append(Path(f"/proc/{p}/maps").read_bytes().count(b"\n"))
        except OSError:
            continue
    return max(counts)


def max_map_count() -> int:
    return int(Path("/proc/sys/vm/max_map_count").read_text())


@dataclass(frozen=True)
class Before:
    """What the daemons and the ledger looked like as the phase began."""

    cpu_ms: dict[str, float]
    rss_mb: dict[str, float]
    peak_reset: bool
    ledger_id: int


@dataclass
class RealDaemons:
    """The scripted LLM and the daemons the bench started, and how to measure them."""

    llm_root: str  # the scripted LLM's address, without /v1
    log_dir: Path  # the stack's: the reconciler's release events are read from it
    daemons: list[DaemonState] = field(default_factory=list)
    state_dirs: list[Path] = field(default_factory=list)

    def stop(self) -> None:
        """Stop every daemon started (the scripted LLM is a stack process: it stops with
        the stack)."""
        for state_dir in self.state_dirs:
            daemon.stop(state_dir)

    def _llm(self, method: str, path: str) -> dict[str, Any]:
        reply = httpx.request(method, f"{self.llm_root}{path}", timeout=30.0)
        reply.raise_for_status()
        body = reply.json()
        return body if isinstance(body, dict) else {"ok": body}

    def begin(self, sessions: sessionmaker[Session]) -> Before:
        """Zero the scripted LLM's counts and the daemons' peak RSS; note CPU, RSS and the
        ledger's last row, so the phase's figures are its own (warm-up runs excluded)."""
        self._llm("POST", "/__kodo/reset")
        reset = all(reset_peak_rss(p) for d in self.daemons for p in descendants(d.pid))
        with sessions() as s:
            last = s.execute(text("SELECT coalesce(max(id), 0) FROM app.opencode_calls")).scalar()
        return Before(
            cpu_ms={d.url: tree_cpu_ms(d.pid) for d in self.daemons},
            rss_mb={d.url: tree_rss_mb(d.pid) for d in self.daemons},
            peak_reset=reset,
            ledger_id=int(last or 0),
        )

    def end(self, sessions: sessionmaker[Session], before: Before) -> dict[str, Any]:
        """The phase's figures per daemon and for the scripted LLM (its CPU is the stack's
        ``scripted-llm`` role, added by the caller)."""
        llm = self._llm("GET", "/__kodo/stats")
        released_s, still_open = await_releases(sessions)
        retried = release_retries(self.log_dir)
        with sessions() as s:
            rows = s.execute(
                text(
                    "SELECT daemon, session_id, request, status, started_at,"
                    " coalesce(finished_at, now()) AS ended"
                    " FROM app.opencode_calls WHERE id > :after AND session_id IS NOT NULL"
                ),
                {"after": before.ledger_id},
            ).all()
        figures = []
        for i, d in enumerate(self.daemons):
            recorded = [r for r in rows if r.daemon == d.url and r.status == "succeeded"]
            mine = [r for r in rows if r.daemon == d.url]
            spent = tree_cpu_ms(d.pid) - before.cpu_ms[d.url]
            peak = _tree_peak_mb(d.pid)
            rss_after, maps = tree_rss_mb(d.pid), most_maps(d.pid)
            # Last: asking for a session by its directory opens that worktree again.
            left, check_error = self._sessions_left(d, recorded)
            held = most_at_once([(r.started_at, r.ended) for r in mine if r.started_at])
            grown = peak - before.rss_mb[d.url]
            places = len({_directory(r.request) for r in mine})
            figures.append(
                {
                    "daemon": i,
                    "url": d.url,
                    "prompts": len(mine),
                    "cpu_ms": round(spent, 1),
                    "cpu_ms_per_prompt": round(spent / len(mine), 1) if mine else None,
                    "rss_before_mb": round(before.rss_mb[d.url], 1),
                    "peak_rss_mb": round(peak, 1),
                    "rss_after_mb": round(rss_after, 1),
                    "peak_held": held,
                    "rss_mb_per_held": round(grown / held, 2) if held else None,
                    "directories": places,
                    "rss_mb_per_directory": round(grown / places, 2) if places else None,
                    "calls_by_status": dict(Counter(r.status for r in mine)),
                    "maps": maps,
                    "sessions_left": left,
                    "sessions_check_error": check_error,
                }
            )
        unknown = sorted({str(r.daemon) for r in rows} - {d.url for d in self.daemons})
        return {
            "daemons": figures,
            "peak_rss_reset": before.peak_reset,
            "max_map_count": max_map_count(),
            "released_within_s": released_s,
            "runs_still_holding_worktrees": still_open,
            "release_retries": retried,
            "prompts": len(rows),
            "prompts_on_unknown_daemons": unknown,
            "scripted_llm": {
                "requests": llm["chat_requests"],
                "held_peak": llm["held_peak"],
                "replies": llm["replies"],
            },
        }

    def _sessions_left(self, d: DaemonState, rows: list[Any]) -> tuple[int | None, str | None]:
        """How many sessions of the phase's recorded answers the daemon still has (``GET
        /session/{id}`` answers 200; 404 once deleted): kodo deletes each once its answer
        is recorded. ``(None, why)`` when the daemon does not say (still busy with a
        backlog the phase's deadline left behind): the figures measured so far stand."""
        left = 0
        with httpx.Client(base_url=d.url, auth=(d.username, d.password), timeout=120.0) as client:
            for row in rows:
                directory = _directory(row.request)
                params = {"directory": directory} if directory else {}
                try:
                    reply = client.get(f"/session/{row.session_id}", params=params)
                except httpx.HTTPError as exc:
                    return None, f"GET /session/{{id}}: {type(exc).__name__}: {exc}"
                if reply.status_code == 200:
                    left += 1
                elif reply.status_code != 404:
                    return None, f"GET /session/{{id}} answered {reply.status_code}"
        return left, None


BENCH_RELEASE_S = 10
"""``KODO_INSTANCE_RELEASE_S`` in the bench (30 by default): longer than an approval
takes here, so no run is released while it waits for one and opened again."""
BENCH_RETRY_S = 15
"""``KODO_INSTANCE_RETRY_S`` in the bench (600 by default): a dispose a loaded daemon
does not answer within its 2 s is tried again within the phase's wait for releases."""
RELEASE_WAIT_S = 120.0
"""How long the phase's end waits for the reconciler to release the worktrees of the
runs that ended (``KODO_INSTANCE_RELEASE_S`` of rest, then the next pass)."""


def await_releases(
    sessions: sessionmaker[Session], *, within_s: float = RELEASE_WAIT_S
) -> tuple[float | None, int]:
    """Wait until no run holds a worktree open on a daemon: (seconds it took, or None if
    some still did after ``within_s``; how many still do)."""
    started = time.monotonic()
    while True:
        with sessions() as s:
            holding = int(
                s.execute(
                    text("SELECT count(*) FROM app.runs WHERE instances_opened_at IS NOT NULL")
                ).scalar_one()
            )
        took = time.monotonic() - started
        if holding == 0:
            return round(took, 1), 0
        if took > within_s:
            return None, holding
        time.sleep(1.0)


RELEASE_EVENTS = ("instances.release_failed", "instances.release_deferred")


def release_retries(log_dir: Path) -> dict[str, int]:
    """How often a release was put off, by the worker's log event: a daemon that did
    not answer or refused (``release_failed``), or a turn still busy in a resting run's
    worktree (``release_deferred``: no call kodo waits for, so none should be)."""
    seen = dict.fromkeys(RELEASE_EVENTS, 0)
    for path in sorted(log_dir.glob("*.log")):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if '"instances.release_' not in line:
                    continue
                try:
                    event = json.loads(line).get("event")
                except (ValueError, AttributeError):
                    continue
                if event in seen:
                    seen[event] += 1
    return {name.removeprefix("instances."): n for name, n in seen.items()}


def _directory(request: object) -> str:
    """The worktree a ledger row's call ran in ("" if the request does not say)."""
    found = request.get("directory") if isinstance(request, dict) else None
    return found if isinstance(found, str) else ""


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    """The most spans open at one instant (an end before a start at the same instant)."""
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    held = peak = 0
    for _, step in edges:
        held += step
        peak = max(peak, held)
    return peak


def start(bench: Bench, count: int) -> RealDaemons:
    """The scripted LLM (a stack process) and ``count`` sandboxed daemons driving it; the
    stack's environment then points kodo at them (set before kodo's processes start)."""
    binary = opencode_binary()
    port = free_port()
    argv = [sys.executable, "-m", "standins.scripted_llm", "--port", str(port)]
    llm = bench.stack.start(LLM_ROLE, [*argv, "--seed", str(LLM_SEED)])
    real = RealDaemons(f"http://127.0.0.1:{port}", bench.stack.log_dir)
    wait_http(f"{real.llm_root}/__kodo/stats", llm)
    env = bench.stack.env
    workspaces = Path(env["KODO_WORKSPACE_DIR"])
    confinement = Confinement(workspaces)
    password = secrets.token_urlsafe(24)  # one for all: kodo has one OC_PASSWORD
    try:
        for i in range(count):
            state_dir = bench.root / "oc" / f"daemon-{i}"
            real.state_dirs.append(state_dir)
            real.daemons.append(
                daemon.start(
                    binary,
                    state_dir=state_dir,
                    port=free_port(),
                    provider=scripted_provider(f"{real.llm_root}/v1"),
                    password=password,
                    confinement=confinement,
                )
            )
    except BaseException:
        real.stop()
        raise
    first = real.daemons[0]
    env["OC_BASE_URL"] = ",".join(d.url for d in real.daemons)
    env["OC_PASSWORD"] = password
    env["OC_PROVIDER_ID"] = first.provider_id
    env["OC_MODEL_ID"] = first.model_id
    # The bench approves each plan as it is shown: a run rests only once it ended, and
    # the phase's end waits for those releases (at most this plus a reconciler pass, or
    # a retry's wait for a dispose the loaded daemon did not answer in time).
    env["KODO_INSTANCE_RELEASE_S"] = str(BENCH_RELEASE_S)
    env["KODO_INSTANCE_RETRY_S"] = str(BENCH_RETRY_S)
    return real


def daemon_rows(f: dict[str, Any], cpu: dict[str, float]) -> list[Row]:
    """The daemons' table: per daemon and together, CPU per prompt and RSS per held
    prompt; the scripted LLM's requests and CPU. ``cpu``: the phase's CPU by role."""
    since = "over the phase" if f["peak_rss_reset"] else "since start (reset refused)"
    rows: list[Row] = []
    for d in f["daemons"]:
        rows += [
            Row(f"daemon {d['daemon']} ({d['url']}): prompts served", d["prompts"], unit="count"),
            Row("  CPU, process tree", d["cpu_ms"]),
            Row("  CPU per prompt", d["cpu_ms_per_prompt"]),
            Row("  RSS before the phase", d["rss_before_mb"], unit="MB"),
            Row(f"  peak RSS {since}", d["peak_rss_mb"], unit="MB"),
            Row(
                "  RSS after the phase (sessions deleted, worktrees released)",
                d["rss_after_mb"],
                unit="MB",
            ),
            Row("  prompts held at once, peak (ledger)", d["peak_held"], unit="count"),
            Row("  RSS per held prompt ((peak - before) / held)", d["rss_mb_per_held"], unit="MB"),
            Row(
                "  memory mappings after the phase",
                d["maps"],
                target=f"< {f['max_map_count']} (vm.max_map_count)",
                met=d["maps"] < MAPS_SHARE * f["max_map_count"],
                unit="count",
            ),
            Row(
                "  worktrees it saw (a new one: an instance booted)", d["directories"], unit="count"
            ),
            Row(
                "  RSS per worktree ((peak - before) / worktrees)",
                d["rss_mb_per_directory"],
                unit="MB",
            ),
            none_row("  sessions of recorded answers still on the daemon", d["sessions_left"]),
            *(
                Row(f"  calls {status}", n, unit="count")
                for status, n in sorted(d["calls_by_status"].items())
            ),
        ]
    rows.append(
        none_row(
            "runs still holding a worktree open after the phase (reconciler's release)",
            f["runs_still_holding_worktrees"],
        )
    )
    rows.append(
        Row("  all released within, after the last run ended", f["released_within_s"], unit="s")
    )
    retried = f["release_retries"]
    rows.append(
        Row("  releases put off: a daemon did not answer", retried["release_failed"], unit="count")
    )
    rows.append(
        none_row(
            "  releases put off: a turn still busy in the worktree", retried["release_deferred"]
        )
    )
    prompts = sum(d["prompts"] for d in f["daemons"])
    daemon_cpu = sum(d["cpu_ms"] for d in f["daemons"])
    grown = sum(d["peak_rss_mb"] - d["rss_before_mb"] for d in f["daemons"])
    held = sum(d["peak_held"] for d in f["daemons"])
    llm = f["scripted_llm"]
    llm_cpu = cpu.get(LLM_ROLE, 0.0)
    rows += [
        Row(f"daemons together ({len(f['daemons'])}): prompts", prompts, unit="count"),
        Row("  CPU per prompt", daemon_cpu / prompts if prompts else None),
        Row(
            "  RSS per held prompt (sum of growths / sum of peaks held)",
            grown / held if held else None,
            unit="MB",
        ),
        Row("scripted LLM: model requests", llm["requests"], unit="count"),
        Row("  answers held at once, peak", llm["held_peak"], unit="count"),
        Row("  CPU", llm_cpu),
        Row("  CPU per prompt", llm_cpu / prompts if prompts else None),
    ]
    return rows
