"""A hostile plan revision stalls the API process that renders the run page (red-team
helper-127).

After "Request changes" the run page (``/ui/runs/{id}``) shows what changed between
each pair of consecutive plan revisions: ``RunPage.changes()`` (services/api/reads.py)
-> ``shared.domain.plan_diff.plan_diff`` -> ``difflib.SequenceMatcher(autojunk=False)``
over the plans' lines. The agent writes both revisions: a design (maxLength 20000) of
thousands of short lines drawn from {"", "a"} in random order makes that match
quadratic-and-worse (pure function: 37 s of CPU for one pair at the cap, 10.6 s at
12,000 characters). The gevent worker computing it yields to nothing meanwhile, so
``/healthz`` and every other request it holds or would accept waits; at the cap one
page load outlives gunicorn's 30 s heartbeat and the worker is killed (the page never
renders, every stream on that worker drops).

This spec uses 12,000-character designs (well within the cap) and one API worker so
the stall is deterministic and the spec stays short.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.security import attacks
from tests.security.conftest import hostile_stack
from tests.security.harness import Hostile

pytestmark = pytest.mark.security

DESIGN_CHARS = 12_000  # the contract allows 20,000
HEALTHZ_S = 2.0


@pytest.fixture(scope="module")
def hostile(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hostile]:
    with hostile_stack(
        database_url, redis_url, tmp_path_factory, name="rt127", env={"KODO_API_WORKERS": "1"}
    ) as stack:
        yield stack


def _design(seed: int) -> str:
    rng = random.Random(seed)  # noqa: S311 - a fixed, reproducible text
    lines: list[str] = []
    used = 0
    while True:
        line = "a" if rng.random() < 0.3 else ""
        if used + len(line) + 1 > DESIGN_CHARS:
            return "\n".join(lines)
        lines.append(line)
        used += len(line) + 1


def _revision(seed: int) -> dict[str, Any]:
    return attacks.plan(("README.md", "modify"), design=_design(seed))


def test_the_run_page_of_a_revised_plan_does_not_stall_healthz(hostile: Hostile) -> None:
    name = "rt127-revised"
    hostile.fixture(name, plan=_revision(1))
    run_id = hostile.submit(hostile.repo(name), name)
    assert hostile.wait(run_id, {"waiting_input"})["status"] == "waiting_input"
    first = hostile.plan_of(run_id)
    assert first is not None
    hostile.fixture(name, plan=_revision(2))
    asked = hostile.http.post(
        f"/runs/{run_id}/request-changes",
        json={"planSha256": first["planSha256"], "comment": "Please revise."},
        headers=hostile.as_(hostile.approver),
    )
    assert asked.status_code == 200, asked.text
    assert hostile.wait(run_id, {"waiting_input"})["status"] == "waiting_input"
    second = hostile.plan_of(run_id)
    assert second is not None
    assert second["planSha256"] != first["planSha256"]

    page: dict[str, Any] = {}

    def load_page() -> None:
        started = time.monotonic()
        try:
            with hostile.signed_in(timeout_s=120) as browser:
                page["status"] = browser.get(f"/ui/runs/{run_id}").status_code
        except httpx.HTTPError as exc:  # a worker killed by its heartbeat
            page["status"] = repr(exc)
        page["seconds"] = time.monotonic() - started

    loader = threading.Thread(target=load_page, daemon=True)
    loader.start()
    time.sleep(1.5)  # signed in, the page request under way
    started = time.monotonic()
    try:
        healthz: object = httpx.get(f"{hostile.stack.api_url}/healthz", timeout=15).status_code
    except httpx.HTTPError as exc:
        healthz = repr(exc)
    waited = time.monotonic() - started
    loader.join(timeout=120)  # let the page finish so the stack serves again afterwards

    assert page.get("status") == 200, page
    assert waited < HEALTHZ_S, (
        f"/healthz answered {healthz} after {waited:.1f}s while one run page rendered"
        f" (page: {page.get('status')} after {page.get('seconds', 0):.1f}s)"
    )
    assert healthz == 200
