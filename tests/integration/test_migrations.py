"""Migrations are tested code: they match the models and run both ways."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, make_url, text

from shared.hashing import canonical_bytes, sha256_hex
from shared.opencode.calls import UNKNOWN_ERROR
from tests.conftest import ROOT, scratch_database_url

pytestmark = pytest.mark.integration

ONE_RUN = (
    "INSERT INTO app.intents (id, repo_path, goal, base_ref, request_sha256)"
    " VALUES ('r1', '/r', 'g', 'HEAD', 'x');"
    "INSERT INTO app.runs (id, intent_id, status, next_action, retry_count, app_version)"
    " VALUES ('r1', 'r1', 'failed', 'none', 0, 'v');"
)
"""An intent and its failed run, ``r1``, in every revision's schema."""


def _config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@dataclass
class Scratch:
    """An empty database of this session's, migrated only as far as the test says."""

    url: str
    engine: Engine

    def upgrade(self, revision: str) -> None:
        command.upgrade(_config(self.url), revision)

    def downgrade(self, revision: str) -> None:
        command.downgrade(_config(self.url), revision)

    def execute(self, *statements: str) -> None:
        """Run ``statements`` in one transaction."""
        with self.engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))

    def row(self, query: str) -> tuple[Any, ...]:
        """The one row ``query`` selects."""
        with self.engine.connect() as conn:
            return tuple(conn.execute(text(query)).one())

    def one_call(self, status: str, *, response: str) -> None:
        """ONE_RUN and one CompileST call of it (op_key ``k``, 3 tokens), as stored then."""
        with self.engine.begin() as conn:
            conn.execute(text(ONE_RUN))
            conn.execute(
                text(
                    "INSERT INTO app.opencode_calls (op_key, run_id, step_id, attempt, agent,"
                    " request, response, usage, status) VALUES ('k', 'r1', 'CompileST', 1,"
                    " 'plan', '{}', CAST(:response AS jsonb), '{\"total_tokens\": 3}', :status)"
                ),
                {"response": response, "status": status},
            )


@pytest.fixture
def scratch(database_url: str, request: pytest.FixtureRequest) -> Iterator[Scratch]:
    name = make_url(scratch_database_url(database_url, f"m{request.node.name[5:9]}"))
    admin = create_engine(name.set(database="postgres"), isolation_level="AUTOCOMMIT")
    drop = text(f'DROP DATABASE IF EXISTS "{name.database}" WITH (FORCE)')
    with admin.connect() as conn:
        conn.execute(drop)
        conn.execute(text(f'CREATE DATABASE "{name.database}"'))
    url = name.render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        yield Scratch(url, engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(drop)
        admin.dispose()


def test_the_models_and_the_migrations_describe_the_same_schema(database_url: str) -> None:
    command.check(_config(database_url))  # raises if autogenerate would emit anything


def test_the_migrations_downgrade_to_base_and_upgrade_again(scratch: Scratch) -> None:
    scratch.upgrade("head")
    scratch.downgrade("base")
    scratch.upgrade("head")
    unique = scratch.row(
        "SELECT count(*) FROM pg_constraint WHERE contype = 'u' AND conname IN"
        " ('uq_opencode_calls_op_key', 'uq_opencode_calls_run_id_step_id_attempt')"
    )
    assert unique == (2,)


def test_0005_turns_json_null_written_by_older_code_into_sql_null(scratch: Scratch) -> None:
    scratch.upgrade("0004")
    scratch.one_call("failed", response="null")
    scratch.upgrade("head")
    row = scratch.row("SELECT response IS NULL, usage IS NULL FROM app.opencode_calls")
    assert row == (True, False), "only the JSON null became SQL NULL"


def test_0008_stores_older_pretty_plans_as_the_bytes_their_digest_is_over(
    scratch: Scratch,
) -> None:
    plan = {"design": "naïve ✓", "files": [{"path": "a.py", "change": "add", "why": "é"}]}
    pretty = json.dumps(plan, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"
    other = json.dumps({"design": "not the digested plan"}, indent=2).encode()
    scratch.upgrade("0007")
    with scratch.engine.begin() as conn:
        for run_id, content in (("r1", pretty), ("r2", other)):
            values = {
                "r": run_id,
                "digest": sha256_hex(canonical_bytes(plan)),
                "content": content,
                "size": len(content),
                "sha": sha256_hex(content),
            }
            for statement in (
                "INSERT INTO app.intents (id, repo_path, goal, base_ref, request_sha256)"
                " VALUES (:r, '/r', 'g', 'HEAD', 'x')",
                "INSERT INTO app.runs (id, intent_id, status, next_action, retry_count,"
                " app_version, plan_sha256) VALUES (:r, :r, 'waiting_input',"
                " 'await:approval', 0, 'v', :digest)",
                "INSERT INTO app.artifacts (run_id, step_id, kind, name, media_type,"
                " content, size, sha256) VALUES (:r, 'CompileST', 'plan_card',"
                " 'plan.json', 'application/json', :content, :size, :sha)",
            ):
                conn.execute(text(statement), values)
    scratch.upgrade("head")
    with scratch.engine.connect() as conn:
        stored = dict(
            conn.execute(text("SELECT run_id, content FROM app.artifacts ORDER BY run_id")).all()
        )
    assert bytes(stored["r1"]) == canonical_bytes(plan)
    assert bytes(stored["r2"]) == other, "a plan whose canonical form is not the digest stays"


def test_0010_downgraded_turns_a_late_call_back_into_the_unknown_it_was_declared(
    scratch: Scratch,
) -> None:
    scratch.upgrade("0010")
    scratch.one_call("succeeded_late", response='{"structured": {}}')
    scratch.downgrade("0009")
    row = scratch.row("SELECT status, error_name, error, usage FROM app.opencode_calls")
    assert row == ("unknown", "OutcomeUnknown", UNKNOWN_ERROR, {"total_tokens": 3})


def test_0011_refuses_duplicate_attempts_by_name_and_its_downgrade_resumes_parked_runs(
    scratch: Scratch,
) -> None:
    scratch.upgrade("0010")
    scratch.execute(
        ONE_RUN,
        "UPDATE app.runs SET status = 'applying', next_action ="
        " 'run:ApplyPatchST', last_step = 'ApplyPatchST' WHERE id = 'r1';"
        "INSERT INTO app.opencode_calls (op_key, run_id, step_id, attempt, agent,"
        " request, status) VALUES ('k1', 'r1', 'CompileST', 1, 'plan', '{}',"
        " 'succeeded'), ('k2', 'r1', 'CompileST', 1, 'plan', '{}', 'succeeded')",
    )
    with pytest.raises(RuntimeError, match="ledger_attempt_unique"):
        scratch.upgrade("head")
    scratch.execute("DELETE FROM app.opencode_calls WHERE op_key = 'k2'")
    scratch.upgrade("head")
    scratch.execute(
        "UPDATE app.runs SET status = 'waiting_upgrade', next_action ="
        " 'await:upgrade', contract_version = 'old' WHERE id = 'r1'"
    )
    scratch.downgrade("0010")
    row = scratch.row("SELECT status, next_action FROM app.runs")
    assert row == ("applying", "run:ApplyPatchST"), "back at the step it was parked at"


def test_0027_keeps_what_0016_spent_for_settled_calls_and_floors_cut_turns_from_then(
    scratch: Scratch,
) -> None:
    scratch.upgrade("0026")
    scratch.execute(
        ONE_RUN,
        "UPDATE app.runs SET spent_usd_micro = 1500, spent_tokens = 30,"
        " reserved_usd_micro = 3000, reserved_tokens = 1000 WHERE id = 'r1'",
        "INSERT INTO app.opencode_calls (op_key, run_id, step_id, attempt, agent, request,"
        " usage, status, settled_at, session_id) VALUES ('k1', 'r1', 'CompileST', 1, 'plan',"
        " '{}', '{\"total_tokens\": 30, \"cost_usd\": 0.0015}', 'timed_out', now(), 's1')",
        "INSERT INTO app.opencode_calls (op_key, run_id, step_id, attempt, agent, request,"
        " status, session_id, reserved_usd_micro, reserved_tokens) VALUES ('k2', 'r1',"
        " 'CompileST', 2, 'plan', '{}', 'sent', 's2', 3000, 1000)",
    )
    scratch.upgrade("0027")
    spent = "SELECT op_key, spent_usd_micro, spent_tokens FROM app.opencode_calls ORDER BY id"
    assert scratch.row(spent + " LIMIT 1") == ("k1", 1500, 30), "settled before: as 0016 spent"
    scratch.execute(
        "UPDATE app.opencode_calls SET status = 'timed_out',"
        " usage = '{\"total_tokens\": 10, \"cost_usd\": 0.0001}' WHERE op_key = 'k2'"
    )
    assert scratch.row(spent + " OFFSET 1") == ("k2", 3000, 1000), "cut short: its reservation"
    assert scratch.row(
        "SELECT spent_usd_micro, spent_tokens, reserved_usd_micro FROM app.runs"
    ) == (4500, 1030, 0)
    scratch.downgrade("0026")
    columns = scratch.row(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'app'"
        " AND table_name = 'opencode_calls' AND column_name LIKE 'spent_%'"
    )
    assert columns == (0,)


def test_0032_spends_a_cut_turns_last_step_again_and_its_downgrade_floors_it_as_0027(
    scratch: Scratch,
) -> None:
    scratch.upgrade("0031")
    sent = (
        "INSERT INTO app.opencode_calls (op_key, run_id, step_id, attempt, agent, request,"
        " status, session_id, reserved_usd_micro, reserved_tokens) VALUES"
        " ('k1', 'r1', 'CompileST', 1, 'plan', '{}', 'sent', 's1', 3000, 1000),"
        " ('k2', 'r1', 'CompileST', 2, 'plan', '{}', 'sent', 's2', 3000, 1000)"
    )
    scratch.execute(
        ONE_RUN,
        "UPDATE app.runs SET reserved_usd_micro = 6000, reserved_tokens = 2000 WHERE id = 'r1'",
        sent,
    )
    scratch.upgrade("0032")
    cut = (
        "UPDATE app.opencode_calls SET status = 'aborted', error_name = 'CallTokenBound',"
        ' usage = \'{"total_tokens": 2500, "cost_usd": 0.005,'
        ' "last_step_tokens": 1500, "last_step_cost_usd": 0.0025}\''
        " WHERE status = 'sent' AND op_key = "
    )
    spent = "SELECT spent_usd_micro, spent_tokens FROM app.opencode_calls WHERE op_key = "
    scratch.execute(cut + "'k1'")
    assert scratch.row(spent + "'k1'") == (7500, 4000), "its totals and the cut step"
    scratch.downgrade("0031")
    scratch.execute(cut + "'k2'")
    assert scratch.row(spent + "'k2'") == (5000, 2500), "as 0027: the totals alone"
