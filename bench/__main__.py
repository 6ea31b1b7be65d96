"""``python -m bench``: start a private stack, measure kodo, print a table per phase.

Phases (``--phases``, all by default): ``base``, kodo against bare Celery running the
same four tasks (latency, throughput, CPU, SQL and Redis per run); ``think``, N runs at
once with every provider call held T ms (bench/think.py); ``sse``, W open watchers
while other requests are timed (bench/watchers.py). ``--peers DIR`` adds the base
rows' ratio to the durable-execution reference (bench/peers.py). ``--opencode real
--daemons N`` runs the think phase against N real daemons (bench/real_daemons.py).
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

import click
import structlog
from sqlalchemy import Engine, make_url

from devstack.handle import repo_root
from devstack.supervisor import holdable
from services.worker.sandbox.toolchain import resolve_toolchain
from shared.config import Settings
from shared.db.engine import make_engine, make_session_factory

from . import floor, phases, real_daemons
from .peers import OWN_CPU_MS, Peer, PeerError, describe, peer_rows
from .report import Row, at_least, at_most, rows_json, table, write_json
from .stack import REPOS, Bench, discard, prepare, start_kodo_services
from .stats import percentile
from .think import UNACCOUNTED, think, think_rows
from .watchers import sse, sse_rows

BENCH_DB = "kodo_bench"
PHASES = ("base", "think", "sse")


def _p(values: list[float] | None, q: float) -> float | None:
    return percentile(list(values or []), q)


def _median_diff(a: list[float], b: list[float]) -> float | None:
    """Median of pairwise differences (orchestration = end-to-end minus step bodies)."""
    return percentile([x - y for x, y in zip(a, b, strict=False)], 50) if a and b else None


def _per_s(cpu_ms_per_run: float) -> float | None:
    """Runs per second two fully busy cores allow at this CPU cost per run."""
    return 2000 / cpu_ms_per_run if cpu_ms_per_run > 0 else None


_ENDS = ("commits", "rollbacks")


def _role_rows(cpu: dict[str, float], threads: dict[str, float]) -> list[Row]:
    """CPU per run of each kind of process, the workers' split by thread under theirs."""
    rows = []
    for role, ms in cpu.items():
        if ms >= 1:
            rows.append(Row(f"  CPU per run, {role}", ms))
            if role == "kodo_worker":
                rows += _worker_thread_rows(threads)
    return rows


def _worker_thread_rows(threads: dict[str, float]) -> list[Row]:
    """The workers' CPU per run by thread, read per thread from /proc (threads pool):
    Celery's event loop on each main thread, the steps on the others; each in user
    and kernel time (sockets, starting git and the sandbox, the GIL's futexes)."""
    if not threads:
        return []
    return [
        Row(
            "    of which the main threads (Celery's event loop), user + kernel",
            threads.get("main_user", 0.0) + threads.get("main_system", 0.0),
        ),
        Row("    of which the other threads (the steps), user", threads.get("others_user")),
        Row("    of which the other threads (the steps), kernel", threads.get("others_system")),
    ]


def build_rows(kodo: list[phases.Phase], base: list[phases.Phase]) -> list[Row]:
    first, bfirst = kodo[0].figures, base[0].figures
    lat = first["latency"]
    counts = first["throughput_counts_per_run"]
    exact = first["latency_counts_per_run"]  # sequential, complete runs: exact per-run counts
    calls = first["calls"]
    beat = first["beat_approve_to_applying_ms"]
    sql_worker = exact["sql"]["worker"]
    sql_api = exact["sql"]["api"]
    provider = exact.get("provider", {})  # sequential, complete runs: exact per run

    def ends(kind: str) -> float:
        """Transactions ended (``kind`` "": sent ones; "autocommit_": signalled only)."""
        return float(sum(c.get(f"{kind}{end}", 0) for c in (sql_worker, sql_api) for end in _ENDS))

    # Comparable with the reference, whose steps are stubs: minus the run's git and tests.
    waiting_no_git = _median_diff(lat["submit_to_waiting_ms"], lat["compile_work_ms"])
    done_no_work = _median_diff(lat["approve_to_done_ms"], lat["after_approval_work_ms"])
    rows = [
        Row(
            "submit->waiting p50",
            _p(lat["submit_to_waiting_ms"], 50),
            _p(bfirst["submit_to_waiting_ms"], 50),
            "<= 12",
            at_most(_p(lat["submit_to_waiting_ms"], 50), 12),
        ),
        Row(
            "  without git (like the reference's stub steps) p50",
            waiting_no_git,
            target="<= 12",
            met=at_most(waiting_no_git, 12),
        ),
        Row(
            "  of which the submit request (auth, pinning, intent and run) p50",
            _p(lat.get("submit_request_ms"), 50),
        ),
        Row(
            "submit->waiting p95",
            _p(lat["submit_to_waiting_ms"], 95),
            _p(bfirst["submit_to_waiting_ms"], 95),
        ),
        Row(
            "approve->done p50",
            _p(lat["approve_to_done_ms"], 50),
            _p(bfirst["approve_to_done_ms"], 50),
            "<= 12",
            at_most(_p(lat["approve_to_done_ms"], 50), 12),
        ),
        Row(
            "  without git and verification (like the reference) p50",
            done_no_work,
            target="<= 12",
            met=at_most(done_no_work, 12),
        ),
        Row(
            "approve->done p95",
            _p(lat["approve_to_done_ms"], 95),
            _p(bfirst["approve_to_done_ms"], 95),
        ),
        Row(
            "  of which outside step bodies p50",
            _median_diff(lat["approve_to_done_ms"], lat["apply_decide_execute_steps_ms"]),
        ),
        Row(
            "  step bodies (call, git, verification) p50",
            _p(lat["apply_decide_execute_steps_ms"], 50),
        ),
        Row(
            "  submit->waiting outside CompileST p50",
            _median_diff(lat["submit_to_waiting_ms"], lat["compile_step_ms"]),
        ),
        Row("  CompileST body (call, worktree) p50", _p(lat["compile_step_ms"], 50)),
        Row("approve->applying (nudge, SSE) p50", _p(lat["approve_to_applying_ms"], 50)),
        Row(
            "approve->ApplyPatchST started (DB) p50",
            _p(first["approve_to_apply_started_db_ms"], 50),
        ),
        Row(
            "  approve->watcher dispatched (DB) p50",
            _p(first["approve_to_dispatched_db_ms"], 50),
        ),
        Row("approve->applying (beat only) p50", _p(beat, 50)),
        Row("approve->applying (beat only) max", _p(beat, 100)),
    ]
    for k, b in zip(kodo, base, strict=True):
        n = k.workers
        rows.append(
            Row(
                f"runs/s, {k.figures['in_flight']} at once, {n} workers",
                k.figures["runs_per_s"],
                b.figures["runs_per_s"],
                ">= 90" if n == 2 else "",
                at_least(k.figures["runs_per_s"], 90) if n == 2 else None,
                unit="runs/s",
            )
        )
        rows.append(
            Row(
                f"  step progress in runs/s ({k.figures['completed']} finished)",
                k.figures["run_equivalents_per_s"],
                unit="runs/s",
            )
        )
    rows += [
        Row("provider call, raw client p50", calls["raw_ms"]),
        Row("provider call, through ledger p50", calls["wrapped_ms"]),
        Row("provider-call overhead (claim+record)", calls["overhead_ms"]),
        Row("cache hit L1 p50", calls["l1_us"], unit="us"),
        Row("cache hit L2 (ledger) p50", calls["l2_ms"]),
    ]
    for k, b in zip(kodo, base, strict=True):
        rss = k.figures["rss_mb"][0]
        rows.append(
            Row(
                f"worker peak RSS, largest process ({k.workers} workers)",
                rss,
                b.figures["rss_mb"][0],
                "<= 200",
                at_most(rss, 200),
                unit="MB",
            )
        )
    cpu = first["cpu_ms_per_run"]
    total_cpu = sum(cpu.values())
    # What the run's own work costs (git, the verification command, the stub provider)
    # versus what kodo adds around it: the floor no orchestration can go under.
    work_cpu = phases.work_cpu(cpu)
    own_cpu = total_cpu - work_cpu
    machine_cpu = first.get("machine_cpu_ms_per_run")
    bare = bfirst.get("cpu_ms_per_run", {}).get("workers")
    rows += [
        Row("CPU per run, all processes", total_cpu),
        # kodo's workers run the steps' own code too (git excluded); bare Celery's four
        # stub tasks only pay for being delivered: its figure over 4 is the cost of one
        # delivery on this machine now, which kodo pays for each of its deliveries.
        Row("  CPU per run, Celery workers (bare: 4 stub tasks)", cpu.get("kodo_worker"), bare),
        Row("  CPU per task delivery, bare Celery", None if bare is None else bare / 4),
        Row(
            "  task deliveries per run, kodo (BRPOPs, 300 at once)",
            counts["redis"].get("brpop"),
            4.0,
            unit="count",
        ),
        *_role_rows(cpu, first.get("worker_threads_ms_per_run", {})),
        Row("  of which kodo itself (API, workers, Postgres, Redis)", own_cpu),
        *floor.floor_rows(
            first.get("unit_costs"),
            api_requests=first.get("api_requests_per_run"),
            deliveries=counts["redis"].get("brpop"),
            delivery_ms=None if bare is None else bare / 4,
            transactions=ends("") + ends("autocommit_"),
            provider_requests=float(sum(provider.values())),
            limit_ms=OWN_CPU_MS,
        ),
        Row("CPU per run, the whole machine (the bench's driver excluded)", machine_cpu),
        Row(
            f"  of which no process above accounts for ({UNACCOUNTED})",
            None if machine_cpu is None else machine_cpu - total_cpu,
        ),
        Row(
            "runs/s a quiet 2-core machine allows",
            _per_s(total_cpu),
            target=">= 90",
            met=at_least(_per_s(total_cpu), 90),
            unit="runs/s",
        ),
        Row(
            "  runs/s the whole machine's CPU per run allows",
            None if machine_cpu is None else _per_s(machine_cpu),
            unit="runs/s",
        ),
        Row("  if kodo's own CPU were the only cost", _per_s(own_cpu), unit="runs/s"),
        Row("  if git, tests and provider were the only cost", _per_s(work_cpu), unit="runs/s"),
        Row(
            "    counting what no process accounts for as the tests' (their sandbox too)",
            None if machine_cpu is None else _per_s(work_cpu + machine_cpu - total_cpu),
            unit="runs/s",
        ),
        Row("SQL statements per run (workers)", sql_worker.get("statements"), unit="count"),
        Row("SQL statements per run (API)", sql_api.get("statements"), unit="count"),
        Row("SQL transactions per run (all)", ends(""), unit="count"),
        Row(
            "  one-statement reads outside a transaction (autocommit)",
            ends("autocommit_"),
            unit="count",
        ),
        Row(
            "pool checkouts per run",
            sql_worker.get("checkouts", 0) + sql_api.get("checkouts", 0),
            unit="count",
        ),
        # A backend that starts and ends within the phase is missing from the postgres
        # CPU row (read from the backends alive at its ends): this row shows that churn.
        Row(
            "database connections opened per run",
            sql_worker.get("connects", 0) + sql_api.get("connects", 0),
            unit="count",
        ),
        Row(
            "Redis commands per run",
            sum(counts["redis"].values()),
            base[-1].figures["redis_per_run"],
            unit="count",
        ),
        Row("HTTP requests to the provider per run", sum(provider.values()), unit="count"),
        *(
            Row(f"  {route}", n, unit="count")
            for route, n in sorted(provider.items(), key=lambda kv: -kv[1])
        ),
        # warm caches (the config listing, the submit's policy): the throughput runs'
        *_spawn_rows("workers", counts["sql"]["worker"]),
        *_spawn_rows("API", counts["sql"]["api"]),
    ]
    return rows


SPAWN = "spawn:"


def _spawn_rows(role: str, counted: dict[str, float]) -> list[Row]:
    """Processes ``role`` started per run, then by what they ran (bench.spawns: a sandbox
    counts once, named by its program). From the throughput runs: the sequential ones
    each use a repository no worker has touched yet, and list its config anew."""
    started = {k.removeprefix(SPAWN): n for k, n in counted.items() if k.startswith(SPAWN)}
    what = "a sandbox counts once, named by what it runs"
    return [
        Row(f"processes started per run ({role}; {what})", sum(started.values()), unit="count"),
        *(
            Row(f"  {role}: {name}", n, unit="count")  # named apart: the JSON keys by row
            for name, n in sorted(started.items(), key=lambda kv: (-kv[1], kv[0]))
        ),
    ]


def stop_on_sigterm() -> None:
    """A SIGTERM (``kill``, a CI or ``timeout`` limit) ends the bench as Ctrl-C does: by
    an exception, so the ``finally`` that stops its stack runs. Python's default ends
    the process at once, and the stack, started in sessions of its own, ran on: a
    private Redis, workers, the API, the collector, daemons, their Postgres backends."""

    def exit_now(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, holdable(exit_now))


def _phases(raw: str) -> list[str]:
    chosen = [p.strip() for p in raw.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PHASES]
    if unknown or not chosen:
        raise click.BadParameter(f"choose among {','.join(PHASES)}: got {raw!r}")
    return [p for p in PHASES if p in chosen]


def _base(
    bench: Bench,
    engine: Engine,
    counts: list[int],
    kodo: list[phases.Phase],
    runs: int,
    latency_runs: int,
    beat_runs: int,
    pool: str,
    deadline: float,
) -> None:
    """kodo's side of the base phase, once per worker count."""
    run_settings = Settings.from_env(bench.stack.env)
    for i, n in enumerate(counts):
        click.echo(f"kodo, {n} workers ...")
        kodo.append(
            phases.kodo(
                bench,
                make_session_factory(engine),
                run_settings,
                workers=n,
                runs=runs,
                latency_runs=latency_runs,
                beat_runs=beat_runs,
                pool=pool,
                full=i == 0,
                deadline_s=deadline,
            )
        )


@click.command()
@click.option(
    "--phases",
    "phase_list",
    default=",".join(PHASES),
    show_default=True,
    help="Phases to run: base (kodo vs bare Celery), think (held provider calls), sse.",
)
@click.option("--runs", default=300, show_default=True, help="Runs in flight at once.")
@click.option("--workers", default="2", show_default=True, help="Worker counts, e.g. 2,4.")
@click.option(
    "--pool",
    type=click.Choice(["solo", "threads", "prefork"]),
    default="threads",
    show_default=True,
    help="solo: N single-task worker processes; threads: N processes running 4 tasks each"
    " (threads); prefork: one worker with N children.",
)
@click.option("--latency-runs", default=20, show_default=True, help="Sequential timed runs.")
@click.option("--beat-runs", default=4, show_default=True, help="Runs approved without nudge.")
@click.option("--database-url", default=None, help=f"Postgres [DATABASE_URL, db {BENCH_DB}].")
@click.option("--redis-url", default=None, help="Use this Redis instead of a private one.")
@click.option("--approval-poll", default=2.0, show_default=True, help="APPROVAL_POLL_S.")
@click.option(
    "--json", "json_path", default="bench/results/latest.json", show_default=True, type=Path
)
@click.option(
    "--deadline", default=75.0, show_default=True, help="Seconds the throughput phase may take."
)
@click.option("--think-runs", default=1000, show_default=True, help="Think-time phase: runs.")
@click.option(
    "--think-ms", default=20000, show_default=True, help="Think-time phase: ms each call is held."
)
@click.option(
    "--think-deadline",
    default=None,
    type=float,
    help="Seconds the think-time phase may take [3 x think time + 600].",
)
@click.option(
    "--think-submit-limit",
    default=0,
    show_default=True,
    help="Think-time phase: at most this many runs being submitted at once (0: all at once).",
)
@click.option(
    "--opencode",
    type=click.Choice(["compat", "real"]),
    default="compat",
    show_default=True,
    help="The think phase's provider: oc-compat, or real `opencode serve` daemons (each in"
    " its sandbox) driving the scripted LLM, which holds the think time.",
)
@click.option(
    "--daemons",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="With --opencode real: how many daemons (OC_BASE_URL lists them all).",
)
@click.option("--watchers", default=1000, show_default=True, help="SSE phase: open watchers.")
@click.option(
    "--peers",
    "peers_dir",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A ../shared/peers/run_all.sh result folder: print kodo/DBOS for comparable rows.",
)
@click.option(
    "--repos",
    default=REPOS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Sample repositories the runs are spread over (1: every run on one repository).",
)
@click.option("--keep", is_flag=True, help="Keep logs and workspaces under .kodo/bench.")
def main(
    phase_list: str,
    runs: int,
    workers: str,
    pool: str,
    latency_runs: int,
    beat_runs: int,
    database_url: str | None,
    redis_url: str | None,
    approval_poll: float,
    json_path: Path,
    deadline: float,
    think_runs: int,
    think_ms: int,
    think_deadline: float | None,
    think_submit_limit: int,
    opencode: str,
    daemons: int,
    watchers: int,
    peers_dir: Path | None,
    repos: int,
    keep: bool,
) -> None:
    """Benchmark kodo end to end: against a bare-Celery chain of the same four tasks, with
    provider calls held, and with open SSE watchers."""
    began = time.monotonic()
    stop_on_sigterm()
    chosen = _phases(phase_list)
    if opencode == "real" and chosen != ["think"]:
        raise click.UsageError("--opencode real runs the think phase only: pass --phases think")
    if opencode == "compat" and daemons != 1:
        raise click.UsageError("--daemons is for --opencode real (oc-compat is one server)")
    if opencode == "real":
        try:
            real_daemons.opencode_binary()
        except real_daemons.NotInstalled as exc:
            raise click.ClickException(str(exc)) from exc
    peer: Peer | None = None
    if peers_dir is not None:
        if "base" not in chosen:
            raise click.UsageError("--peers compares the base rows: include base in --phases")
        try:
            peer = Peer.load(peers_dir)
        except PeerError as exc:
            raise click.UsageError(str(exc)) from exc
    # The provider-call phase runs the wrapper in this process: keep its info logs quiet.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    counts = [int(n) for n in workers.split(",") if n.strip()]
    settings = Settings.from_env()
    url = database_url or make_url(settings.database_url).set(database=BENCH_DB).render_as_string(
        hide_password=False
    )
    root = repo_root() / ".kodo" / "bench" / time.strftime("%Y%m%d-%H%M%S")
    # A sent call waits for its answer past any think time held here (never timed out);
    # a real daemon first bootstraps each new worktree (seconds of CPU, one at a time):
    # its queue may take the phase's own deadline, not a timeout's.
    queued_ms = 30000 if opencode == "compat" else 600000
    bench = prepare(
        root, url, redis_url, approval_poll, oc_timeout_ms=think_ms + queued_ms, repos=repos
    )
    engine = make_engine(url)  # (no connection yet)
    base: list[phases.Phase] = []
    kodo: list[phases.Phase] = []
    think_figures: dict[str, Any] | None = None
    sse_figures: dict[str, Any] | None = None
    real: real_daemons.RealDaemons | None = None
    try:
        where = make_url(url).database
        click.echo(f"bench: database {where}, redis {bench.redis_url}, logs {bench.stack.log_dir}")
        click.echo(f"bench: runs spread over {repos} sample repositories")
        tools = resolve_toolchain(["python3"], bench.stack.env.get("PATH", ""), ())
        python3 = tools.programs.get("python3")  # as the sandbox resolves it
        click.echo(f"bench: verification commands run {python3 or 'no python3 (none usable)'}")
        if opencode == "real":
            click.echo(f"starting the scripted LLM and {daemons} opencode daemons ...")
            real = real_daemons.start(bench, daemons)
        if "base" in chosen:
            for n in counts:
                click.echo(f"bare celery, {n} workers ...")
                base.append(phases.baseline(bench, n, runs, latency_runs, pool))
        # Connections are not spread evenly over gunicorn workers: either one may hold them all.
        start_kodo_services(bench, api_threads=2 * runs + 64, oc_compat=real is None)
        if "base" in chosen:
            _base(bench, engine, counts, kodo, runs, latency_runs, beat_runs, pool, deadline)
        if "think" in chosen:
            against = "oc-compat" if real is None else f"{daemons} opencode daemons"
            click.echo(f"think time, {think_runs} runs x 3 calls x {think_ms} ms, {against} ...")
            think_figures = think(
                bench,
                make_session_factory(engine),
                runs=think_runs,
                think_ms=think_ms,
                deadline_s=think_deadline or 3 * think_ms / 1000 + 600,
                submit_limit=think_submit_limit,
                real=real,
            )
        if "sse" in chosen:
            click.echo(f"sse, {watchers} watchers ...")
            sse_figures = sse(bench, make_session_factory(engine), watchers=watchers)
    finally:
        engine.dispose()
        bench.stack.stop()
        if real is not None:
            real.stop()
        if not keep:
            discard(bench)
    elapsed = time.monotonic() - began
    details: dict[str, Any] = {
        "elapsed_s": round(elapsed, 1),
        "phases": chosen,
        "runs": runs,
        "pool": pool,
        "repos": repos,
        "approval_poll_s": approval_poll,
    }
    rows: list[Row] = []
    if "base" in chosen:
        rows = build_rows(kodo, base)
        click.echo("")
        click.echo(table(rows))
        failures = [f for k in kodo for f in k.figures.get("failures", [])]
        if failures:
            click.secho(f"\n{len(failures)} runs did not succeed: {failures[:5]}", fg="red")
        details["kodo"] = [{"workers": k.workers, **k.figures} for k in kodo]
        details["baseline"] = [{"workers": b.workers, **b.figures} for b in base]
    if peer is not None:
        compared = peer_rows(rows, peer)
        other = "-" if peer.other_load_pct is None else f"{peer.other_load_pct:g}%"
        click.echo(f"\nkodo against DBOS ({peer.path}; other load during its run: {other})")
        click.echo(table(compared, baseline="DBOS"))
        details["peers"] = {"dbos": describe(peer), "rows": rows_json(compared)}
    if think_figures is not None:
        shown = think_rows(think_figures)
        click.echo(f"\nthink time: {think_runs} runs at once, every call held {think_ms} ms")
        click.echo(table(shown, baseline=None))
        if think_figures["retried"]:
            click.echo("\nrequests the API refused with Retry-After, sent again:")
            for kind, count in think_figures["retried"].items():
                click.echo(f"  {count} x {kind}")
        if think_figures["failed"]:
            click.secho(f"\n{think_figures['failed']} runs did not succeed:", fg="red")
            for kind, count in think_figures["failure_kinds"].items():
                click.secho(f"  {count} x {kind}", fg="red")
        details["think"] = {"rows": rows_json(shown), **think_figures}
        if real is not None:
            per_daemon = real_daemons.daemon_rows(think_figures, think_figures["cpu_ms"])
            click.echo(f"\nthe {daemons} opencode daemons and the scripted LLM over the phase")
            click.echo(table(per_daemon, baseline=None))
            details["think"]["daemon_rows"] = rows_json(per_daemon)
            for d in think_figures["daemons"]:
                if d["sessions_check_error"]:
                    click.secho(f"daemon {d['daemon']}: {d['sessions_check_error']}", fg="red")
                if d["maps"] >= real_daemons.MAPS_SHARE * think_figures["max_map_count"]:
                    click.secho(
                        f"daemon {d['daemon']}: {d['maps']} memory mappings, at the kernel's"
                        f" vm.max_map_count ({think_figures['max_map_count']}): it livelocks"
                        " there (fewer worktrees per daemon, or a higher limit)",
                        fg="red",
                    )
    if sse_figures is not None:
        shown = sse_rows(sse_figures)
        click.echo(f"\nSSE: {watchers} open watchers while other requests are timed")
        click.echo(table(shown, baseline=None))
        if sse_figures["errors"]:
            click.secho(f"\nwatchers refused or broken: {sse_figures['errors'][:5]}", fg="red")
        details["sse"] = {"rows": rows_json(shown), **sse_figures}
    write_json(json_path, rows, details)
    click.echo(f"\n{elapsed:.0f}s; JSON in {json_path}")


if __name__ == "__main__":
    main()
