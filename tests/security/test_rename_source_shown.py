"""A rename takes a file away: the approver sees which one before approving.

The plan schema binds a rename to its old path (``files[].from``) and ApplyPatchST holds
the patch to it. A hostile plan "renames" ``test_calc.py`` (the test suite) to an
innocuous ``docs/notes.md``: every place a human approves from (the run page, ``kodo run
watch`` and ``kodo run show``) names the file the rename removes.
"""

from __future__ import annotations

import pytest

from tests.security import attacks
from tests.security.harness import Hostile

pytestmark = pytest.mark.security

SOURCE = "test_calc.py"
TARGET = "docs/notes.md"
PLAN = {
    "design": "Move the project notes under docs/.",
    "files": [{"path": TARGET, "change": "rename", "from": SOURCE, "why": "Keep notes in docs."}],
    "risks": ["None."],
    "tests": ["None."],
}
DIFF = (
    f"diff --git a/{SOURCE} b/{TARGET}\nsimilarity index 100%\n"
    f"rename from {SOURCE}\nrename to {TARGET}\n"
)


def _plan_card_html(page: str) -> str:
    start = page.index('id="plan"')
    return page[start : page.index("</table>", start)]


def test_every_plan_card_names_the_file_a_rename_removes(hostile: Hostile) -> None:
    repo = hostile.repo("rename-shown")
    build = attacks.build("python3", "-c", "pass")
    fixture = hostile.fixture("rename-shown", plan=PLAN, patch=attacks.patch(DIFF), build=build)
    run_id = hostile.submit(repo, fixture)
    assert hostile.wait(run_id, {"waiting_input"})["status"] == "waiting_input"

    with hostile.signed_in() as browser:
        card = _plan_card_html(browser.get(f"/ui/runs/{run_id}").text)
    watched = hostile.kodo("run", "watch", run_id, "--timeout", "20")
    shown = hostile.kodo("run", "show", run_id)

    assert f"from {SOURCE} (removed)" in card, "the run page's plan card"
    assert f"  from:   {SOURCE} (removed by the rename)" in watched.stdout.splitlines(), (
        watched.stdout + watched.stderr
    )
    assert shown.returncode == 0, shown.stderr
    assert f"  from:     {SOURCE} (removed by the rename)" in shown.stdout.splitlines(), (
        shown.stdout
    )

    reply = hostile.approve(run_id)
    assert reply.status_code == 200, reply.text
    final = hostile.wait(run_id, set(), 120)
    files = hostile.branch_files(repo, run_id)
    assert final["status"] == "succeeded", final.get("error")
    assert SOURCE not in files, "the approved rename is what ran"
    assert TARGET in files
