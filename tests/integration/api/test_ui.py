"""The approval pages render what is stored, escaped, with the digest the buttons send."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.api.state import state_of
from shared.clock import FixedClock
from shared.config import Settings
from shared.db.models import StepRun
from shared.db.repos.steps import ArtifactRepo
from shared.domain.run_machine import StepId
from shared.domain.step_contract import step_contract_version
from shared.domain.vocab import ArtifactKind
from shared.hashing import canonical_bytes, sha256_hex
from shared.service.tokens import Role
from tests.api_process.hostile import (
    BIDI_CONTROLS,
    HOSTILE_PLAN,
    RLO,
    TRUE_PATH,
    VISIBLE_ESCAPES,
    store_hostile_run,
)
from tests.factories import (
    IntentFactory,
    OpenCodeCallFactory,
    PlanApprovalFactory,
    RunFactory,
    settle_call,
)
from tests.integration.api.conftest import NOW, issue_token

pytestmark = pytest.mark.integration

HOSTILE = "<script>alert(1)</script>"
PLAN = {
    "design": f"Add multiply {HOSTILE}",
    "files": [{"path": "calc.py", "change": "modify", "why": "add multiply"}],
    "risks": ["none really"],
    "tests": ["test_multiply"],
}


def test_the_inbox_lists_only_runs_waiting_for_approval(client: FlaskClient, db: Session) -> None:
    RunFactory(waiting_input=True, intent=IntentFactory(goal=f"waiting {HOSTILE}"))
    RunFactory(succeeded=True, intent=IntentFactory(goal="already done"))
    db.commit()

    page = client.get("/ui/runs?status=waiting_input")

    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "waiting &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert HOSTILE not in html
    assert "already done" not in html


def test_a_run_page_shows_the_plan_card_digest_and_ledger_totals(
    client: FlaskClient, db: Session
) -> None:
    run = RunFactory(waiting_input=True, plan_sha256=sha256_hex(json.dumps(PLAN).encode()))
    ArtifactRepo(db).put(
        run.id,
        StepId.COMPILE,
        kind=ArtifactKind.PLAN_CARD,
        name="plan.json",
        content=json.dumps(PLAN).encode(),
        media_type="application/json",
    )
    first = OpenCodeCallFactory(run=run, status="claimed")
    second = OpenCodeCallFactory(run=run, status="claimed", attempt=2)
    settle_call(db, first, status="succeeded", usage={"total_tokens": 70, "cost_usd": 0.5})
    settle_call(db, second, status="succeeded", usage={"total_tokens": 30, "cost_usd": 0.25})
    db.commit()

    html = client.get(f"/ui/runs/{run.id}").get_data(as_text=True)

    assert f'data-plan-sha256="{run.plan_sha256}"' in html
    assert run.plan_sha256 in html
    assert "Add multiply &lt;script&gt;" in html
    assert HOSTILE not in html
    assert "calc.py" in html
    assert "add multiply" in html
    assert '<strong id="total-tokens">100</strong>' in html
    assert "$0.7500" in html
    assert "Sign in</a> to approve or reject here" in html, "a bearer header has no session"


def test_the_run_page_links_the_plan_json_whose_sha256_is_the_digest_shown(
    client: FlaskClient, db: Session
) -> None:
    signed = canonical_bytes(PLAN)
    run = RunFactory(waiting_input=True, plan_sha256=sha256_hex(signed))
    ArtifactRepo(db).put(
        run.id,
        StepId.COMPILE,
        kind=ArtifactKind.PLAN_CARD,
        name="plan.json",
        content=signed,
        media_type="application/json",
    )
    db.commit()

    html = client.get(f"/ui/runs/{run.id}").get_data(as_text=True)
    link = f"/runs/{run.id}/artifacts/plan.json?step=CompileST"
    assert f'<a id="plan-download" href="{link}" download="plan.json">' in html
    downloaded = client.get(link)

    assert downloaded.status_code == 200
    assert sha256_hex(downloaded.get_data()) == run.plan_sha256
    assert f'<span id="plan-sha256" class="mono digest">{run.plan_sha256}</span>' in html


def test_a_decided_run_has_no_buttons(client: FlaskClient, db: Session) -> None:
    run = RunFactory(succeeded=True)
    db.commit()

    html = client.get(f"/ui/runs/{run.id}").get_data(as_text=True)

    assert 'id="approve"' not in html
    assert "No plan yet" in html


def test_a_parked_run_page_says_it_waits_for_an_upgrade_and_for_which_contract(
    client: FlaskClient, db: Session
) -> None:
    run = RunFactory(waiting_upgrade=True)
    db.commit()

    html = client.get(f"/ui/runs/{run.id}").get_data(as_text=True)

    assert 'class="badge waiting_upgrade">waiting_upgrade<' in html
    assert 'id="waiting-upgrade"' in html
    assert "0123456789abcdef" in html
    assert step_contract_version() in html, "and the contract of the code serving the page"


def test_an_unknown_run_page_is_a_404(client: FlaskClient) -> None:
    assert client.get("/ui/runs/no-such-run").status_code == 404


def test_agent_text_on_the_run_page_is_shown_with_its_controls_escaped(
    client: FlaskClient, db: Session
) -> None:
    run = store_hostile_run(db, error=f"{TRUE_PATH}\r\x1b[2Kall good {RLO}x")

    html = client.get(f"/ui/runs/{run.id}").get_data(as_text=True)

    assert TRUE_PATH in html
    for escape in VISIBLE_ESCAPES:
        assert escape in html, escape
    assert "\x1b" not in html
    assert "\r" not in html
    assert "\b" not in html
    assert not any(char in html for char in BIDI_CONTROLS), "no raw bidi control in the page"
    assert f"{TRUE_PATH}\\r\\x1b[2Kall good \\u202ex" in html
    assert "Fix the typo in README.md." in html


def test_the_inbox_shows_a_hostile_goal_escaped(client: FlaskClient, db: Session) -> None:
    store_hostile_run(db)

    html = client.get("/ui/runs?status=waiting_input").get_data(as_text=True)

    assert "Fix the typo in README.md\\u202eyek_hss a dda\\u202c" in html
    assert RLO not in html


def test_the_header_names_the_model_and_says_plainly_when_it_is_the_stand_in(
    client: FlaskClient,
) -> None:
    html = client.get("/ui/runs?status=waiting_input").get_data(as_text=True)
    assert (
        '<span id="model-in-use" class="stand-in">model: kodo/kodo-scripted'
        " (the SCRIPTED STAND-IN, not a real model)</span>"
    ) in html


def test_the_header_names_a_real_model_without_the_stand_in_warning(
    settings: Settings, sessions: sessionmaker[Session], broker: Redis
) -> None:
    real = replace(settings, oc_provider_id="anthropic", oc_model_id="claude-x")
    app = create_app(real, clock=FixedClock(NOW))
    try:
        browser = app.test_client()
        token = issue_token(sessions, "ann", Role.ADMIN)
        browser.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        html = browser.get("/ui/runs").get_data(as_text=True)
    finally:
        state_of(app).close()
    assert '<span id="model-in-use">model: anthropic/claude-x</span>' in html
    assert "STAND-IN" not in html


def test_a_plan_sent_back_shows_the_comment_while_the_revision_compiles(
    client: FlaskClient, db: Session
) -> None:
    signed = canonical_bytes(PLAN)
    run = RunFactory(status="compiling", plan_sha256=sha256_hex(signed))
    ArtifactRepo(db).put(
        run.id,
        StepId.COMPILE,
        kind=ArtifactKind.PLAN_CARD,
        name="plan.json",
        content=signed,
        media_type="application/json",
    )
    PlanApprovalFactory(
        run=run,
        decision="changes_requested",
        approved_at=None,
        approver="iris",
        comment="Split it <b>please</b>",
    )
    db.commit()

    html = client.get(f"/ui/runs/{run.id}").get_data(as_text=True)

    assert 'class="badge changes_requested">changes_requested<' in html
    assert (
        '<pre class="design" id="decided-comment">Split it &lt;b&gt;please&lt;/b&gt;</pre>' in html
    )
    assert "writing revision 2" in html
    assert 'id="approve"' not in html, "a plan sent back is never approvable"


def test_a_hostile_revision_and_question_are_shown_with_their_controls_escaped(
    client: FlaskClient, db: Session
) -> None:
    """The plan agent writes the revisions the diff shows and the question an escalation
    asks: an attacker's escapes, bidi overrides and markup read as what they are."""
    first = canonical_bytes(PLAN)
    second = canonical_bytes(HOSTILE_PLAN)
    run = RunFactory(
        status="waiting_input",
        next_action="await:answer",
        last_step="DecideST",
        plan_sha256=sha256_hex(second),
    )
    for name, content in (("plan.json", first), ("plan.r2.json", second)):
        ArtifactRepo(db).put(
            run.id,
            StepId.COMPILE,
            kind=ArtifactKind.PLAN_CARD,
            name=name,
            content=content,
            media_type="application/json",
        )
    db.add(
        StepRun(
            run_id=run.id,
            step_id="DecideST",
            status="succeeded",
            started_at=NOW,
            fence=1,
            output={"next_action": "escalate", "question": f"<script>x</script>\r\x1b[2K{RLO}ok"},
        )
    )
    db.commit()

    html = client.get(f"/ui/runs/{run.id}").get_data(as_text=True)

    diff = html[html.index('id="revision-2"') : html.index("</pre>", html.index('id="revision-2"'))]
    # each value quoted (&#34; is the page's "), the override visible
    assert f"+ file: &#34;create\\u202e&#34; &#34;{TRUE_PATH}&#34;" in diff, "the true path"
    for escape in VISIBLE_ESCAPES:
        assert escape in diff, escape
    assert not BIDI_CONTROLS & set(html), "no live bidi control anywhere on the page"
    assert "\x1b" not in html
    assert "&lt;script&gt;x&lt;/script&gt;\\r\\x1b[2K\\u202eok" in html
    assert "<script>x</script>" not in html
