"""Token changes are made on the database by the CLI, never through the API: each one
writes its audit line (who, what) to the CLI's stderr, JSON or console per KODO_LOG_FORMAT."""

from __future__ import annotations

import getpass
import json

import pytest

from .conftest import Kodo

pytestmark = pytest.mark.integration


def _audit(stderr: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "audit"]


def test_creating_and_revoking_a_token_each_write_who_and_what(kodo: Kodo) -> None:
    kodo("token", "revoke", "audit-probe")  # left by an earlier run of the suite
    made = kodo("token", "create", "audit-probe", "--role", "approver", "--json")
    revoked = kodo("token", "revoke", "audit-probe")

    assert made.exit_code == revoked.exit_code == 0
    assert json.loads(made.stdout)["name"] == "audit-probe"  # stdout stays the token alone
    [create] = _audit(made.stderr)
    [revoke] = _audit(revoked.stderr)
    assert (create["action"], create["token_name"], create["role"]) == (
        "token.create",
        "audit-probe",
        "approver",
    )
    assert (revoke["action"], revoke["token_name"]) == ("token.revoke", "audit-probe")
    assert str(create["actor"]).startswith(f"{getpass.getuser()}@")
    assert "token" not in create  # never the secret itself
    assert json.loads(made.stdout)["token"] not in made.stderr
