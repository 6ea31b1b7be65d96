"""The bench's SQL counters and trace: what Postgres was sent, transaction by transaction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from bench import sqlcount

pytestmark = pytest.mark.integration


@pytest.fixture
def counting() -> Iterator[None]:
    sqlcount.listen()
    try:
        yield
    finally:
        sqlcount.trace_to(None)
        sqlcount.unlisten()


def test_a_transaction_is_counted_and_traced_with_its_statements(
    engine: Engine, counting: None, tmp_path: Path
) -> None:
    trace = tmp_path / "worker-1.trace"
    sqlcount.trace_to(trace)
    before = sqlcount.snapshot()
    with engine.begin() as conn:
        conn.execute(text("SELECT count(*) FROM app.runs"))
    sqlcount.trace_to(None)
    after = sqlcount.snapshot()

    def grew(key: str) -> int:
        return after.get(key, 0) - before.get(key, 0)

    assert (grew("begins"), grew("commits"), grew("statements")) == (1, 1, 1)
    assert grew("stmt:SELECT app.runs") == 1
    lines = [line.split("\t", 1) for line in trace.read_text().splitlines()]
    assert [text for _thread, text in lines] == [
        "BEGIN",
        "SELECT count(*) FROM app.runs",
        "COMMIT",
    ]
    assert {thread for thread, _text in lines} == {"MainThread"}


def test_an_autocommit_read_is_not_counted_as_a_transaction(
    engine: Engine, counting: None, tmp_path: Path
) -> None:
    """SQLAlchemy signals begin and rollback around an AUTOCOMMIT connection's statement
    too, but sends neither: the bench's transaction row must not count them."""
    trace = tmp_path / "api-1.trace"
    sqlcount.trace_to(trace)
    before = sqlcount.snapshot()
    with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text("SELECT 1"))
    sqlcount.trace_to(None)
    after = sqlcount.snapshot()

    sent = {k: after.get(k, 0) - before.get(k, 0) for k in ("begins", "commits", "rollbacks")}
    assert sent == {"begins": 0, "commits": 0, "rollbacks": 0}
    assert after.get("autocommit_begins", 0) - before.get("autocommit_begins", 0) == 1
    texts = [line.split("\t", 1)[1] for line in trace.read_text().splitlines()]
    assert texts[1] == "SELECT 1"
    assert all("autocommit, nothing sent" in t for t in (texts[0], texts[-1]))


def test_nothing_is_traced_once_stopped(engine: Engine, counting: None, tmp_path: Path) -> None:
    trace = tmp_path / "stopped.trace"
    sqlcount.trace_to(trace)
    sqlcount.trace_to(None)
    with engine.begin() as conn:
        conn.execute(text("SELECT 1"))
    assert trace.read_text() == ""
