"""A jsonb value holding U+0000 or a lone surrogate is stored (as U+FFFD), where Postgres
alone refuses it.

The ledger records what an agent said, and an agent may say either: the write must not
fail (and with it the record of the refusal)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, bindparam, create_engine, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DataError

from shared.db.engine import make_engine

pytestmark = pytest.mark.integration

ECHO = text("SELECT CAST(:v AS jsonb)").bindparams(bindparam("v", type_=JSONB))
ANSWER = {
    "argv": ["python3", "-c", "print(1)\x00"],
    "path\x00": "notes\x00.md",
    "n": "\\u0000",
    "lone": "\ud800 \U0001f600",
}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = make_engine(database_url, pool_size=1)
    yield made
    made.dispose()


def test_kodos_engine_stores_a_nul_or_a_lone_surrogate_as_the_replacement_character(
    engine: Engine,
) -> None:
    with engine.connect() as conn:
        stored = conn.execute(ECHO, {"v": ANSWER}).scalar_one()
    assert stored == {
        "argv": ["python3", "-c", "print(1)\ufffd"],
        "path\ufffd": "notes\ufffd.md",
        "n": "\\u0000",  # the agent's six characters, not a NUL
        "lone": "\ufffd \U0001f600",
    }


def test_postgres_alone_refuses_the_same_value(database_url: str) -> None:
    """What the engine's serializer is for: without it the write fails whole."""
    plain = create_engine(database_url, pool_size=1)
    try:
        for unstorable in ("\x00", "\ud800"):
            with plain.connect() as conn, pytest.raises(DataError):
                conn.execute(ECHO, {"v": {"a": unstorable}})
    finally:
        plain.dispose()
