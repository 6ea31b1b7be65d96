"""shared.db.direct sends every hot statement as SQLAlchemy would, and reads it back
the same: each is run both ways (each in a rolled-back SAVEPOINT) with awkward values
(JSON null, '%' in text, big numbers, naive and aware times, bytes), and the
(statement, parameters) pair before_cursor_execute sees and the typed rows compared.
direct sends PostgreSQL's own numbered placeholders (``$1``, in its text's order of
names): its pair is read back into names by that order before it is compared.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Engine, event, text
from sqlalchemy.orm import Session

from shared.db import direct
from shared.db.repos import approvals, ledger, runs, snapshots, steps, tokens
from shared.domain.vocab import ArtifactKind
from tests import factories

_NAME = re.compile(r"%\((\w+)\)s")


def _norm(v: Any) -> Any:
    if isinstance(v, list):  # an array parameter: its elements, each as itself
        return [_norm(e) for e in v]
    if isinstance(v, Jsonb):
        return ("Jsonb", v.obj)
    if type(v).__name__ == "Binary":
        return ("Binary", v.obj)
    return v


def _named(statement: str, params: Any, order: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """A numbered statement (``$1``...) and its values, as the named text and values
    SQLAlchemy's own execution sends; a named one as it is (``%%``: a literal ``%``)."""
    if isinstance(params, dict):
        return statement.replace("%%", "%"), params
    text = re.sub(r"\$(\d+)", lambda m: f"%({order[int(m[1]) - 1]})s", statement)
    return text, dict(zip(order, params, strict=True))


def _capture(
    engine: Engine, db: Session, run: Any, stmt: Any = None
) -> tuple[str, dict[str, Any], Any]:
    seen: list[tuple[str, dict[str, Any]]] = []
    got: list[Any] = []
    order = () if stmt is None else direct.compile_once(stmt, engine.dialect).order

    def grab(_c: Any, _cur: Any, statement: str, params: Any, *_rest: Any) -> None:
        seen.append(_named(statement, params, order))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        nested = db.begin_nested()
        try:
            result = run()
            rows = result.all() if name_returns(result) else None
            got.append(None if rows is None else [_typed(r) for r in rows])
        finally:
            nested.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    stmts = [s for s in seen if not s[0].startswith(("SAVEPOINT", "ROLLBACK", "RELEASE"))]
    assert len(stmts) == 1, seen
    sql, params = stmts[0]
    used = set(_NAME.findall(sql))
    return sql, {k: _norm(params[k]) for k in sorted(used)}, got[0]


def name_returns(result: Any) -> bool:
    return bool(getattr(result, "returns_rows", True))


def _typed(row: Any) -> list[tuple[type, Any]]:
    return [(type(v), v) for v in row]


def _cases(run_id: str) -> dict[str, tuple[Any, dict[str, Any]]]:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    w = {"w_run_id": run_id, "w_step_id": "CompileST", "w_fence": 1}
    return {
        "ENTERING": (
            snapshots._ENTERING,
            {
                "w_run_id": run_id,
                "w_step_id": "CompileST",
                "w_expected": "compiling",
                "lease": timedelta(seconds=30),
                "owner": "me",
                "worker_version": "v",
                "task_id": None,
            },
        ),
        "ENTERING_ELSEWHERE": (
            snapshots._ENTERING,
            {
                "w_run_id": run_id,
                "w_step_id": "DecideST",
                "w_expected": "deciding",
                "lease": timedelta(seconds=30),
                "owner": "me",
                "worker_version": "v",
                "task_id": "t%(x)s",
            },
        ),
        "PARK": (steps._PARK, {**w, "op_key": "k", "lease": timedelta(seconds=3), "work_ms": 12}),
        "RELEASE": (steps._RELEASE, w),
        "RENEW": (steps._RENEW, {**w, "lease": timedelta(seconds=3)}),
        "HOLD": (steps._HOLD, {**w, "lease": timedelta(seconds=3)}),
        "SFINISH_NONE": (
            steps._FINISH,
            {**w, "status": "succeeded", "output": None, "error": None},
        ),
        "SFINISH_OUT": (
            steps._FINISH,
            {**w, "status": "succeeded", "output": {"a": "%(x)s %", "n": [None]}, "error": None},
        ),
        "FINISH_MOVING": (
            steps._finish_moving_statement(
                frozenset({"status", "next_action", "updated_at", "last_step", "error"})
                | {"from_status"}
            ),
            {
                **w,
                "step_status": "failed",
                "step_output": {"why": "%(w_fence)s"},
                "step_error": "boom %s",
                "status": "failed",
                "next_action": "none",
                "updated_at": now,
                "last_step": "CompileST",
                "error": "boom %s",
                "from_status": "compiling",
            },
        ),
        "FINISH_MOVING_ARTIFACTS": (
            steps._finish_moving_statement(
                frozenset({"status", "next_action", "updated_at", "last_step", "error"})
                | {"from_status"},
                True,
            ),
            {
                **w,
                "step_status": "succeeded",
                "step_output": None,
                "step_error": None,
                "status": "waiting_input",
                "next_action": "approve",
                "updated_at": now,
                "last_step": "CompileST",
                "error": None,
                "from_status": "compiling",
                **steps.artifact_arrays(
                    [
                        steps.NewArtifact(
                            ArtifactKind.PLAN_CARD, "card.r9.json", b'{"a": "%(w_fence)s"}', "json"
                        ),
                        steps.NewArtifact(ArtifactKind.DIAGNOSTIC, "x.bin", b"\x00\xff%s", "raw"),
                    ]
                ),
            },
        ),
        "PUT": (
            steps._PUT_ARTIFACT,
            {
                "run_id": run_id,
                "step_id": "CompileST",
                "kind": "plan_card",
                "name": "n",
                "media_type": "m",
                "content": b"\x00%s",
                "size": 3,
                "sha256": hashlib.sha256(b"\x00%s").hexdigest(),
            },
        ),
        "SNAPSHOT": (snapshots._SNAPSHOT, {"run_id": run_id, "step_id": None}),
        "CLAIM": (
            ledger._CLAIM,
            {
                "op_key": "k",
                "run_id": run_id,
                "step_id": "CompileST",
                "attempt": 1,
                "agent": "a",
                "request": {"prompt": "%(op_key)s"},
                "call_usd": None,
                "call_tok": None,
                "budgeted": False,
                "w_session": None,
                "w_daemon": None,
                "w_worktree": "/ws/%(op_key)s",
            },
        ),
        "CLAIM_HOLDING": (
            ledger._CLAIM_HOLDING,
            {
                **w,
                "w_expected": "compiling",
                "lease": timedelta(seconds=30),
                "op_key": "k3",
                "attempt": 3,
                "agent": "a",
                "request": {"prompt": "%(w_fence)s"},
                "call_usd": 10,
                "call_tok": 5,
                "budgeted": True,
                "w_session": None,
                "w_daemon": None,
                "w_worktree": None,
            },
        ),
        "SENT_AND_PARKED": (
            ledger._SENT_AND_PARKED,
            {**w, "key": "k", "lease": timedelta(seconds=3), "work_ms": 12},
        ),
        "SFINISH_JSON_NULL": (
            steps._FINISH,
            {**w, "status": "succeeded", "output": JSON.NULL, "error": "%s %(w_fence)s"},
        ),
        "PUT_MEMORYVIEW": (
            steps._PUT_ARTIFACT,
            {
                "run_id": run_id,
                "step_id": "CompileST",
                "kind": "plan_card",
                "name": "plan.json",
                "media_type": "application/json",
                "content": memoryview(b'{"k": 1}'),
                "size": 8,
                "sha256": hashlib.sha256(b'{"k": 1}').hexdigest(),
            },
        ),
        "CLAIM_BUDGETED": (
            ledger._CLAIM,
            {
                "op_key": "k2",
                "run_id": run_id,
                "step_id": "CompileST",
                "attempt": 2,
                "agent": "a",
                "request": {"n": None, "f": 1.5, "big": 2**70, "s": "\u00e9%%"},
                "call_usd": 10,
                "call_tok": 5,
                "budgeted": True,
                "w_session": "ses_%(s)s",
                "w_daemon": "http://127.0.0.1:1/%",
                "w_worktree": "/ws/\u00e9%%",
            },
        ),
        "LFINISH_NAIVE": (
            ledger._FINISH,
            {
                "key": "k",
                "from_status": "claimed",
                "status": "succeeded",
                "now": datetime(2026, 1, 2, 3, 4, 5),
                "duration_ms": 7,
                "response": {"a": [None, {"b": "%(key)s"}]},
                "usage": None,
                "error_name": None,
                "error": None,
            },
        ),
        "SNAPSHOT_STEP": (snapshots._SNAPSHOT, {"run_id": run_id, "step_id": "CompileST"}),
        "BUDGET": (ledger._BUDGET_OF, {"w_run_id": run_id}),
        "MARK_STARTED": (ledger._MARK_STARTED, {"key": "k", "session_id": "s", "daemon": None}),
        "MARK_SENT": (ledger._MARK_SENT, {"key": "k"}),
        "LFINISH": (
            ledger._FINISH,
            {
                "key": "k",
                "from_status": "claimed",
                "status": "failed",
                "now": now,
                "duration_ms": None,
                "response": None,
                "usage": {},
                "error_name": None,
                "error": None,
            },
        ),
        "AWAITS": (ledger._AWAITS, {"key": "k"}),
        "STATUS_OF": (runs._STATUS_OF, {"run_id": run_id}),
        "APPLY": (
            runs._apply_statement(
                frozenset({"status", "next_action", "updated_at", "error", "run_id", "from_status"})
            ),
            {
                "status": "failed",
                "next_action": "none",
                "updated_at": now,
                "error": None,
                "run_id": run_id,
                "from_status": "compiling",
            },
        ),
        "TOKEN": (tokens._LIVE_NAME_ROLE, {"digest": "d"}),
        "GATE": (approvals._GATE, {"run_id": run_id}),
        "DECISION_OF": (approvals._DECISION_OF, {"run_id": run_id, "plan_sha256": "%(x)s"}),
        "RECORD_DECISION": (
            approvals._RECORD,
            {
                "run_id": run_id,
                "plan_sha256": "e" * 64,
                "decision": "approved",
                "approver": "%(approver)s",
                "comment": None,
                "approved": True,
                "dispatched": False,
            },
        ),
        "ADD_INTENT": (
            runs._ADD_INTENT,
            {
                "id": "intent-%",
                "repo_path": "/r/%(goal)s",
                "goal": "\u00e9 %s",
                "base_ref": "HEAD",
                "submitted_by": None,
                "request_sha256": "a" * 64,
                "base_commit": "b" * 40,
                "repo_device": 2**40,
                "repo_inode": 7,
                "policy": {"max_lines": 400, "source": None},
                "idempotency_key": None,
                "budget_usd_micro": None,
                "budget_tokens": 10**12,
            },
        ),
    }


def _rich_run(db: Session) -> Any:
    """A run with a plan artifact, an approval, step outputs, a call and a budget, so
    every column of the hot statements' results has a value to convert."""
    plan = b'{"steps": [1, 2.5, null], "pct": "%(x)s"}'
    digest = hashlib.sha256(plan).hexdigest()
    run = factories.RunFactory(plan_sha256=digest, budget_usd_micro=1000, budget_tokens=10**12)
    db.flush()
    db.execute(
        text(
            "INSERT INTO app.step_runs (run_id, step_id, status, started_at, fence, deliveries,"
            " output, lease_owner, lease_expires_at, parked_on, round, attempt_base,"
            " round_input) VALUES (:r, 'CompileST', 'running', now(), 1, 1, NULL, 'x',"
            " now() + interval '1 min', 'k', 2, 3, CAST(:ri AS jsonb)), (:r, 'DecideST',"
            " 'succeeded', now(), 1, 1, CAST(:out AS jsonb), NULL, NULL, NULL, 1, 0, NULL)"
        ),
        {"r": run.id, "ri": '{"q": 1.25}', "out": '{"d": [true, 12345678901234567890.5]}'},
    )
    db.execute(
        text(
            "INSERT INTO app.artifacts (run_id, step_id, kind, name, media_type, sha256, size,"
            " content) VALUES (:r, 'CompileST', 'plan_card', 'plan.json', 'application/json',"
            " :d, :n, :c)"
        ),
        {"r": run.id, "d": digest, "n": len(plan), "c": plan},
    )
    factories.PlanApprovalFactory(run=run, run_id=run.id, plan_sha256=digest)
    factories.OpenCodeCallFactory(run=run, run_id=run.id, op_key="k", status="claimed")
    db.flush()
    return run


@pytest.mark.parametrize("name", list(_cases("x")))
def test_the_cursor_sees_what_sqlalchemy_would_send(engine: Engine, db: Session, name: str) -> None:
    run = _rich_run(db)
    stmt, params = _cases(run.id)[name]
    sa = _capture(engine, db, lambda: db.execute(stmt, dict(params)))
    fast = _capture(engine, db, lambda: direct.execute(db, stmt, dict(params)), stmt)
    if name.startswith(("CLAIM", "RECORD")):  # the new row's id: a sequence, not rolled back
        sa = _without_column(sa, 2 if name == "CLAIM_HOLDING" else 0)
        fast = _without_column(fast, 2 if name == "CLAIM_HOLDING" else 0)
    if name.startswith("PUT"):
        # SQLAlchemy hides the key its implicit RETURNING reads; direct returns it (Rows).
        sa, fast = sa[:2], fast[:2]
    if name in ("SNAPSHOT_STEP", "ENTERING"):  # the parked call's age is the statement's clock
        sa, fast = _ageless(sa), _ageless(fast)
    assert fast == sa
    if name.startswith("FINISH_MOVING"):  # the step's record matched: the run moved
        assert fast[2], fast
    if name == "FINISH_MOVING_ARTIFACTS":  # and both artifacts were stored (then rolled back)
        assert _stored_with_it(engine, db, stmt, params) == [
            ("card.r9.json", hashlib.sha256(b'{"a": "%(w_fence)s"}').hexdigest()),
            ("x.bin", hashlib.sha256(b"\x00\xff%s").hexdigest()),
        ]
    if name == "SENT_AND_PARKED":  # marked sent, no end seen, parked, the run's status
        marked, ended, parked, status, lazy = (v for _t, v in fast[2][0])
        assert (marked, ended, status, lazy) == (1, False, "compiling", "off")
        assert parked is not None
    if name == "CLAIM_HOLDING":  # renewed, the run's status read, claimed (it fits)
        assert [v for _t, v in fast[2][0]] == [1, "compiling", True], fast
    if name == "SNAPSHOT_STEP":  # the rich row was read: the computed columns have values
        assert all(v is not None for _t, v in fast[2][0][-5:]), fast[2]  # approved..round


def _stored_with_it(engine: Engine, db: Session, stmt: Any, params: dict[str, Any]) -> Any:
    """The artifacts the statement stored, read in its SAVEPOINT before it is rolled back."""
    nested = db.begin_nested()
    try:
        direct.execute(db, stmt, dict(params))
        return [
            tuple(r)
            for r in db.execute(
                text(
                    "SELECT name, sha256 FROM app.artifacts WHERE run_id = :r"
                    " AND step_id = 'CompileST' AND name IN ('card.r9.json', 'x.bin') ORDER BY name"
                ),
                {"r": params["w_run_id"]},
            )
        ]
    finally:
        nested.rollback()


def _ageless(got: tuple[str, dict[str, Any], Any]) -> Any:
    """The snapshot's rows with the parked call's ``age`` (seconds since it was claimed,
    by each execution's own statement time) checked and dropped."""
    rows = []
    for row in got[2]:
        cells = []
        for kind, value in row:
            if isinstance(value, dict) and "op_key" in value:
                assert float(value["age"]) >= 0, value
                value = {k: v for k, v in value.items() if k != "age"}
            cells.append((kind, value))
        rows.append(cells)
    return got[0], got[1], rows


def _without_column(got: tuple[str, dict[str, Any], Any], i: int) -> Any:
    return got[0], got[1], [r[:i] + r[i + 1 :] for r in got[2]]
