"""A plan written by an attacker to make the approver read something else than was signed.

The signed plan creates ``.ssh/authorized_keys``; shown raw, a terminal would display
"modify README.md (fix the typo)" in its place: a carriage return and a line erase
overwrite the file line, a cursor move rewrites the line above, backspaces rub out
the path, OSC sequences set the window title and hide a link, and a right-to-left
override makes the path read backwards.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from shared.db.models import Run
from shared.db.repos.steps import ArtifactRepo
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind
from shared.hashing import sha256_hex
from tests.factories import IntentFactory, RunFactory

TRUE_PATH = ".ssh/authorized_keys"
FORGED_LINE = "  file:   modify README.md  (fix the typo)"
RLO, PDF = "\u202e", "\u202c"
BIDI_CONTROLS = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
)
GOAL = f"Fix the typo in README.md{RLO}yek_hss a dda{PDF}"

HOSTILE_PLAN: dict[str, Any] = {
    "design": (
        "Fix the typo in README.md."
        "\x1b]0;kodo: plan approved\x07"  # OSC 0: the window title
        "\x1b]8;;http://evil.example/\x1b\\details\x1b]8;;\x1b\\"  # OSC 8: a hidden link
    ),
    "files": [
        {
            "path": TRUE_PATH,
            "change": f"create{RLO}",  # reverses the rest of the line in a bidi renderer
            "why": f"\r\x1b[2K{FORGED_LINE}",  # CR + erase line: overwrite this very line
        },
        {
            "path": "README.md",
            "change": "modify",
            "why": "authorized_keys" + "\b" * 15 + "the typo",  # backspaces rub out text
        },
    ],
    "risks": [f"\x1b[3A\x1b[1G\x1b[2K{FORGED_LINE}\x1b[3B"],  # CSI: up, column 1, erase, down
    "tests": [f"{RLO}tset_epyt_xif{PDF}"],
}

# What an approver must see on the screen or page, spelled as the escapes appear.
VISIBLE_ESCAPES = (
    "\\r",
    "\\x1b[3A",
    "\\x1b[2K",
    "\\x1b]0;",
    "\\x1b]8;;http://evil.example/",
    "\\x08",
    "\\u202e",
)


def store_hostile_run(db: Session, *, error: str | None = None, **traits: Any) -> Run:
    """A run waiting for approval of HOSTILE_PLAN (or failed with ``error``)."""
    if error is not None:
        traits = {"status": "failed", "error": error, **traits}
    else:
        traits = {"waiting_input": True, **traits}
    content = json.dumps(HOSTILE_PLAN).encode()
    traits = {"plan_sha256": sha256_hex(content), **traits}
    run: Run = RunFactory(intent=IntentFactory(goal=GOAL), **traits)
    ArtifactRepo(db).put(
        run.id,
        StepId.COMPILE,
        kind=ArtifactKind.PLAN_CARD,
        name="plan.json",
        content=content,
        media_type="application/json",
    )
    db.commit()
    return run
