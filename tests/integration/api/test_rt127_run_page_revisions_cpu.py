"""Red-team helper-127: the run page's revision diffs cost seconds of CPU even where the
diff itself is cheap.

``RunPage.changes()`` diffs every consecutive pair of up to KODO_MAX_REVISIONS (5) plan
revisions on every page load, and the page draws every line of both plans of each pair
through ``visible()`` (a per-character Python loop for non-ASCII text) and HTML
escaping. Five plans at the contract's maxima (design 20,000, 200 files of 500-char
paths and 2,000-char whys, 50 risks and 50 tests of 2,000; ~2.2 MB each as UTF-8),
written in a CJK letter, each revision another letter: difflib is fast here (no line
repeats across revisions), but the page spent ~7 s of CPU drawing them (measured: 1.7 s
per pair), in a gevent worker that serves nothing else meanwhile. (The quadratic matcher
on repeated lines is test_rt127_plan_diff_cpu.py.)
"""

from __future__ import annotations

import time

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from shared.db.repos.steps import ArtifactRepo
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA, validate_answer
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind
from shared.hashing import canonical_bytes, sha256_hex
from tests.factories import RunFactory

pytestmark = pytest.mark.integration

REVISIONS = 5  # KODO_MAX_REVISIONS' default


def _plan(letter: str) -> dict[str, object]:
    plan = {
        "design": letter * 20000,
        "files": [
            {"path": f"d{i}/" + letter * 480, "change": "modify", "why": letter * 2000}
            for i in range(200)
        ],
        "risks": [letter * 2000] * 50,
        "tests": [letter * 2000] * 50,
    }
    validate_answer(PLAN_OUTPUT_SCHEMA, plan)  # within the contract
    return plan


def test_the_run_page_of_five_revisions_at_the_plan_maxima_is_cheap(
    client: FlaskClient, db: Session
) -> None:
    cards = [canonical_bytes(_plan(chr(0x4E00 + n))) for n in range(REVISIONS)]
    run = RunFactory(
        status="waiting_input", last_step="CompileST", plan_sha256=sha256_hex(cards[-1])
    )
    for n, content in enumerate(cards, start=1):
        ArtifactRepo(db).put(
            run.id,
            StepId.COMPILE,
            kind=ArtifactKind.PLAN_CARD,
            name="plan.json" if n == 1 else f"plan.r{n}.json",
            content=content,
            media_type="application/json",
        )
    db.commit()

    started = time.process_time()
    reply = client.get(f"/ui/runs/{run.id}")
    spent = time.process_time() - started

    assert reply.status_code == 200, reply.get_data(as_text=True)[:500]
    page = reply.get_data(as_text=True)
    assert 'id="revision-5"' in page
    # the newest diff drawn first; what the page's room leaves out is said, with where
    # every revision is whole
    assert page.index('id="revision-5"') < page.index('id="revision-2"')
    assert "more lines of this diff are not drawn" in page
    assert "This diff is not drawn" in page
    assert f"GET /runs/{run.id}/plans" in page
    assert spent < 1.0, (
        f"one run page load spent {spent:.1f} s of CPU ({len(reply.data) / 1e6:.1f} MB of"
        f" HTML) on {REVISIONS} plan revisions within the contract"
    )
