"""Webhooks, the pure part: which moves notify, what is signed, how a receiver checks
it, how long a failed delivery waits, and where each event goes."""

from __future__ import annotations

import json

import pytest

from shared.domain.run_machine import (
    BudgetExhausted,
    Cancel,
    Escalated,
    RunStatus,
    StepFailed,
    StepId,
    StepSucceeded,
    transition,
)
from shared.domain.webhooks import (
    AttemptOutcome,
    Backoff,
    EndpointError,
    RunFacts,
    SignatureRefused,
    WebhookEvent,
    body_of,
    endpoint,
    endpoint_for,
    event_of,
    linked,
    outcome_of,
    payload,
    repository_endpoints,
    signature,
    signature_header,
    verify,
)
from shared.rng import seeded_rng

SECRET = "s3cret-s3cret-s3cret"  # noqa: S105 - a test key
BODY = b'{"event":"succeeded","id":"d1"}'


def test_a_plan_waiting_a_question_a_budget_stop_success_and_failure_notify() -> None:
    assert event_of(transition(RunStatus.COMPILING, StepSucceeded(StepId.COMPILE))) is (
        WebhookEvent.WAITING_INPUT
    )
    assert event_of(transition(RunStatus.DECIDING, Escalated())) is WebhookEvent.WAITING_INPUT
    assert event_of(transition(RunStatus.APPLYING, BudgetExhausted(StepId.APPLY_PATCH))) is (
        WebhookEvent.BUDGET
    )
    assert event_of(transition(RunStatus.EXECUTING, StepSucceeded(StepId.EXECUTE))) is (
        WebhookEvent.SUCCEEDED
    )
    assert event_of(transition(RunStatus.DECIDING, StepFailed(StepId.DECIDE))) is (
        WebhookEvent.FAILED
    )


def test_moves_between_steps_and_a_cancel_notify_nobody() -> None:
    assert event_of(transition(RunStatus.APPLYING, StepSucceeded(StepId.APPLY_PATCH))) is None
    assert event_of(transition(RunStatus.EXECUTING, Cancel())) is None


def test_the_payload_carries_ids_status_goal_and_links_and_no_agent_text() -> None:
    facts = RunFacts(
        run_id="r1",
        status="waiting_input",
        next_action="await:approval",
        last_step="CompileST",
        repo_path="/repos/a",
        goal="fix the \u202e bug",
        submitted_by="alice",
        base_commit="c" * 40,
        plan_sha256="p" * 64,
    )
    data = linked(
        payload("d1", WebhookEvent.WAITING_INPUT, facts, at="2026-01-01T00:00:00+00:00"),
        "https://kodo.example/",
    )
    assert data["links"] == {
        "run": "https://kodo.example/runs/r1",
        "page": "https://kodo.example/ui/runs/r1",
    }
    assert data["run"]["goal"] == "fix the \u202e bug"
    assert set(data["run"]) == {
        "id",
        "status",
        "nextAction",
        "lastStep",
        "repo",
        "goal",
        "submittedBy",
        "baseCommit",
        "planSha256",
    }
    assert json.loads(body_of(data)) == data, "the body is plain JSON of the payload"


def test_without_a_public_url_links_are_paths() -> None:
    facts = RunFacts("r1", "failed", "none", "ExecuteST", "/r", "g", None, None, None)
    data = linked(payload("d1", WebhookEvent.FAILED, facts, at="t"), "")
    assert data["links"]["page"] == "/ui/runs/r1"


def test_a_receiver_accepts_a_signature_over_the_timestamp_and_body_within_the_window() -> None:
    header = signature_header(SECRET, 1_700_000_000, BODY)
    assert header == f"t=1700000000,v1={signature(SECRET, 1_700_000_000, BODY)}"
    assert verify(SECRET, header, BODY, now=1_700_000_000 + 299) == 1_700_000_000


@pytest.mark.parametrize(
    ("secret", "body", "now", "rule"),
    [
        ("another-secret-entirely", BODY, 1_700_000_000, "signature_mismatch"),
        (SECRET, BODY + b" ", 1_700_000_000, "signature_mismatch"),
        (SECRET, BODY, 1_700_000_000 + 301, "replay_window"),
        (SECRET, BODY, 1_700_000_000 - 301, "replay_window"),
    ],
    ids=["wrong secret", "changed body", "replayed late", "from the future"],
)
def test_a_receiver_refuses_a_forged_changed_or_replayed_delivery(
    secret: str, body: bytes, now: int, rule: str
) -> None:
    header = signature_header(SECRET, 1_700_000_000, BODY)
    with pytest.raises(SignatureRefused, match=rule):
        verify(secret, header, body, now=now)


def test_a_malformed_signature_header_is_refused_by_name() -> None:
    with pytest.raises(SignatureRefused, match="signature_format"):
        verify(SECRET, "v1=abc", BODY, now=0)


def test_backoff_doubles_up_to_its_cap_with_at_most_half_of_it_jittered() -> None:
    backoff = Backoff(base_s=10, cap_s=60, max_attempts=5)
    assert [backoff.delay_s(n, 0.0) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 30, 30]
    assert backoff.delay_s(3, 0.999) == pytest.approx(39.98)


def test_the_jitter_comes_from_the_seeded_rng_so_a_seed_replays_the_schedule() -> None:
    backoff = Backoff(base_s=10, cap_s=3600, max_attempts=8)

    def schedule(seed: int) -> list[float]:
        return [
            backoff.delay_s(n, seeded_rng(seed, "webhook", "d1", str(n)).random())
            for n in range(1, 8)
        ]

    assert schedule(7) == schedule(7)
    assert schedule(7) != schedule(8)
    for n, delay in enumerate(schedule(7), start=1):
        ceiling = min(3600, 10 * 2 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling


def test_jitter_outside_the_unit_interval_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="jitter"):
        Backoff(1, 1, 1).delay_s(1, 1.0)


def test_it_gives_up_after_the_last_attempt_allowed() -> None:
    backoff = Backoff(base_s=1, cap_s=1, max_attempts=3)
    assert [backoff.gives_up_after(n) for n in (1, 2, 3)] == [False, False, True]
    assert outcome_of(503, gives_up=False) is AttemptOutcome.RETRY
    assert outcome_of(None, gives_up=True) is AttemptOutcome.GAVE_UP
    assert outcome_of(302, gives_up=False) is AttemptOutcome.RETRY, "redirects are not followed"
    assert outcome_of(204, gives_up=True) is AttemptOutcome.DELIVERED


def test_a_repository_endpoint_replaces_the_global_one_for_its_runs() -> None:
    repos = repository_endpoints(
        json.dumps({"/repos/a": {"url": "https://a.example/hook", "secret": SECRET}})
    )
    fallback = endpoint("http://127.0.0.1:9/hook", SECRET, "global")
    assert endpoint_for("/repos/a", repos, fallback) == repos["/repos/a"]
    assert endpoint_for("/repos/b", repos, fallback) == fallback
    assert endpoint_for("/repos/b", repos, None) is None


def test_an_endpoint_shows_its_origin_and_never_its_secret() -> None:
    hook = endpoint("https://user:pw@hooks.example:8443/p/TOKEN?x=1", SECRET, "global")
    assert hook.origin == "https://hooks.example:8443"
    assert SECRET not in repr(hook)


@pytest.mark.parametrize(
    ("url", "secret", "says"),
    [
        ("ftp://x/hook", SECRET, "http"),
        ("https:///nohost", SECRET, "http"),
        ("https://x/hook", "short", "at least 16"),
        ("http://127.0.0.1:99999/hook", SECRET, "not a URL"),
        ("http://[::1/hook", SECRET, "not a URL"),
    ],
)
def test_an_unusable_endpoint_is_refused_without_quoting_its_secret(
    url: str, secret: str, says: str
) -> None:
    with pytest.raises(EndpointError, match=says) as refused:
        endpoint(url, secret, "global")
    assert secret not in str(refused.value)


@pytest.mark.parametrize(
    "raw",
    ["[]", "{", '{"/r": {"url": "https://x/h"}}', '{"/r": {"url": 1, "secret": 2}}'],
)
def test_a_malformed_repository_mapping_is_refused(raw: str) -> None:
    with pytest.raises(EndpointError, match="KODO_WEBHOOKS"):
        repository_endpoints(raw)
