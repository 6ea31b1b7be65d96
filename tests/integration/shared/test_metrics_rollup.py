"""The /metrics rollup gives exactly what the whole-history queries give.

Each test writes facts as kodo's writers stamp them (database time: a step's finish,
a call settled by ``app.settle_call``, a dispatch), folds them into the rollup, and
compares every aggregate with the whole-history queries ``/metrics`` ran before the
rollup (``whole_history`` below): across folds, concurrent scrapes, a row committed
after a fold by a transaction that stamped it before, and rows changed after they
finished (a step's new round, a call declared unknown then answered late, a run's
spend growing after it ended).
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import MetricsRollup, MetricsRollupState
from shared.db.repos.metrics import Bounds, History, MetricsRepo
from shared.db.repos.steps import StepRunRepo
from shared.domain.run_machine import StepId
from shared.domain.vocab import StepRunStatus
from shared.hashing import sha256_hex

pytestmark = pytest.mark.integration

BOUNDS = Bounds(steps=(0.1, 1, 2.5, 10, 60), calls=(0.5, 1, 5, 30), dispatch=(0.5, 1, 2, 10))
NOW_LAG = timedelta(0)  # fold everything committed (the open-transaction guard still holds)
STEPS = ("CompileST", "ApplyPatchST", "DecideST", "ExecuteST")
FINAL = ("succeeded", "failed", "timed_out", "aborted")


# -- the whole-history queries /metrics ran before the rollup (the oracle) -----------------


def _hist(s: Session, sql: str, bounds: tuple[float, ...], n_labels: int) -> dict[Any, Any]:
    buckets = ", ".join(f"count(*) FILTER (WHERE v <= {b})" for b in bounds)
    labels = "".join(f"l{i}, " for i in range(n_labels))
    grouped = f" GROUP BY {labels[:-2]}" if n_labels else ""
    query = f"SELECT {labels}{buckets}, count(*), coalesce(sum(v), 0) FROM ({sql}) h{grouped}"  # noqa: S608 - the test's own SQL
    rows = s.execute(text(query))
    k = len(bounds)
    return {
        tuple(r[:n_labels]): (tuple(r[n_labels : n_labels + k]), r[n_labels + k], float(r[-1]))
        for r in rows
    }


def whole_history(s: Session) -> dict[str, Any]:
    """Every aggregate, over every row, as the queries before migration 0025 read them."""
    steps = _hist(
        s,
        "SELECT step_id AS l0, duration_ms::float / 1000.0 AS v FROM app.step_runs"
        " WHERE duration_ms IS NOT NULL",
        BOUNDS.steps,
        1,
    )
    calls = _hist(
        s,
        "SELECT agent AS l0, step_id AS l1, duration_ms::float / 1000.0 AS v"
        " FROM app.opencode_calls WHERE duration_ms IS NOT NULL",
        BOUNDS.calls,
        2,
    )
    dispatch = _hist(
        s,
        "SELECT extract(epoch FROM dispatched_at - approved_at) AS v FROM app.plan_approvals"
        " WHERE approved_at IS NOT NULL AND dispatched_at IS NOT NULL",
        BOUNDS.dispatch,
        0,
    )
    usage = {
        (a, st, status): (int(n), int(t), float(c))
        for a, st, status, n, t, c in s.execute(
            text(
                "SELECT agent, step_id, status, count(*),"
                " coalesce(sum((usage->>'total_tokens')::float), 0),"
                " coalesce(sum((usage->>'cost_usd')::float), 0)"
                " FROM app.opencode_calls GROUP BY agent, step_id, status"
            )
        )
    }
    sources = dict(
        s.execute(
            text(
                "SELECT a.value->>'cache', count(*) FROM app.step_runs JOIN LATERAL"
                " jsonb_array_elements(CASE WHEN jsonb_typeof(output->'attempts') = 'array'"
                " THEN output->'attempts' ELSE '[]'::jsonb END) a ON true"
                " WHERE a.value->>'cache' IS NOT NULL GROUP BY 1"
            )
        ).all()
    )
    spent = s.execute(
        text(
            "SELECT coalesce(sum(spent_usd_micro), 0), coalesce(sum(spent_tokens), 0) FROM app.runs"
        )
    ).one()
    return {
        "steps": steps,
        "calls": calls,
        "dispatch": dispatch,
        "usage": usage,
        "sources": sources,
        "spent": (int(spent[0]), int(spent[1])),
    }


def shown(h: History) -> dict[str, Any]:
    """``h`` in the oracle's shape."""

    def hist(rows: Any) -> dict[Any, Any]:
        return {r.labels: (r.buckets, r.count, r.total) for r in rows}

    return {
        "steps": hist(h.step_durations),
        "calls": hist(h.call_durations),
        "dispatch": hist(h.dispatch_latency),
        "usage": {
            (u.agent, u.step_id, u.status): (u.calls, u.tokens, u.cost_usd) for u in h.call_usage
        },
        "sources": h.answer_sources,
        "spent": (h.spent_usd_micro, h.spent_tokens),
    }


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Counts and integer sums equal; float sums equal but for summation order."""
    assert got.keys() == want.keys()
    for family in ("steps", "calls", "dispatch"):
        assert got[family].keys() == want[family].keys(), family
        for labels, (buckets, count, total) in want[family].items():
            assert got[family][labels][:2] == (buckets, count), (family, labels)
            assert got[family][labels][2] == pytest.approx(total, rel=1e-12), (family, labels)
    assert got["usage"].keys() == want["usage"].keys()
    for labels, (n, tokens, cost) in want["usage"].items():
        assert got["usage"][labels][:2] == (n, tokens), labels
        assert got["usage"][labels][2] == pytest.approx(cost, rel=1e-12), labels
    assert got["sources"] == want["sources"]
    assert got["spent"] == want["spent"]


# -- writers, stamping as kodo's do ---------------------------------------------------------


@dataclass
class Writer:
    """Makes runs, steps, calls and dispatches; every stamp is the database's time."""

    rng: random.Random
    made: int = 0

    def run(self, s: Session, *, status: str = "succeeded") -> str:
        self.made += 1
        run_id = f"run-{self.made}-{self.rng.randrange(10**9)}"
        s.execute(
            text(
                "INSERT INTO app.intents (id, repo_path, goal, base_ref, request_sha256)"
                " VALUES (:id, '/r', 'g', 'main', :sha)"
            ),
            {"id": run_id, "sha": sha256_hex(run_id)},
        )
        s.execute(
            text(
                "INSERT INTO app.runs (id, intent_id, status, next_action, retry_count,"
                " app_version, plan_sha256, spent_usd_micro, spent_tokens, reserved_usd_micro)"
                " VALUES (:id, :id, :status, :action, 0, 't', :sha, :usd, :tok, :res)"
            ),
            {
                "id": run_id,
                "sha": sha256_hex(run_id),
                "status": status,
                "action": "await:budget" if status == "waiting_input" else "none",
                "usd": self.rng.randrange(0, 50_000),
                "tok": self.rng.randrange(0, 500),
                "res": self.rng.randrange(0, 9_000) if status == "waiting_input" else 0,
            },
        )
        return run_id

    def finished_step(self, s: Session, run_id: str, step: str) -> None:
        """A step finished now, after a varied duration (its start back-dated)."""
        ms = self.rng.choice((40, 100, 700, 2_000, 2_500, 9_000, 70_000))
        caches = self.rng.sample(["miss", "l1", "l2", "miss"], self.rng.randrange(0, 4))
        attempts = [{"attempt": i + 1, "cache": c} for i, c in enumerate(caches)]
        s.execute(
            text(
                "INSERT INTO app.step_runs (run_id, step_id, status, deliveries, output,"
                " started_at, finished_at, duration_ms)"
                " VALUES (:run, :step, 'succeeded', 1, CAST(:out AS jsonb),"
                " statement_timestamp() - :ms * interval '1 millisecond',"
                " statement_timestamp(), :ms)"
            ),
            {"run": run_id, "step": step, "ms": ms, "out": _json({"attempts": attempts})},
        )

    def call(self, s: Session, run_id: str, step: str, attempt: int, *, settle: bool) -> str:
        """A call claimed, and (``settle``) recorded final: ``app.settle_call`` stamps it."""
        op_key = f"{run_id}-{step}-{attempt}"
        s.execute(
            text(
                "INSERT INTO app.opencode_calls (op_key, run_id, step_id, attempt, agent,"
                " request, status) VALUES (:k, :run, :step, :a, :agent, '{}', 'claimed')"
            ),
            {"k": op_key, "run": run_id, "step": step, "a": attempt, "agent": self.agent(step)},
        )
        if settle:
            self.record(s, op_key, self.rng.choice(FINAL))
        return op_key

    def record(self, s: Session, op_key: str, status: str) -> None:
        usage = {
            "total_tokens": self.rng.randrange(1, 3000),
            "cost_usd": self.rng.randrange(1, 900) / 10_000,
        }
        s.execute(
            text(
                "UPDATE app.opencode_calls SET status = :status, usage = CAST(:usage AS jsonb),"
                " duration_ms = :ms, finished_at = statement_timestamp() WHERE op_key = :k"
            ),
            {
                "k": op_key,
                "status": status,
                "usage": _json(usage),
                "ms": self.rng.randrange(50, 40_000),
            },
        )

    def agent(self, step: str) -> str:
        return "plan" if step in ("CompileST", "DecideST") else "build"

    def dispatch(self, s: Session, run_id: str) -> None:
        s.execute(
            text(
                "INSERT INTO app.plan_approvals (run_id, plan_sha256, decision, approver,"
                " approved_at, decided_at, dispatched_at) VALUES (:run, :sha, 'approved',"
                " 'alice', now() - :ms * interval '1 millisecond', now(), now())"
            ),
            {"run": run_id, "sha": sha256_hex(run_id), "ms": self.rng.randrange(0, 12_000)},
        )

    def batch(self, sessions: sessionmaker[Session], runs: int) -> list[str]:
        """``runs`` runs with their steps, calls (one in ten left unsettled) and dispatch."""
        made = []
        with sessions() as s, s.begin():
            for _ in range(runs):
                run_id = self.run(
                    s, status=self.rng.choice(("succeeded", "failed", "waiting_input"))
                )
                for i, step in enumerate(STEPS[: self.rng.randrange(1, 5)]):
                    self.finished_step(s, run_id, step)
                    self.call(s, run_id, step, 1, settle=self.rng.random() > 0.1)
                    if i == 0:
                        self.dispatch(s, run_id)
                made.append(run_id)
        return made


def _json(value: Any) -> str:
    return json.dumps(value)


# -- helpers --------------------------------------------------------------------------------


def fold(sessions: sessionmaker[Session], lag: timedelta = NOW_LAG) -> datetime | None:
    with sessions() as s, s.begin():
        return MetricsRepo(s).fold_in_transaction(BOUNDS, lag)


def scrape(sessions: sessionmaker[Session]) -> dict[str, Any]:
    with sessions() as s, s.begin():
        s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        return shown(MetricsRepo(s).history(BOUNDS))


def oracle(sessions: sessionmaker[Session]) -> dict[str, Any]:
    with sessions() as s:
        return whole_history(s)


def rollup_steps(sessions: sessionmaker[Session]) -> int:
    """How many step outcomes the rollup holds (the fold really folded)."""
    with sessions() as s:
        counts = s.scalars(
            select(MetricsRollup.counts).where(MetricsRollup.family == "step_duration")
        ).all()
        return sum(c[-1] for c in counts)


@pytest.fixture
def writer() -> Writer:
    return Writer(random.Random(25))  # noqa: S311 - test data, not secrets


# -- tests ----------------------------------------------------------------------------------


def test_every_fold_leaves_the_values_of_the_whole_history(
    sessions: sessionmaker[Session], writer: Writer
) -> None:
    assert_same(scrape(sessions), oracle(sessions))  # empty: nothing folded, all zeros
    for round_ in range(4):
        writer.batch(sessions, runs=12)
        assert_same(scrape(sessions), oracle(sessions))  # the new facts read live
        folded = fold(sessions)
        assert folded is not None
        assert_same(scrape(sessions), oracle(sessions))  # the same facts, from the rollup
        with sessions() as s:
            assert s.scalar(select(MetricsRollupState.watermark)) == folded
        assert rollup_steps(sessions) == sum(h[1] for h in oracle(sessions)["steps"].values()), (
            round_
        )
    assert fold(sessions, timedelta(minutes=5)) == folded, "nothing younger than the lag moves it"
    assert_same(scrape(sessions), oracle(sessions))
    whole = oracle(sessions)
    assert sum(n for n, _t, _c in whole["usage"].values()) > 0
    assert whole["spent"][0] > 0


def test_rows_changed_after_they_finished_change_the_values_as_the_rows_do(
    sessions: sessionmaker[Session], writer: Writer
) -> None:
    """A folded step gets a new round (its outcome leaves step_runs), a call declared
    unknown is answered late (settled then), a run that ended spends more."""
    with sessions() as s, s.begin():
        run_id = writer.run(s, status="succeeded")
        writer.finished_step(s, run_id, "CompileST")
        unknown = writer.call(s, run_id, "CompileST", 1, settle=False)
        s.execute(
            text("UPDATE app.opencode_calls SET status = 'unknown' WHERE op_key = :k"),
            {"k": unknown},
        )
    writer.batch(sessions, runs=5)
    fold(sessions)
    before = oracle(sessions)
    assert before["usage"][("plan", "CompileST", "unknown")][0] == 1

    steps = StepRunRepo
    with sessions() as s, s.begin():
        assert (
            steps(s).new_round(run_id, StepId.COMPILE, round_input={"revise": 1}, lease_s=60) == 2
        )
    after_round = oracle(sessions)
    assert after_round["steps"][("CompileST",)][1] == before["steps"][("CompileST",)][1] - 1
    assert_same(scrape(sessions), after_round)
    fold(sessions)
    assert_same(scrape(sessions), after_round)

    with sessions() as s, s.begin():  # the second round runs and finishes, and a third starts
        fence = s.execute(  # the round's delivery (the run ended: no lease is taken)
            text("SELECT fence FROM app.step_runs WHERE run_id = :r AND step_id = 'CompileST'"),
            {"r": run_id},
        ).scalar_one()
        out = {"attempts": [{"attempt": 2, "cache": "l2"}]}
        assert steps(s).finish(
            run_id, StepId.COMPILE, status=StepRunStatus.SUCCEEDED, fence=fence, output=out
        )
    assert_same(scrape(sessions), oracle(sessions))
    fold(sessions)
    with sessions() as s, s.begin():
        assert (
            steps(s).new_round(run_id, StepId.COMPILE, round_input={"revise": 2}, lease_s=60) == 3
        )
    assert_same(scrape(sessions), oracle(sessions))
    fold(sessions)
    assert_same(scrape(sessions), oracle(sessions))

    with sessions() as s, s.begin():  # the unknown call is answered late: settled, spent
        writer.record(s, unknown, "succeeded_late")
    late = oracle(sessions)
    assert ("plan", "CompileST", "unknown") not in late["usage"]
    assert late["spent"][0] > before["spent"][0], "the ended run spent the late answer"
    assert_same(scrape(sessions), late)
    fold(sessions)
    assert_same(scrape(sessions), late)


def test_a_row_committed_after_a_fold_it_was_stamped_before_is_not_lost(
    sessions: sessionmaker[Session], engine: Engine, writer: Writer
) -> None:
    """A transaction stamps a step's finish and a call's settlement, then commits only
    after a scrape folded: the fold stopped below that transaction's start."""
    writer.batch(sessions, runs=3)
    fold(sessions)
    with sessions() as s, s.begin():
        run_id = writer.run(s)
        op_key = writer.call(s, run_id, "ApplyPatchST", 1, settle=False)
    late = sessions()
    with late.begin():
        writer.finished_step(late, run_id, "DecideST")
        writer.record(late, op_key, "succeeded")
        stamped = late.execute(
            text("SELECT finished_at FROM app.step_runs WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
        writer.batch(sessions, runs=2)  # others commit meanwhile, stamped later
        folded = fold(sessions)
        assert folded is not None
        assert folded <= stamped, "held below the open transaction's start"
        assert_same(scrape(sessions), oracle(sessions))  # not visible yet, on either side
    late.close()
    whole = oracle(sessions)
    assert ("build", "ApplyPatchST", "succeeded") in whole["usage"]
    assert_same(scrape(sessions), whole)
    assert fold(sessions) is not None
    assert_same(scrape(sessions), whole)


def test_concurrent_scrapes_fold_each_fact_once(
    sessions: sessionmaker[Session], writer: Writer
) -> None:
    """Scrapes of several processes fold and read at once while facts keep arriving;
    each scrape between batches, and the last one, give the whole history."""
    stop = threading.Event()
    errors: list[BaseException] = []
    folds: list[datetime | None] = []

    def scraper() -> None:
        try:
            while not stop.is_set():
                folds.append(fold(sessions))
                scrape(sessions)
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)
            raise

    threads = [threading.Thread(target=scraper) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(6):
            writer.batch(sessions, runs=6)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
    assert any(f is not None for f in folds), "some scrape folded"

    barrier = threading.Barrier(4)
    results: list[dict[str, Any]] = []

    def together() -> None:
        barrier.wait()
        fold(sessions)
        results.append(scrape(sessions))

    threads = [threading.Thread(target=together) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    whole = oracle(sessions)
    assert len(results) == 4
    for got in results:
        assert_same(got, whole)
    assert rollup_steps(sessions) == sum(h[1] for h in whole["steps"].values())


def test_other_bucket_bounds_start_the_rollup_over(
    sessions: sessionmaker[Session], writer: Writer
) -> None:
    writer.batch(sessions, runs=4)
    fold(sessions)
    other = Bounds(steps=(5,), calls=(5,), dispatch=(5,))
    with sessions() as s, s.begin():  # another version's bounds, while this one's are kept
        assert MetricsRepo(s).fold_in_transaction(other, NOW_LAG) is not None
    assert_same(scrape(sessions), oracle(sessions))  # read live: the rollup is not ours
    fold(sessions)
    assert_same(scrape(sessions), oracle(sessions))
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(MetricsRollup)) > 0
