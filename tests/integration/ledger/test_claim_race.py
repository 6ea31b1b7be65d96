"""Two claims of one op_key in flight at once: the second yields to the first, whichever
unique index (op_key, or run + step + attempt) it meets first."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shared.db.repos.ledger import AttemptPromptChanged, LedgerRepo
from tests.factories import RunFactory

pytestmark = pytest.mark.integration


def _claim(s: Session, run_id: str, op_key: str) -> Any:
    return LedgerRepo(s).claim(
        op_key=op_key,
        run_id=run_id,
        step_id="CompileST",
        attempt=1,
        agent="plan",
        request={"prompt": op_key},
    )


def test_a_claim_waiting_on_its_twin_reads_the_twins_row(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory()
    db.commit()
    first = sessions()
    first.begin()
    assert _claim(first, run.id, "k" * 64) is None  # won, not yet committed
    result: list[Any] = []

    def second() -> None:
        with sessions() as s, s.begin():
            try:
                result.append(_claim(s, run.id, "k" * 64))
            except Exception as exc:  # recorded for the assertion below
                result.append(exc)

    waiter = threading.Thread(target=second)
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive(), "the second claim waits on the first's uncommitted row"
    first.commit()
    first.close()
    waiter.join(10)
    [found] = result
    assert not isinstance(found, Exception), f"the twin's claim raised {found!r}"
    row, _age = found
    assert (row.op_key, row.status) == ("k" * 64, "claimed")


def test_another_prompt_for_a_claimed_attempt_is_still_refused(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    run = RunFactory()
    db.commit()
    with sessions() as s, s.begin():
        assert _claim(s, run.id, "a" * 64) is None
    with sessions() as s, s.begin(), pytest.raises(AttemptPromptChanged):
        _claim(s, run.id, "b" * 64)
