"""The chaos harness: one private kodo (its own Postgres, Redis and processes) to break.

Everything is real: Postgres and Redis started by ``devstack`` on free
loopback ports, and the oc-compat server, Celery workers, beat and the API started by
``devstack.kodo_procs``. The harness can SIGKILL, restart or flush any of them, drive
runs over HTTP like a user (approving plans as they come), and read the truth from SQL.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from devstack.handle import ServiceHandle
from devstack.kodo_procs import (
    WORKER_APP,
    Stack,
    issue_token,
    start_api,
    start_beat,
    start_collector,
    start_oc_compat,
    start_together,
    start_worker,
    wait_worker_ready,
)
from devstack.stack import restart
from devstack.supervisor import Child, free_port
from shared.db.engine import make_engine
from shared.service.runs import cancel_run
from tests.chaos.faulty_worker import HOLD_MARKER_ENV, PARK_HOLD_ENV

TERMINAL = frozenset({"succeeded", "failed", "rejected", "cancelled"})
REACHED_SERVER = ("succeeded", "failed", "timed_out", "aborted", "unknown")
"""Ledger statuses of a call that left the worker (with ``session_id`` set, it was sent)."""
SETTLE_S = 30.0
"""How long a run's calls may take to settle after it ended (a cancelled run's call is
aborted by a task or, failing that, by the reconciler's sweep, every KODO_RECONCILE_S)."""

SEED = 11

FAST_RECOVERY = {
    "KODO_STEP_LEASE_S": "4",
    "KODO_REDISPATCH_AFTER_S": "2",
    "KODO_RECONCILE_S": "1",
    "APPROVAL_POLL_S": "0.5",
    "OC_TIMEOUT_MS": "4000",
    "KODO_SCHEMA_RETRIES": "3",
    "RANDOM_SEED": str(SEED),
}
"""Settings every chaos process shares: recovery in seconds, not the production minutes."""

BASE_WORKER = "w1"


@dataclass
class Services:
    """The private Postgres and Redis of the suite (ours alone: we may kill them)."""

    home: Path
    postgres: ServiceHandle
    redis: ServiceHandle


def title(step_id: str, run_id: str, attempt: int) -> str:
    """The oc-compat session title kodo gives the one session of one op_key."""
    return f"kodo {step_id} {run_id} #{attempt}"


def new_repo(root: Path) -> Path:
    """A one-commit git repository without tests (so ExecuteST verifies with ``git diff``)."""
    path = root / uuid.uuid4().hex[:12]
    path.mkdir(parents=True)
    (path / "README.md").write_text("# chaos\n\nA repository for the chaos suite.\n")
    (path / "notes.md").write_text("notes\n")
    ident = ["-c", "user.name=chaos", "-c", "user.email=chaos@localhost"]
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        [*ident, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "Initial"],
    ):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, timeout=30)
    return path


def branch_commits(repo: Path, run_id: str) -> list[str]:
    """Subjects of the commits on ``kodo/<run_id>`` that ``main`` lacks ([] if no branch)."""
    done = subprocess.run(
        ["git", "log", "--format=%s", f"main..kodo/{run_id}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return done.stdout.splitlines() if done.returncode == 0 else []


class Chaos:
    """A private kodo stack and the levers to break it."""

    def __init__(self, services: Services, root: Path) -> None:
        self.services = services
        self.root = root
        self.repos = root / "repos"
        self.repos.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "DATABASE_URL": services.postgres.url,
            "REDIS_URL": services.redis.url,
            "KODO_REPO_ROOTS": str(self.repos),
            "KODO_WORKSPACE_DIR": str(root / "workspaces"),
            # One admin token submits and approves: the suite is about recovery, not roles.
            "KODO_ALLOW_SELF_APPROVAL": "1",
            # 200 runs at once from that one token: the limiter is tested elsewhere.
            "KODO_INTENT_RATE": "100000/minute",
            **FAST_RECOVERY,
        }
        self.stack = Stack(env=env, log_dir=root / "logs")
        self.engine: Engine = make_engine(services.postgres.url)
        self.oc_port = free_port()
        self.api_port = free_port()
        self.oc: Child | None = None
        self.api: Child | None = None
        self.beat: Child | None = None
        self.collector: Child | None = None
        self.workers: dict[str, Child] = {}
        self.customised: set[str] = set()  # workers started with settings of their own
        self.oc_gone_titles: Counter[str] = Counter()
        self._started = 0
        token = issue_token(services.postgres.url, "chaos-admin", "admin")
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.api_port}",
            timeout=15.0,
            headers={"Authorization": f"Bearer {token}"},
        )

    # -- processes -------------------------------------------------------------------

    def start_oc(self) -> None:
        """The oc-compat server, always on the same port (so a restart is transparent)."""
        self.oc = start_oc_compat(self.stack, seed=SEED, port=self.oc_port)

    def kill_oc(self) -> None:
        """SIGKILL oc-compat mid-whatever, keeping what it counted so far."""
        self.oc_gone_titles += self._live_titles()
        if self.oc is not None:
            self.oc.kill()

    def oc_stats(self) -> dict[str, Any]:
        reply = httpx.get(f"http://127.0.0.1:{self.oc_port}/__kodo/stats", timeout=5.0)
        reply.raise_for_status()
        stats: dict[str, Any] = reply.json()
        return stats

    def _live_titles(self) -> Counter[str]:
        if self.oc is None or not self.oc.alive():
            return Counter()
        return Counter(self.oc_stats()["by_title"])

    def in_flight_at_oc(self) -> int:
        """Prompts oc-compat holds open right now: a worker is waiting on its answer."""
        if self.oc is None or not self.oc.alive():
            return 0
        return sum(self.oc_stats()["in_flight"].values())

    def prompts_by_title(self) -> Counter[str]:
        """Prompts that reached oc-compat, per session title, over all its lifetimes."""
        return self.oc_gone_titles + self._live_titles()

    def start_worker(
        self,
        name: str = BASE_WORKER,
        *,
        concurrency: int = 2,
        env: Mapping[str, str] | None = None,
        app: str = WORKER_APP,
    ) -> Child:
        """A Celery worker process (its own log per start, so readiness is never stale)."""
        self._started += 1
        label = f"{name}-{self._started}"
        proc = start_worker(
            self.stack, label, concurrency, node=f"{label}@%h", extra_env=env, app=app
        )
        wait_worker_ready(proc)
        self.workers[name] = proc
        if env or app != WORKER_APP:
            self.customised.add(name)
        else:
            self.customised.discard(name)
        return proc

    def start_worker_held_before_apply(self, name: str) -> Path:
        """A worker that stops right before ApplyPatchST's ``git apply`` (until killed).

        It runs ``tests.chaos.faulty_worker``: kodo's app plus a test-side hold. Returns
        the file it writes, holding the worktree's path, once a step reaches that point.
        """
        self._started += 1
        marker = self.root / f"held-before-apply-{self._started}"
        self.start_worker(
            name, env={HOLD_MARKER_ENV: str(marker)}, app="tests.chaos.faulty_worker:app"
        )
        return marker

    def start_worker_held_before_park(self, name: str) -> Path:
        """A worker whose provider steps stop right before they park on the call they
        just sent (until killed). Returns the file it writes once a step is there."""
        self._started += 1
        marker = self.root / f"held-before-park-{self._started}"
        self.start_worker(
            name, env={PARK_HOLD_ENV: str(marker)}, app="tests.chaos.faulty_worker:app"
        )
        return marker

    def kill_worker(self, name: str = BASE_WORKER) -> None:
        """SIGKILL the worker's whole process group: the main process and its children."""
        self.workers.pop(name).kill()

    def stop_worker(self, name: str) -> None:
        self.workers.pop(name).stop()

    def start_beat(self) -> None:
        self.beat = start_beat(self.stack)

    def start_collector(self) -> None:
        self.collector = start_collector(self.stack)

    def start_api(self) -> None:
        self.api = start_api(self.stack, port=self.api_port)

    def restart_redis(self, down_s: float = 0.0) -> None:
        """SIGKILL Redis and start it again on the same port: every message is gone."""
        self.services.redis = restart(
            self.services.redis, home=self.services.home, crash=True, down_s=down_s
        )

    def flush_redis(self) -> None:
        client = redis.Redis.from_url(self.services.redis.url)
        try:
            client.flushall()
        finally:
            client.close()

    def restart_postgres(self, down_s: float = 0.0) -> None:
        """Crash Postgres (immediate shutdown) and start it again: recovery, same data."""
        self.services.postgres = restart(
            self.services.postgres, home=self.services.home, crash=True, down_s=down_s
        )

    def baseline(self) -> None:
        """Before each scenario: every service up, one worker, no run of an earlier one active."""
        from devstack.pgurl import answers as pg_answers
        from devstack.redis_server import answers as redis_answers

        if not pg_answers(self.services.postgres.url):
            self.restart_postgres()
        if not redis_answers(self.services.redis.url):
            self.restart_redis()
        if self.oc is None or not self.oc.alive():
            self.start_oc()  # first: the others are told its address
        for name in [n for n in self.workers if n != BASE_WORKER]:
            self.workers.pop(name).kill()
        if BASE_WORKER in self.customised:
            self.workers.pop(BASE_WORKER).kill()
        missing: dict[str, Callable[[], object]] = {}
        if self.beat is None or not self.beat.alive():
            missing["beat"] = self.start_beat
        if self.collector is None or not self.collector.alive():
            missing["collector"] = self.start_collector
        if self.api is None or not self.api.alive():
            missing["api"] = self.start_api
        base = self.workers.get(BASE_WORKER)
        if base is None or not base.alive():
            missing["worker"] = lambda: self.start_worker(BASE_WORKER)
        start_together(missing)
        self._cancel_leftovers()

    def _cancel_leftovers(self) -> None:
        with self.engine.begin() as conn:
            ids = conn.execute(
                text("SELECT id FROM app.runs WHERE status <> ALL(:t)"), {"t": list(TERMINAL)}
            ).scalars()
            leftovers = list(ids)
        from shared.clock import SystemClock
        from shared.db.engine import make_session_factory
        from shared.service.messages import InMemorySender
        from shared.service.uow import UnitOfWork

        sessions = make_session_factory(self.engine)
        for run_id in leftovers:  # the stack stops next: the abort messages are not sent
            with UnitOfWork(sessions, InMemorySender()) as uow:
                cancel_run(uow, run_id, now=SystemClock().now())

    def close(self) -> None:
        self.http.close()
        self.stack.stop()
        self.engine.dispose()

    def logs(self, lines: int = 25) -> str:
        procs = [
            p for p in (self.oc, self.api, self.beat, self.collector, *self.workers.values()) if p
        ]
        return "\n".join(f"== {p.name}\n{p.log_tail(lines)}" for p in procs)

    # -- a user over HTTP --------------------------------------------------------------

    def submit(self, goal: str, repo: Path | None = None) -> str:
        repo = repo or new_repo(self.repos)
        created = self.http.post("/intents", json={"repo": str(repo), "goal": goal})
        assert created.status_code == 201, created.text
        intent_id: str = created.json()["intentId"]
        started = self.http.post(f"/intents/{intent_id}/run")
        assert started.status_code == 202, started.text
        return intent_id

    def repo_of(self, run_id: str) -> Path:
        with self.engine.connect() as conn:
            path = conn.execute(
                text("SELECT repo_path FROM app.intents WHERE id = :r"), {"r": run_id}
            ).scalar_one()
        return Path(path)

    def approve(self, run_id: str, **body: Any) -> httpx.Response:
        """Approve the run's current plan (its digest read from SQL, as an approver who
        read the card would send it), unless ``body`` names one."""
        if "planSha256" not in body:
            with self.engine.connect() as conn:
                body["planSha256"] = conn.execute(
                    text("SELECT plan_sha256 FROM app.runs WHERE id = :r"), {"r": run_id}
                ).scalar_one()
        return self.http.post(f"/runs/{run_id}/approve-plan", json=body)

    def _approve_patiently(self, run_id: str) -> None:
        """Approve through an outage: a 5xx or a dropped connection is tried again later."""
        try:
            reply = self.approve(run_id)
        except (httpx.HTTPError, OperationalError):
            return
        if reply.status_code >= 500:
            return
        assert reply.status_code in (200, 409), (
            f"approve {run_id}: {reply.status_code} {reply.text}"
        )

    # -- the truth, from SQL -------------------------------------------------------------

    def statuses(self, run_ids: Iterable[str]) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, status FROM app.runs WHERE id = ANY(:ids)"),
                {"ids": list(run_ids)},
            ).all()
        return {row.id: row.status for row in rows}

    def _statuses_through_outages(self, run_ids: list[str]) -> dict[str, str] | None:
        try:
            return self.statuses(run_ids)
        except DBAPIError:
            return None  # Postgres is restarting: ask again

    def wait_status(self, run_id: str, wanted: set[str], deadline_s: float = 60.0) -> str:
        end = time.monotonic() + deadline_s
        status = "?"
        while time.monotonic() < end:
            found = self._statuses_through_outages([run_id])
            status = (found or {}).get(run_id, "?")
            if status in wanted:
                return status
            if status in TERMINAL:
                raise AssertionError(
                    f"run {run_id} ended {status}, wanted {wanted}\n{self.explain([run_id])}"
                )
            time.sleep(0.1)
        raise AssertionError(
            f"run {run_id} still {status} after {deadline_s}s, wanted {wanted}\n"
            f"{self.explain([run_id])}\n{self.logs()}"
        )

    def drive(
        self, run_ids: list[str], deadline_s: float, *, approve: bool = True
    ) -> dict[str, str]:
        """Approve each plan as it waits (over HTTP) until every run ends or time runs out."""
        end = time.monotonic() + deadline_s
        found: dict[str, str] = {}
        while time.monotonic() < end:
            found = self._statuses_through_outages(run_ids) or found
            if found and all(found.get(r) in TERMINAL for r in run_ids):
                return found
            if approve:
                for run_id in (r for r, s in found.items() if s == "waiting_input"):
                    self._approve_patiently(run_id)
            time.sleep(0.2)
        return found

    def ledger(self, run_id: str, step_id: str | None = None) -> list[Any]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT step_id, attempt, status, op_key, session_id, error_name, error"
                        " FROM app.opencode_calls WHERE run_id = :r"
                        " AND (CAST(:s AS text) IS NULL OR step_id = :s) ORDER BY id"
                    ),
                    {"r": run_id, "s": step_id},
                ).all()
            )

    def step_run(self, run_id: str, step_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT status, deliveries, fence, error FROM app.step_runs"
                    " WHERE run_id = :r AND step_id = :s"
                ),
                {"r": run_id, "s": step_id},
            ).one_or_none()

    def run_row(self, run_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(
                text("SELECT status, last_step, error, retry_count FROM app.runs WHERE id = :r"),
                {"r": run_id},
            ).one()

    def artifact(self, run_id: str, name: str) -> bytes | None:
        with self.engine.connect() as conn:
            body = conn.execute(
                text("SELECT content FROM app.artifacts WHERE run_id = :r AND name = :n"),
                {"r": run_id, "n": name},
            ).scalar_one_or_none()
        return None if body is None else bytes(body)

    def explain(self, run_ids: list[str], limit: int = 8) -> str:
        """SQL triage of the first ``limit`` runs: the run, its steps and its calls."""
        lines: list[str] = []
        try:
            with self.engine.connect() as conn:
                for run_id in run_ids[:limit]:
                    run = conn.execute(
                        text(
                            "SELECT status, last_step, next_action, error FROM app.runs"
                            " WHERE id = :r"
                        ),
                        {"r": run_id},
                    ).one_or_none()
                    lines.append(f"run {run_id}: {tuple(run) if run else None}")
                    for row in conn.execute(
                        text(
                            "SELECT step_id, status, deliveries, fence, lease_owner, error"
                            " FROM app.step_runs WHERE run_id = :r ORDER BY id"
                        ),
                        {"r": run_id},
                    ):
                        lines.append(f"  step {tuple(row)}")
                    for call in self.ledger(run_id):
                        lines.append(
                            f"  call {call.step_id} #{call.attempt} {call.status} {call.error_name}"
                        )
        except DBAPIError as exc:
            lines.append(f"(no SQL triage: {exc})")
        return "\n".join(lines)

    # -- exactly once, checked at both ends ------------------------------------------------

    def duplicated_calls(self, run_ids: list[str]) -> int:
        """Extra prompts beyond one per op_key: at the server (per title) and in the ledger."""
        ours = set(run_ids)
        at_server = sum(
            n - 1 for t, n in self.prompts_by_title().items() if n > 1 and t.split()[2] in ours
        )
        with self.engine.connect() as conn:
            in_ledger = conn.execute(
                text(
                    "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n"
                    " FROM app.opencode_calls WHERE run_id = ANY(:ids)"
                    " GROUP BY op_key HAVING count(*) > 1) d"
                ),
                {"ids": run_ids},
            ).scalar_one()
        return at_server + int(in_ledger)

    def assert_exactly_once(self, run_ids: list[str], settle_s: float = SETTLE_S) -> None:
        """No op_key reached the server twice, and the server saw exactly the ledger's calls
        once they settle (within ``settle_s``).

        A run ends before its calls do: a cancel that lands while a step sends its prompt
        ends the run at once, and the call is recorded ``aborted`` only once the abort
        the park sends again has run (or the reconciler's sweep). Compared at the run's
        end, that call is at the server and still ``sent`` in the ledger; so the two are
        compared until they agree, and a prompt sent twice fails at once."""
        deadline = time.monotonic() + settle_s
        while True:
            at_server, in_ledger = self._calls_seen(run_ids)
            twice = {t: n for t, n in at_server.items() if n > 1}
            assert twice == {}, f"prompted more than once at the server: {twice}"
            if at_server == in_ledger or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert at_server == in_ledger, (
            f"server and ledger disagree {settle_s}s after the runs ended: only at the server "
            f"{at_server - in_ledger}, only in the ledger {in_ledger - at_server}"
        )

    def _calls_seen(self, run_ids: list[str]) -> tuple[Counter[str], Counter[str]]:
        """Prompts per title at the server, and the ledger's calls that reached it."""
        with self.engine.connect() as conn:
            repeated = conn.execute(
                text(
                    "SELECT op_key, count(*) FROM app.opencode_calls"
                    " GROUP BY op_key HAVING count(*) > 1"
                )
            ).all()
            sent = conn.execute(
                text(
                    "SELECT step_id, run_id, attempt FROM app.opencode_calls"
                    " WHERE run_id = ANY(:ids) AND status = ANY(:reached)"
                    " AND session_id IS NOT NULL"
                ),
                {"ids": run_ids, "reached": list(REACHED_SERVER)},
            ).all()
        assert repeated == [], f"op_keys recorded twice: {repeated}"
        ours = set(run_ids)
        at_server = Counter(
            {t: n for t, n in self.prompts_by_title().items() if t.split()[2] in ours}
        )
        return at_server, Counter(title(r.step_id, r.run_id, r.attempt) for r in sent)
