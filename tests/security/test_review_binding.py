"""What a reviewer decides on is what they were shown (red-team helper-103; each spec
failed on the code it was written against).

Each test scripts oc-compat as a hostile model, drives a real stack (worker, beat,
collector, API under gunicorn) through the public API, and reads what a reviewer reads:
``kodo run ...`` piped, and the run page in headless Chromium (Debian's, as
tests/browser.py drives it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.browser import browser  # noqa: F401 - the module's Chromium
from tests.security import attacks
from tests.security.harness import Hostile

pytestmark = pytest.mark.security

# -- 1. `kodo run request-changes` sends back a revision its user never saw --------------

SEEN = attacks.plan(("README.md", "modify"), design="Fix a typo in the README.")
UNSEEN = {
    "design": "Fix a typo in the README; the old tests go.",
    "files": [
        {"path": "README.md", "change": "modify", "why": "Fix a typo."},
        {"path": "test_calc.py", "change": "delete", "why": "Obsolete."},
    ],
    "risks": ["None."],
    "tests": ["Read the README."],
}
COMMENT = "Fine apart from the wording of the README; keep everything else as it is."


def _revision_decisions(hostile: Hostile, run_id: str) -> list[tuple[str, Any]]:
    listed = hostile.http.get(f"/runs/{run_id}/plans", headers=hostile.as_(hostile.approver))
    assert listed.status_code == 200, listed.text
    return [(r["planSha256"], r.get("decision")) for r in listed.json()["revisions"]]


def test_kodo_run_request_changes_never_sends_back_a_revision_its_user_was_not_shown(
    hostile: Hostile,
) -> None:
    """A reviewer reads revision 1 (``kodo run watch``) and types ``kodo run
    request-changes ID -m '... keep everything else as it is'``. Meanwhile another
    reviewer sent revision 1 back and the agent wrote revision 2, which deletes the
    tests. Without --plan-sha256 the CLI fetches the digest of whatever plan is current
    *now* and posts it: the comment written about revision 1 is recorded on revision 2
    and quoted to the plan agent as the review of it ("keep everything else"), and a
    revision of the run's KODO_MAX_REVISIONS is spent on a plan nobody read. A decision
    binds to the plan its author was shown, as ``kodo run approve`` and ``kodo run
    answer`` already require: refuse without a digest off a terminal (or show the card
    and ask), and never supply it unseen."""
    name = "unseen-revision"
    hostile.fixture(name, plan=SEEN)
    run_id = hostile.submit(hostile.repo(name), name)
    assert hostile.wait(run_id, {"waiting_input"})["status"] == "waiting_input"
    first = hostile.plan_of(run_id)
    assert first is not None
    assert first["plan"] == SEEN
    watched = hostile.kodo("run", "watch", run_id, "--timeout", "30")
    assert "README.md" in watched.stdout  # what B read
    assert "test_calc.py" not in watched.stdout

    # Meanwhile another reviewer sends revision 1 back; the agent writes revision 2.
    hostile.fixture(name, plan=UNSEEN)
    sent = hostile.http.post(
        f"/runs/{run_id}/request-changes",
        json={"planSha256": first["planSha256"], "comment": "Say why in the README."},
        headers=hostile.as_(hostile.approver),
    )
    assert sent.status_code == 200, sent.text
    hostile.wait_for(
        lambda: (hostile.plan_of(run_id) or {}).get("plan") == UNSEEN, run_id, deadline_s=90
    )
    assert hostile.wait(run_id, {"waiting_input"})["status"] == "waiting_input"
    second = hostile.plan_of(run_id)
    assert second is not None
    assert second["plan"] == UNSEEN, hostile.describe(run_id)

    # B's command, typed under revision 1.
    typed = hostile.kodo("run", "request-changes", run_id, "-m", COMMENT)
    decisions = dict(_revision_decisions(hostile, run_id))
    hostile.http.post(f"/runs/{run_id}/cancel", headers=hostile.as_(hostile.approver))
    said = f"{typed.stdout}{typed.stderr}"
    assert typed.returncode != 0, f"the comment typed under revision 1 was sent:\n{said}"
    assert "--plan-sha256" in typed.stderr, typed.stderr
    assert decisions.get(second["planSha256"]) is None, (
        f"revision 2, which no one was shown, was sent back with {COMMENT!r}: "
        f"{decisions.get(second['planSha256'])}"
    )


def test_a_request_for_changes_names_the_plan_it_sends_back(hostile: Hostile) -> None:
    """The API takes ``POST /runs/{id}/request-changes`` without ``planSha256`` and
    records it on whatever plan is current when it lands (the root of the CLI's unseen
    digest above). As an approval must name its plan (ApprovalSchema) and an answer its
    question (AnswerSchema), a request for changes, whose comment is quoted to the plan
    agent as the review of that plan, must name the plan it was written about: 400
    naming planSha256, and nothing sent back."""
    name = "changes-unnamed"
    run_id = hostile.submit(hostile.repo(name), hostile.fixture(name, plan=SEEN))
    assert hostile.wait(run_id, {"waiting_input"})["status"] == "waiting_input"
    try:
        sent = hostile.http.post(
            f"/runs/{run_id}/request-changes",
            json={"comment": COMMENT},
            headers=hostile.as_(hostile.approver),
        )
        run = hostile.run(run_id)
    finally:
        hostile.http.post(f"/runs/{run_id}/cancel", headers=hostile.as_(hostile.approver))
    assert sent.status_code == 400, f"sent back unnamed: HTTP {sent.status_code} {sent.text}"
    assert "planSha256" in sent.text
    assert run["status"] == "waiting_input", "the plan stays for a decision that names it"


# -- 2. the run page: one long file name pushes every file's change off the screen -------

VIEWPORT = {"width": 1280, "height": 900}
LONG_NAME = "n" * 240 + ".md"  # one path component (under 255 bytes), no break opportunity
WIDE_PLAN = {
    "design": "Add notes; drop the obsolete test file.",
    "files": [
        {"path": "test_calc.py", "change": "delete", "why": "Obsolete."},
        {"path": LONG_NAME, "change": "add", "why": "Notes."},
    ],
    "risks": ["None."],
    "tests": ["Read the notes."],
}


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:  # noqa: F811 - tests.browser's fixture
    context = browser.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    yield opened
    context.close()


def test_the_run_page_shows_every_file_s_change_on_screen_whatever_the_paths(
    hostile: Hostile, page: Page
) -> None:
    """The run page's file table lays out ``path | change | why``, and a path cell grows
    to its longest unbreakable name: one planned file named with 240 letters (a legal
    name) makes the path column ~2,000 px wide, so the change column of every row is
    drawn past the right edge of a 1280 px window. The approver reads ``test_calc.py``
    in the list and must scroll sideways to learn it is a delete. What a plan does to
    each file must be on screen beside its path, at the width the page is built for
    (break long names: ``overflow-wrap: anywhere``, or a fixed table layout)."""
    name = "wide-path"
    run_id = hostile.submit(hostile.repo(name), hostile.fixture(name, plan=WIDE_PLAN))
    try:
        run = hostile.wait(run_id, {"waiting_input"}, deadline_s=90)
        assert run["status"] == "waiting_input", hostile.describe(run_id)
        api = hostile.stack.api_url
        page.goto(f"{api}/ui/login?next=/ui/runs/{run_id}")
        page.fill("#login-token", hostile.approver)
        page.click("#sign-in")
        page.wait_for_url(f"**/ui/runs/{run_id}")
        rows = page.locator("#plan table tbody tr")
        assert rows.count() == 2
        shown: list[tuple[str, float]] = []
        for n in range(2):
            change = rows.nth(n).locator("td").nth(1)
            box = change.bounding_box()
            assert box is not None
            shown.append((change.inner_text().strip(), box["x"] + box["width"]))
        assert [text for text, _ in shown] == ["delete", "add"]
        off = [(text, right) for text, right in shown if right > VIEWPORT["width"]]
        assert not off, f"change cells end past the {VIEWPORT['width']} px window: {off}"
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow} px wider than its window"
    finally:
        hostile.http.post(
            f"/runs/{run_id}/reject-plan", json={}, headers=hostile.as_(hostile.approver)
        )
