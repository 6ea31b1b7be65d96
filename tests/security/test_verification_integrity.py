"""What verifies a change: the agent chooses the command after approval, so a policy
may pin the commands that count (``verify_commands``); any other is refused.

Unpinned, a model answering ``python3 -c pass`` made a run "succeed" whatever its
change broke: the run's success said nothing about the repository's own tests.
"""

from __future__ import annotations

import pytest

from devstack.sample_repo import FILES
from tests.security import attacks
from tests.security.harness import Hostile, assert_fails_closed

pytestmark = pytest.mark.security

PINNED = '[policy]\nverify_commands = [["python3", "-m", "unittest", "-q", "test_calc"]]\n'
BROKEN = attacks.patch(
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
    "@@ -4,2 +4,2 @@\n def add(a: int, b: int) -> int:\n-    return a + b\n+    return a - b\n"
)


def test_a_verification_that_verifies_nothing_is_refused_under_a_pinned_policy(
    hostile: Hostile,
) -> None:
    fixture = hostile.fixture(
        "pinned-noop",
        plan=attacks.plan(("calc.py", "modify"), design="Tidy add."),
        patch=BROKEN,
        build=attacks.build("python3", "-c", "pass"),
    )
    repo = hostile.repo("pinned-noop", [{".kodo/policy.toml": PINNED}])
    outcome = hostile.drive(repo, fixture)
    assert_fails_closed(outcome, "verify_pinned")
    assert "python3 -m unittest -q test_calc" in str(outcome.diagnostic()), outcome.describe()
    assert not outcome.command_output(), "nothing ran"


def test_the_pinned_command_verifies_the_change(hostile: Hostile) -> None:
    honest = attacks.patch(attacks.append_lines("README.md", FILES["README.md"], ["Adds."]))
    fixture = hostile.fixture(
        "pinned-honest",
        plan=attacks.plan(("README.md", "modify"), design="Document add."),
        patch=honest,
        build=attacks.build("python3", "-m", "unittest", "-q", "test_calc"),
    )
    repo = hostile.repo("pinned-honest", [{".kodo/policy.toml": PINNED}])
    outcome = hostile.drive(repo, fixture)
    assert outcome.status == "succeeded", outcome.describe()
    assert "OK" in outcome.command_output(), outcome.describe()
