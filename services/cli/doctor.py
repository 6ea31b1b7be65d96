"""``kodo doctor``: the seed's triage (§5, §9) as one command, one line per check.

Checks, each with a short timeout so a dead dependency is reported, not waited on:

- postgres: a real login and ``SELECT current_user``;
- redis: ``PING`` on the broker;
- migrations: the database's ``app.alembic_version`` against the code's alembic head;
- opencode: ``GET {OC_BASE_URL}/global/health``; when it fails, whether anything else
  listens on that port (a port collision) or nothing does (a dead daemon);
- model: ``GET {OC_BASE_URL}/config/providers`` must offer ``OC_PROVIDER_ID/OC_MODEL_ID``;
  the line names the provider, the model, its package and prices, and says plainly when
  it is kodo's scripted stand-in (the answer's provider options, which hold the
  provider's key, are never read or printed);
- workers: ``inspect().stats()`` over the broker. Versions are read honestly from
  ``app.processes``, where every worker records its ``app_version`` at start: a live
  worker is matched by the (hostname, pid) its stats report, and compared with this
  code's ``shared.version.app_version()``. A worker without such a row is red, since
  its version cannot be vouched for;
- api: ``GET {api}/healthz`` (``--api-url``/``KODO_API_URL``, else the one ``kodo up``
  recorded) answers 200: the API reaches Postgres and Redis;
- beat: the age of beat's last tick, which beat stamps in ``app.processes.last_seen_at``
  every few seconds: red when it never ticked or is older than BEAT_STALE_S;
- stuck runs: non-terminal runs not updated for more than ``--stuck-minutes``, by
  status (``waiting_input`` waits for a human: listed, never red);
- unknown calls: ledger rows whose outcome is ``unknown`` (never retried silently);
- waiting upgrade: runs a worker of another step contract parked (``waiting_upgrade``),
  by the contract they wait for. Red when it is not this code's contract (no worker of
  this code can resume them: run a worker of that contract, or cancel them); a warning
  when it is (this code's reconciler resumes them at its next pass);
- statistics: kodo's tables of STATS_MIN_ROWS rows or more that Postgres has no current
  planner statistics for while autovacuum does not analyze them: a warning naming them
  and the ``ANALYZE`` to run (see :func:`judge_statistics`).

The probes run concurrently (each on its own connection), and the broker's broadcast
waits WORKERS_WINDOW_S for workers' replies, and the whole ``--timeout`` again only when
none came (a busy worker answers late); before, it always waited the whole ``--timeout``,
serially after the other probes: most of the old 5.6 s.

Exit code 0 when every check is green, 1 when any is red.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import httpx
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from devstack.handle import repo_root
from services.cli.context import api_url_for, home_option, settings_for
from services.worker.git_ops import sandbox_git
from services.worker.sandbox import (
    sandbox_cgroup_warning,
    sandbox_of,
    sandbox_problem,
)
from shared.config import Settings
from shared.db.repos.triage import TriageRepo, UnanalyzedTable
from shared.db.schema_version import database_head
from shared.domain.display import visible
from shared.domain.run_machine import RunStatus
from shared.domain.step_contract import step_contract_version
from shared.model_in_use import describe_ids, offered
from shared.queue import make_celery
from shared.redact import redact_text
from shared.version import app_version

PARKED = RunStatus.WAITING_UPGRADE.value
BEAT_STALE_S = 30.0  # beat stamps every 5 s (services.worker.celery_app.BEAT_STAMP_S)
STATS_MIN_ROWS = 1000  # a smaller table is read whole in well under a millisecond
WORKERS_WINDOW_S = 0.5  # a worker answers a broadcast in milliseconds when it is not busy
Found = TypeVar("Found")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


def code_head() -> str | None:
    """The head revision of the checkout's migrations (what this code expects)."""
    # Imported here: alembic costs ~0.2 s, paid on the probe's thread beside the others.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config(str(repo_root() / "alembic.ini"))
    config.set_main_option("script_location", str(repo_root() / "migrations"))
    return ScriptDirectory.from_config(config).get_current_head()


def _engine(url: str, timeout_s: float) -> Engine:
    return create_engine(
        url,
        poolclass=NullPool,
        connect_args={"connect_timeout": max(1, int(timeout_s))},
    )


def check_postgres(engine: Engine, url: str) -> Check:
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            user = conn.execute(text("SELECT current_user")).scalar()
    except SQLAlchemyError as exc:
        return Check("postgres", False, f"cannot log in at {shown}: {_first_line(exc)}")
    return Check("postgres", True, f"logged in as {user} at {shown}")


def check_redis(url: str, timeout_s: float) -> Check:
    """PING the broker; its URL is shown without its password (doctor's output is what
    people paste: red-team helper-131)."""
    client = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    shown = redact_text(url)
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        return Check("redis", False, f"no PING answer at {shown}: {type(exc).__name__}")
    finally:
        client.close()
    return Check("redis", True, f"PONG from {shown}")


def check_migrations(engine: Engine) -> Check:
    expected = code_head()
    try:
        found = database_head(engine)
    except SQLAlchemyError as exc:
        return Check("migrations", False, f"cannot read app.alembic_version: {_first_line(exc)}")
    data = {"database": found, "code": expected}
    if found != expected:
        return Check(
            "migrations",
            False,
            f"database at {found or 'nothing (not migrated)'}, code at {expected}: "
            "run `kodo db migrate`",
            data,
        )
    return Check("migrations", True, f"database at head {found}", data)


def port_listens(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def oc_auth(settings: Settings) -> tuple[str, str] | None:
    """Basic auth for the daemon when a password is set (``kodo oc up`` always sets one)."""
    return (settings.oc_username, settings.oc_password) if settings.oc_password else None


def check_opencode(base_url: str, timeout_s: float, auth: tuple[str, str] | None = None) -> Check:
    """§9: "90% it's a dead daemon or a port collision (4096)": say which."""
    url = f"{base_url}/global/health"
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        reply = httpx.get(url, timeout=timeout_s, auth=auth)
    except httpx.HTTPError as exc:
        if port_listens(host, port, timeout_s):
            why = (
                f"something listens on {host}:{port} but does not answer as OpenCode "
                f"({type(exc).__name__}): port collision, or a daemon still booting"
            )
        else:
            why = f"nothing listens on {host}:{port}: dead daemon (start it: `kodo up`)"
        return Check("opencode", False, f"{url}: {why}", {"url": url, "listening": False})
    body: Any = None
    try:
        body = reply.json()
    except ValueError:
        body = None
    healthy = reply.status_code == 200 and isinstance(body, dict) and body.get("healthy") is True
    if reply.status_code == 401:
        return Check(
            "opencode",
            False,
            f"{url} answered 401: OC_USERNAME/OC_PASSWORD are not the daemon's"
            " (`kodo oc up` prints them)",
            {"url": url, "listening": True, "status": 401},
        )
    if not healthy:
        return Check(
            "opencode",
            False,
            f"{url} answered {reply.status_code} but not as an OpenCode daemon: "
            f"port collision on {port}?",
            {"url": url, "listening": True, "status": reply.status_code},
        )
    version = body.get("version") if isinstance(body, dict) else None
    return Check("opencode", True, f"healthy at {base_url} (version {version})", {"url": url})


def check_model(settings: Settings, timeout_s: float) -> Check:
    """The model the agents run on, as the daemon states it (the stand-in said plainly)."""
    asked = describe_ids(settings.oc_provider_id, settings.oc_model_id)
    url = f"{settings.oc_base_url}/config/providers"
    try:
        reply = httpx.get(url, auth=oc_auth(settings), timeout=timeout_s)
        body: Any = reply.json() if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        return Check("model", False, f"{asked}: cannot read {url}: {type(exc).__name__}")
    if body is None:
        return Check("model", False, f"{asked}: {url} answered {reply.status_code}")
    found = offered(body, settings.oc_provider_id, settings.oc_model_id)
    data = {"provider": settings.oc_provider_id, "model": settings.oc_model_id}
    if found is None:
        return Check(
            "model",
            False,
            f"{asked}: the daemon does not offer it (check OC_PROVIDER_ID/OC_MODEL_ID against"
            " the daemon's config: `kodo oc up` prints both)",
            data,
        )
    return Check("model", True, found.describe(), {**data, "stand_in": found.stand_in})


def _registered_versions(engine: Engine) -> dict[tuple[str, int], str]:
    with Session(engine) as s:
        return TriageRepo(s).worker_versions()


def check_workers(settings: Settings, engine: Engine, timeout_s: float) -> Check:
    celery = make_celery(settings)
    try:
        stats = celery.control.inspect(timeout=min(timeout_s, WORKERS_WINDOW_S)).stats() or {}
        if not stats:  # none in the short window: ask again and wait the whole timeout
            stats = celery.control.inspect(timeout=timeout_s).stats() or {}
    except (OSError, RedisError) as exc:
        return Check("workers", False, f"cannot ask workers over the broker: {exc}")
    finally:
        celery.close()
    if not stats:
        return Check(
            "workers",
            False,
            f"no worker answered over {redact_text(settings.redis_url)} within "
            f"{min(timeout_s, WORKERS_WINDOW_S) + timeout_s:g}s "
            "(start one: `kodo up`)",
        )
    mine = app_version()
    try:
        versions = _registered_versions(engine)
    except SQLAlchemyError as exc:
        versions = {}
        note = f"; versions unreadable: {_first_line(exc)}"
    else:
        note = ""
    workers, bad = [], []
    for node, info in sorted(stats.items()):
        pid = info.get("pid") if isinstance(info, dict) else None
        host = node.partition("@")[2]
        version = versions.get((host, pid)) if isinstance(pid, int) else None
        workers.append({"node": node, "pid": pid, "version": version})
        if version != mine:
            bad.append(f"{node} runs {version or 'an unregistered version'}")
    data = {"workers": workers, "code_version": mine}
    if bad:
        return Check(
            "workers",
            False,
            f"version mismatch with this code ({mine}): {'; '.join(bad)}{note}",
            data,
        )
    names = ", ".join(w["node"] for w in workers)
    return Check("workers", True, f"{len(workers)} live, all at {mine}: {names}", data)


def check_api(api_url: str, timeout_s: float) -> Check:
    """The API answers its public ``/healthz`` (which itself reaches Postgres and Redis)."""
    url = f"{api_url}/healthz"
    try:
        reply = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return Check("api", False, f"{url}: no answer ({type(exc).__name__}): start it: `kodo up`")
    if reply.status_code != 200:
        return Check(
            "api", False, f"{url} answered {reply.status_code}", {"status": reply.status_code}
        )
    return Check("api", True, f"{url} answered 200", {"url": url})


def beat_age_s(engine: Engine) -> float | None:
    """Seconds since beat's newest stamp, on the database's clock (None: never stamped)."""
    with engine.connect() as conn:
        age = conn.execute(
            text(
                "SELECT EXTRACT(EPOCH FROM now() - max(last_seen_at))"
                " FROM app.processes WHERE kind = 'beat'"
            )
        ).scalar()
    return None if age is None else float(age)


def check_beat(engine: Engine) -> Check:
    try:
        age = beat_age_s(engine)
    except SQLAlchemyError as exc:
        return Check("beat", False, f"cannot read app.processes: {_first_line(exc)}")
    return judge_beat(age)


def judge_beat(age_s: float | None) -> Check:
    """Beat stamps its row as it ticks: no stamp, or an old one, means nothing is scheduled
    (approvals are not re-dispatched, stalled steps not reconciled)."""
    if age_s is None:
        return Check("beat", False, "beat never ticked (start it: `kodo up`)", {"age_s": None})
    data = {"age_s": round(age_s, 1), "stale_after_s": BEAT_STALE_S}
    if age_s > BEAT_STALE_S:
        return Check("beat", False, f"last tick {age_s:.0f}s ago: beat is down or stuck", data)
    return Check("beat", True, f"last tick {age_s:.1f}s ago", data)


def _triage(
    engine: Engine,
    name: str,
    table: str,
    query: Callable[[TriageRepo], Found],
    judge: Callable[[Found], Check],
) -> Check:
    """Check ``name``: ``judge`` what ``query`` reads; red, naming ``table``, if it cannot."""
    try:
        with Session(engine) as s:
            found = query(TriageRepo(s))
    except SQLAlchemyError as exc:
        return Check(name, False, f"cannot read {table}: {_first_line(exc)}")
    return judge(found)


def check_stuck(engine: Engine, minutes: int) -> Check:
    return _triage(
        engine,
        "stuck runs",
        "app.runs",
        lambda triage: triage.active_runs_idle_for(minutes),
        lambda by_status: judge_stuck(by_status, minutes),
    )


def judge_stuck(idle_by_status: dict[str, int], minutes: int) -> Check:
    """Runs not updated for ``minutes``, by status: red unless none but approvals wait."""
    by_status = dict(idle_by_status)
    by_status.pop(PARKED, None)  # not stuck: waiting for an upgrade (its own check)
    waiting = by_status.pop("waiting_input", 0)
    aside = f" ({waiting} waiting for approval, not counted)" if waiting else ""
    data = {"minutes": minutes, "by_status": by_status, "waiting_input": waiting}
    if by_status:
        listed = ", ".join(f"{status}: {n}" for status, n in by_status.items())
        return Check(
            "stuck runs",
            False,
            f"not updated for > {minutes} min: {listed}{aside}",
            data,
        )
    return Check("stuck runs", True, f"none older than {minutes} min{aside}", data)


def check_unknown_calls(engine: Engine) -> Check:
    return _triage(
        engine,
        "unknown calls",
        "app.opencode_calls",
        TriageRepo.unknown_calls_by_run,
        judge_unknown_calls,
    )


def judge_unknown_calls(runs: dict[str, int]) -> Check:
    """Ledger rows of unknown outcome, counted by run: red if there is any."""
    if runs:
        shown = ", ".join(list(runs)[:5]) + (" ..." if len(runs) > 5 else "")
        return Check(
            "unknown calls",
            False,
            f"{sum(runs.values())} call(s) with unknown outcome in {len(runs)} run(s): {shown}"
            " (check the provider's side before retrying)",
            {"runs": runs},
        )
    return Check("unknown calls", True, "none", {"runs": {}})


def check_waiting_upgrade(engine: Engine) -> Check:
    return _triage(
        engine,
        "waiting upgrade",
        "app.runs",
        TriageRepo.parked_by_contract,
        lambda by_contract: judge_waiting_upgrade(by_contract, step_contract_version()),
    )


def judge_waiting_upgrade(by_contract: dict[str, int], mine: str) -> Check:
    """Parked runs by the contract they wait for: a warning if ``mine`` resumes them all."""
    data = {"by_contract": by_contract, "code_contract": mine}
    if not by_contract:
        return Check("waiting upgrade", True, "none", data)
    listed = ", ".join(f"{c}: {n}" for c, n in by_contract.items())
    said = (
        f"{sum(by_contract.values())} run(s) waiting_upgrade, by the step contract they"
        f" wait for ({listed}); this code's contract is {mine}"
    )
    if set(by_contract) == {mine}:
        return Check("waiting upgrade", True, f"WARNING: {said}: the reconciler resumes them", data)
    return Check(
        "waiting upgrade",
        False,
        f"{said}: run a worker of that contract, or cancel them (rule step_contract)",
        data,
    )


def check_held_worktrees(engine: Engine) -> Check:
    return _triage(
        engine, "daemon worktrees", "app.runs", TriageRepo.held_worktrees, judge_held_worktrees
    )


def judge_held_worktrees(found: dict[str, int]) -> Check:
    """Worktrees daemons hold open: red if a daemon did not answer a release (its memory
    grows with every worktree it keeps; the reconciler tries again every ten minutes)."""
    said = (
        f"{found['moving']} run(s) moving, {found['resting']} resting"
        " (released by the reconciler after KODO_INSTANCE_RELEASE_S)"
    )
    if found["release_failed"]:
        return Check(
            "daemon worktrees",
            False,
            f"{found['release_failed']} release(s) a daemon did not answer"
            " (instances_release_failed_at; the log says instances.release_failed); " + said,
            found,
        )
    return Check("daemon worktrees", True, said, found)


def check_statistics(engine: Engine) -> Check:
    return _triage(
        engine,
        "statistics",
        "pg_stat_user_tables",
        lambda triage: triage.unanalyzed_tables(STATS_MIN_ROWS),
        judge_statistics,
    )


def judge_statistics(tables: list[UnanalyzedTable]) -> Check:
    """A warning when tables of kodo's have no current statistics and nothing will make
    them: kodo's hot statements are prepared once per pooled connection, and a plan made
    while a table was small stays for that connection's life. Measured on a database
    never analyzed (autovacuum off): the collector's wake-up, found through an index
    once analyzed (4 to 7 pages a statement), read every page of app.opencode_calls
    (390 a statement at a thousand calls, growing with the table); it is now planned on
    every execution (direct.PLANNED_EACH_TIME), the other hot statements are not. Tables
    autovacuum analyzes are only counted: it gets to them."""
    data = {"tables": {t.name: t.rows for t in tables}, "min_rows": STATS_MIN_ROWS}
    left = [t for t in tables if not t.auto]
    if not left:
        pending = f" ({len(tables)} table(s) await autovacuum's analyze)" if tables else ""
        return Check("statistics", True, f"current, or autovacuum keeps them{pending}", data)
    named = ", ".join(f"{t.name} ({t.rows} rows)" for t in left[:5])
    more = f" and {len(left) - 5} more" if len(left) > 5 else ""
    said = (
        f"WARNING: {named}{more} never analyzed, or changed as many rows since as they hold,"
        " and autovacuum does not analyze them: plans made while they were small stay"
        " (a lookup prepared then keeps reading the whole table); run"
        f" `ANALYZE {', '.join(t.name for t in left)}` now and then, or turn autovacuum on"
    )
    return Check("statistics", True, said, data)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def check_sandbox(settings: Settings) -> Check:
    """ExecuteST refuses to run commands without a working bubblewrap sandbox."""
    if not settings.sandbox:
        return Check("sandbox", False, "KODO_SANDBOX=off: agent commands run UNSANDBOXED")
    problem = sandbox_problem(settings, dict(os.environ))
    if problem is not None:
        return Check("sandbox", False, problem)
    if sandbox_git() is None:  # kodo's own pinned git would refuse (sandbox_required)
        return Check(
            "sandbox",
            False,
            "no git on PATH is installed in /usr or the folders beside it: kodo's own git"
            " runs in a root of the system folders only (install the distribution's git)",
        )
    works = f"bubblewrap ({settings.sandbox_bwrap}) works"
    warning = sandbox_cgroup_warning(settings, dict(os.environ))
    if warning is not None:  # still green: ExecuteST runs (KODO_SANDBOX_CGROUP=auto)
        return Check("sandbox", True, f"{works}; WARNING: {warning}", {"warning": warning})
    if settings.sandbox_cgroup == "off":
        return Check("sandbox", True, f"{works}; KODO_SANDBOX_CGROUP=off: no memory cgroup")
    quota = sandbox_of(settings, dict(os.environ)).cpu_quota()
    if quota is None:  # still green: the cpu controller is optional (a container's)
        return Check(
            "sandbox",
            True,
            f"{works}, in a memory and pids cgroup per command; no CPU quota (the worker's"
            " cgroup has no cpu controller it may use)",
        )
    return Check(
        "sandbox",
        True,
        f"{works}, in a memory, pids and cpu cgroup per command (at most {quota:g} CPUs)",
    )


def run_checks(
    settings: Settings, *, timeout_s: float, stuck_minutes: int, api_url: str
) -> list[Check]:
    """Every check, in a fixed order; independent probes run at once."""
    engine = _engine(settings.database_url, timeout_s)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            return _gather(pool, engine, settings, timeout_s, stuck_minutes, api_url)
    finally:
        engine.dispose()


def _gather(
    pool: ThreadPoolExecutor,
    engine: Engine,
    settings: Settings,
    timeout_s: float,
    stuck_minutes: int,
    api_url: str,
) -> list[Check]:
    auth = oc_auth(settings)
    postgres = pool.submit(check_postgres, engine, settings.database_url)
    redis = pool.submit(check_redis, settings.redis_url, timeout_s)
    daemons = [
        pool.submit(check_opencode, url, timeout_s, auth)
        for url in (*settings.oc_more_daemons, settings.oc_base_url)
    ]  # every daemon calls may be spread over; the main one last
    api_check = pool.submit(check_api, api_url, timeout_s)
    sandbox = pool.submit(check_sandbox, settings)
    workers: Future[Check] | Check = (
        pool.submit(check_workers, settings, engine, timeout_s)
        if redis.result().ok
        else Check("workers", False, "skipped: the broker (redis) is unreachable")
    )
    unreachable = "skipped: postgres unreachable"
    db_ok = postgres.result().ok
    on_db: list[Future[Check] | Check] = [
        pool.submit(check, engine) if db_ok else Check(name, False, unreachable)
        for name, check in (
            ("migrations", check_migrations),
            ("beat", check_beat),
            ("unknown calls", check_unknown_calls),
            ("waiting upgrade", check_waiting_upgrade),
            ("daemon worktrees", check_held_worktrees),
            ("statistics", check_statistics),
        )
    ]
    stuck: Future[Check] | Check = (
        pool.submit(check_stuck, engine, stuck_minutes)
        if db_ok
        else Check("stuck runs", False, unreachable)
    )
    model: Future[Check] | Check = (
        pool.submit(check_model, settings, timeout_s)
        if daemons[-1].result().ok
        else Check("model", False, "skipped: opencode unreachable")
    )
    migrations, beat, unknown, upgrade, held, statistics = on_db
    ordered = [postgres, redis, migrations, *daemons, model, api_check, workers, beat]
    ordered += [stuck, unknown, upgrade, held, statistics, sandbox]
    return [c.result() if isinstance(c, Future) else c for c in ordered]


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--timeout", "timeout_s", default=2.0, show_default=True, help="Seconds per probe.")
@click.option(
    "--stuck-minutes",
    default=15,
    show_default=True,
    type=click.IntRange(min=1),
    help="A non-terminal run not updated for longer is stuck.",
)
@click.option("--oc-url", default=None, help="OpenCode base URL (default: OC_BASE_URL).")
@click.option(
    "--api-url",
    envvar="KODO_API_URL",
    default=None,
    help="API base URL (env KODO_API_URL; else the one `kodo up` recorded).",
)
@home_option
def doctor(
    as_json: bool,
    timeout_s: float,
    stuck_minutes: int,
    oc_url: str | None,
    api_url: str | None,
    home: Path | None,
) -> None:
    """Check Postgres, Redis, migrations, OpenCode, the API, workers, beat, stuck runs,
    unknown calls, runs waiting for an upgrade, table statistics and the sandbox."""
    settings = settings_for(home)
    if oc_url:
        settings = replace(settings, oc_base_url=oc_url.rstrip("/"))
    checks = run_checks(
        settings,
        timeout_s=timeout_s,
        stuck_minutes=stuck_minutes,
        api_url=api_url_for(api_url, home),
    )
    healthy = all(c.ok for c in checks)
    if as_json:
        click.echo(json.dumps({"ok": healthy, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            mark = click.style("ok  " if c.ok else "FAIL", fg="green" if c.ok else "red", bold=True)
            click.echo(f"{mark} {c.name:<{width}}  {visible(c.detail)}")  # may quote agent text
    if not healthy:
        raise SystemExit(1)
