"""Hostile input: schemathesis generates requests from our own OpenAPI spec.

Every operation, with valid and invalid inputs, must answer without a 500, and the
tables must stay consistent (no run past the gate without an approval of its plan).
(Driven through hypothesis directly: schemathesis' pytest plugin does not load under
pytest 9.)
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.service.tokens import Role
from tests.factories import RunFactory
from tests.integration.api.conftest import issue_token

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 40

PAST_GATE_UNAPPROVED = text(
    "SELECT count(*) FROM app.runs r WHERE r.status IN"
    " ('applying', 'deciding', 'executing', 'succeeded') AND NOT EXISTS ("
    " SELECT 1 FROM app.plan_approvals a WHERE a.run_id = r.id"
    " AND a.plan_sha256 = r.plan_sha256 AND a.decision = 'approved')"
)


def test_no_generated_request_gets_a_server_error_or_corrupts_state(
    app: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    known = RunFactory(waiting_input=True)  # half the cases aim at a real run and intent
    db.commit()
    calls = Counter[str]()
    headers = {"Authorization": f"Bearer {issue_token(sessions, 'fuzzer', Role.ADMIN)}"}
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, headers=headers)
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12, "every operation of the spec is exercised"

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def exercise(case: Case) -> None:
            calls[case.path] += 1
            if calls[case.path] % 2 and case.path_parameters:
                for name in ("run_id", "intent_id"):
                    if name in case.path_parameters:
                        case.path_parameters[name] = known.id
            if case.path.endswith("/events"):  # a stream would wait for the next change
                case.query = {**(case.query or {}), "until": "compiling,waiting_input,queued"}
            response = case.call(headers=headers)
            statuses[response.status_code] += 1
            case.validate_response(response, checks=[not_a_server_error])
            with sessions() as s:
                assert s.execute(PAST_GATE_UNAPPROVED).scalar_one() == 0

        exercise()

    assert not any(code >= 500 for code in statuses)
    cases = sum(statuses.values())
    print(f"schemathesis: {len(operations)} operations, {cases} cases, {sorted(statuses.items())}")
