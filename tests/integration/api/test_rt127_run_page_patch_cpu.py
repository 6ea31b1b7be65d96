"""Red-team helper-127: the run page spends seconds of CPU drawing patches that passed
every policy.

Each patch round kodo stores passed ``max_patch_bytes`` (4 MiB), ``max_lines`` (2000)
and ``max_files``; a run has up to 1 + KODO_MAX_REPAIRS (2) of them, and the page
draws every round (only the newest ``<details>`` is open, all are rendered). The diff
view caps lines (3,000 per file, 10,000 per patch) and the lexing (400k characters), but
not the characters of the lines it shows plain: each goes through ``visible()``, a
per-character Python loop once a line holds a single non-ASCII character (~1.3 us per
character), then HTML escaping. Three 4 MiB patches of 2,000 lines of ASCII ending in
one ``é`` each cost ~9 s of CPU per page load in the gevent worker (nothing else it
serves runs meanwhile), and send ~12 MB of HTML. A combining mark at each line's end (a
stack the filter must count) still cost 1.1 s per load after that fix, until only the
characters ``visible()`` must judge went through Python (0.2 s).
"""

from __future__ import annotations

import time

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from shared.db.repos.steps import ArtifactRepo
from shared.domain.policy import MAX_PATCH_BYTES
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind
from tests.api_process.review_runs import store_succeeded_run

pytestmark = pytest.mark.integration

LINES = 2000  # the default max_lines


def _patch(round_no: int, ending: str) -> bytes:
    head = (
        f"diff --git a/notes{round_no}.txt b/notes{round_no}.txt\nnew file mode 100644\n"
        f"--- /dev/null\n+++ b/notes{round_no}.txt\n@@ -0,0 +1,{LINES} @@\n"
    ).encode()
    room = (MAX_PATCH_BYTES - len(head) - 64) // LINES
    tail = (ending + "\n").encode()
    line = b"+" + b"x" * (room - 1 - len(tail)) + tail
    body = head + line * LINES
    assert len(body) <= MAX_PATCH_BYTES
    return body


@pytest.mark.parametrize(
    "ending",
    ["é", "e\u0301"],  # a precomposed letter; a letter and a combining mark (a stack)
    ids=["precomposed", "combining-mark"],
)
def test_the_run_page_of_three_patch_rounds_within_the_policy_is_cheap(
    client: FlaskClient, db: Session, ending: str
) -> None:
    stored = store_succeeded_run(db)
    repo = ArtifactRepo(db)
    for round_no in (2, 3):
        repo.put(
            stored.run.id,
            StepId.APPLY_PATCH,
            kind=ArtifactKind.PATCH,
            name=f"patch.r{round_no}.diff",
            content=_patch(round_no, ending),
            media_type="text/x-diff",
        )
    db.commit()
    client.get(f"/ui/runs/{stored.run.id}")  # warm: templates compiled, lexing child up

    started = time.process_time()
    reply = client.get(f"/ui/runs/{stored.run.id}")
    spent = time.process_time() - started

    assert reply.status_code == 200
    assert spent < 1.0, (
        f"one run page load spent {spent:.1f} s of CPU and {len(reply.data) / 1e6:.1f} MB"
        " of HTML on two patch rounds within max_patch_bytes and max_lines"
    )
