"""`kodo doctor`'s waiting-upgrade line: red when no worker of this code can resume them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from services.cli.doctor import check_stuck, check_waiting_upgrade
from shared.domain.step_contract import step_contract_version
from tests.factories import RunFactory

pytestmark = pytest.mark.integration


def test_no_parked_run_is_green(engine: Engine, db: Session) -> None:
    RunFactory(succeeded=True)
    db.commit()
    check = check_waiting_upgrade(engine)
    assert check.ok
    assert check.detail == "none"


def test_runs_parked_for_another_contract_are_red_and_counted_by_contract(
    engine: Engine, db: Session
) -> None:
    RunFactory(waiting_upgrade=True)
    RunFactory(waiting_upgrade=True)
    db.commit()
    check = check_waiting_upgrade(engine)
    assert not check.ok
    assert "2 run(s) waiting_upgrade" in check.detail
    assert "0123456789abcdef: 2" in check.detail
    assert step_contract_version() in check.detail
    assert check.data["by_contract"] == {"0123456789abcdef": 2}


def test_runs_parked_for_this_codes_contract_are_a_warning_the_reconciler_resumes_them(
    engine: Engine, db: Session
) -> None:
    RunFactory(waiting_upgrade=True, contract_version=step_contract_version())
    db.commit()
    check = check_waiting_upgrade(engine)
    assert check.ok
    assert check.detail.startswith("WARNING: 1 run(s) waiting_upgrade")
    assert "the reconciler resumes them" in check.detail


def test_a_parked_run_is_not_also_reported_as_stuck(engine: Engine, db: Session) -> None:
    RunFactory(waiting_upgrade=True, updated_at=datetime.now(UTC) - timedelta(hours=1))
    db.commit()
    assert check_stuck(engine, 1).data["by_status"] == {}
