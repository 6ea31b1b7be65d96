"""The run page is the review: what it renders from stored evidence, escaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from services.api.diff_view import MAX_LINES_PER_FILE
from services.api.run_review import MAX_SHOWN_CHARS
from shared.db.models import WebhookAttempt, WebhookDelivery
from shared.db.repos.steps import ArtifactRepo
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind
from tests.api_process.review_runs import (
    APPROVER,
    BASE_COMMIT,
    COMMENT,
    HOSTILE_MARKUP,
    HOSTILE_VISIBLE,
    SUBMITTER,
    store_failed_run,
    store_hostile_review,
    store_succeeded_run,
)
from tests.factories import IntentFactory, RunFactory

pytestmark = pytest.mark.integration


def test_a_succeeded_run_page_shows_submitter_base_commit_decision_diff_and_verification(
    client: FlaskClient, db: Session
) -> None:
    stored = store_succeeded_run(db)

    html = client.get(f"/ui/runs/{stored.run.id}").get_data(as_text=True)

    assert f'<strong id="submitter">{SUBMITTER}</strong>' in html
    assert BASE_COMMIT in html
    assert COMMENT in html
    assert APPROVER in html
    assert '<time datetime="2026-03-01T12:00:00Z">2026-03-01 12:00:00 UTC</time>' in html
    assert "123456" not in html, "no microseconds anywhere"
    assert 'id="diff"' in html
    assert "tests/test_calc.py" in html
    assert "python -m pytest -q tests/test_calc.py" in html
    assert "1 passed in 0.01s" in html
    assert stored.patch_sha256 is not None
    assert stored.patch_sha256 in html
    assert f"/runs/{stored.run.id}/artifacts/patch.diff?step=ApplyPatchST" in html


def test_a_failed_run_page_shows_its_diagnostic_both_verification_rounds_and_the_timeline(
    client: FlaskClient, db: Session
) -> None:
    stored = store_failed_run(db)

    html = client.get(f"/ui/runs/{stored.run.id}").get_data(as_text=True)

    assert 'id="diagnostics"' in html
    assert "diagnostic.r2.json" in html
    assert "&#34;rule&#34;: &#34;verification_failed&#34;" in html, "the JSON, indented, escaped"
    assert 'id="verification-2"' in html
    assert 'id="verification-1"' in html
    assert "exit 1" in html
    assert "E       assert 11 == 12" in html
    assert 'data-step="ExecuteST" data-round="1"' in html
    assert 'data-step="ExecuteST" data-round="2"' in html
    assert "The run failed." in html
    assert 'id="follow"' not in html, "a finished run is not followed"


def test_hostile_diff_and_command_output_are_shown_as_text(
    client: FlaskClient, db: Session
) -> None:
    stored = store_hostile_review(db)

    html = client.get(f"/ui/runs/{stored.run.id}").get_data(as_text=True)

    assert HOSTILE_MARKUP not in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;img src=x onerror=" in html
    assert "\x1b" not in html
    assert "\u202e" not in html
    assert "\x07" not in html
    for escape in HOSTILE_VISIBLE:
        assert escape in html, f"{escape} is shown"
    assert 'href="http://evil.example/' not in html


def test_a_patch_that_is_not_a_git_diff_is_shown_as_text_with_the_rule(
    client: FlaskClient, db: Session
) -> None:
    stored = store_succeeded_run(db)
    ArtifactRepo(db).put(
        stored.run.id,
        StepId.APPLY_PATCH,
        kind=ArtifactKind.PATCH,
        name="patch.r2.diff",
        content=b"<b>not a diff</b>\n\x1b[31mred\n",
        media_type="text/x-diff",
    )
    db.commit()

    html = client.get(f"/ui/runs/{stored.run.id}").get_data(as_text=True)

    assert "patch_unparsed: text before the first `diff --git` header" in html
    assert "&lt;b&gt;not a diff&lt;/b&gt;" in html
    assert "\\x1b[31mred" in html
    assert html.index('id="patch-2"') < html.index('id="patch-1"'), "the newest patch first"


def test_the_runs_page_lists_every_run_with_id_submitter_cost_and_age(
    client: FlaskClient, db: Session
) -> None:
    done = store_succeeded_run(db).run
    waiting = RunFactory(
        waiting_input=True,
        intent=IntentFactory(goal="<i>waiting</i>", submitted_by="wes", repo_path="/srv/b"),
        spent_usd_micro=12_500,
        spent_tokens=900,
    )
    db.commit()

    everything = client.get("/ui/runs").get_data(as_text=True)
    waiting_only = client.get("/ui/runs?status=waiting_input").get_data(as_text=True)
    by_sam = client.get(f"/ui/runs?submitter={SUBMITTER}").get_data(as_text=True)
    by_repo = client.get("/ui/runs?repo=/srv/b").get_data(as_text=True)

    assert done.id in everything
    assert waiting.id in everything
    assert "&lt;i&gt;waiting&lt;/i&gt;" in everything
    assert 'title="submitted 2026-03-01 12:00:00 UTC"' in everything, "to the second, in UTC"
    assert "$0.0125" in everything
    assert ">900<" in everything
    assert waiting.id in waiting_only
    assert done.id not in waiting_only
    assert done.id in by_sam
    assert waiting.id not in by_sam
    assert waiting.id in by_repo
    assert done.id not in by_repo
    assert '<option value="waiting_input" selected>' in waiting_only


def test_an_unknown_status_filter_is_refused_on_the_page(client: FlaskClient) -> None:
    reply = client.get("/ui/runs?status=<b>nope</b>")

    assert reply.status_code == 400
    assert "there is no run status &#39;&lt;b&gt;nope&lt;/b&gt;&#39;" in reply.get_data(
        as_text=True
    )


def test_the_approvals_page_redirects_to_the_waiting_runs(client: FlaskClient) -> None:
    reply = client.get("/ui/approvals")

    assert reply.status_code == 303
    assert reply.headers["Location"] == "/ui/runs?status=waiting_input"


def test_a_patch_longer_than_the_page_shows_is_still_read_as_a_diff_and_says_what_is_cut(
    client: FlaskClient, db: Session
) -> None:
    stored = store_succeeded_run(db)
    lines = 6000
    body = "".join(f"+{'x' * 40} {n}\n" for n in range(lines))
    patch = "".join(
        f"diff --git a/f{i}.txt b/f{i}.txt\n--- /dev/null\n+++ b/f{i}.txt\n"
        f"@@ -0,0 +1,{lines} @@\n{body}"
        for i in range(2)
    )
    assert len(patch) > MAX_SHOWN_CHARS
    ArtifactRepo(db).put(
        stored.run.id,
        StepId.APPLY_PATCH,
        kind=ArtifactKind.PATCH,
        name="patch.r2.diff",
        content=patch.encode(),
        media_type="text/x-diff",
    )
    db.commit()

    html = client.get(f"/ui/runs/{stored.run.id}").get_data(as_text=True)

    assert "patch_unparsed" not in html
    assert "2 files changed" in html
    assert f"+{2 * lines}" in html
    assert f"{lines - MAX_LINES_PER_FILE} more lines not shown here" in html


def test_the_page_shows_every_webhook_attempt_and_hides_deliveries_told_to_no_one(
    client: FlaskClient, db: Session
) -> None:
    stored = store_succeeded_run(db)
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    told = WebhookDelivery(
        id="11111111-1111-4111-8111-111111111111",
        run_id=stored.run.id,
        event="waiting_input",
        payload={},
        status="delivered",
        attempts=2,
        created_at=at,
        finished_at=at + timedelta(seconds=3),
    )
    skipped = WebhookDelivery(
        id="22222222-2222-4222-8222-222222222222",
        run_id=stored.run.id,
        event="succeeded",
        payload={},
        status="skipped",
        error="no webhook configured",
        created_at=at,
        finished_at=at,
    )
    db.add_all([told, skipped])
    db.flush()
    db.add_all(
        [
            WebhookAttempt(
                delivery_id=told.id,
                attempt=1,
                target="global https://hooks.example",
                started_at=at,
                duration_ms=12,
                status_code=None,
                error=f"ConnectError: {HOSTILE_MARKUP} \x1b[2J\u202e",
                outcome="retry",
                next_attempt_at=at + timedelta(seconds=2),
            ),
            WebhookAttempt(
                delivery_id=told.id,
                attempt=2,
                target="global https://hooks.example",
                started_at=at + timedelta(seconds=2),
                duration_ms=30,
                status_code=204,
                error=None,
                outcome="delivered",
                next_attempt_at=None,
            ),
        ]
    )
    db.commit()

    html = client.get(f"/ui/runs/{stored.run.id}").get_data(as_text=True)

    assert html.count('class="webhook-attempt"') == 2
    assert "webhook-pending" not in html  # the skipped delivery told no one: not listed
    assert "11111111-111" in html
    assert "22222222-222" not in html
    assert ">204<" in html
    assert HOSTILE_MARKUP not in html
    assert "&lt;script&gt;" in html
    assert "\\x1b[2J" in html
    assert "\u202e" not in html
