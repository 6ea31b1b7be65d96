"""The hints the CLI prints name an approver's token, and `kodo up` warns of no root."""

from __future__ import annotations

from services.cli.local import next_steps, repo_root_warning
from services.cli.watch import approve_hint

DIGEST = "ab" * 32


def test_the_approve_hint_names_the_digest_the_token_and_how_to_make_one() -> None:
    hint = "\n".join(approve_hint("r1", DIGEST))

    assert f"kodo run approve r1 --plan-sha256 {DIGEST} --token APPROVER_TOKEN" in hint
    assert "kodo run reject r1 --token APPROVER_TOKEN" in hint
    assert "kodo token create NAME --role approver" in hint


def test_the_approve_hint_shows_a_hostile_run_id_and_digest_escaped() -> None:
    hint = "\n".join(approve_hint("r\x1b[2J", "d\x1b]0;x\x07"))

    assert "kodo run approve r\\x1b[2J --plan-sha256 d\\x1b]0;x\\x07 --token" in hint


def test_up_without_a_repository_root_warns_that_every_intent_is_refused() -> None:
    warning = repo_root_warning([])

    assert warning is not None
    assert warning.startswith("WARNING: no repository root")
    assert "kodo up --repo-root DIR" in warning
    assert repo_root_warning(["/srv/repos"]) is None


def test_up_next_steps_submit_under_the_root_and_approve_with_a_token() -> None:
    steps = "\n".join(next_steps(["/srv/repos"]))

    assert "kodo intent submit --repo /srv/repos/REPO" in steps
    assert "kodo run approve RUN_ID --token TOKEN" in steps
    assert "kodo run list --waiting" in steps
