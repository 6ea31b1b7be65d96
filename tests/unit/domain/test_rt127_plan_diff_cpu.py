"""Red-team helper-127: the plan-revision diff shown on the run page is quadratic.

Two plan revisions whose designs (within the contract's maxLength 20000) are ~15,000
short lines drawn from {"", "a"} in random order make ``difflib.SequenceMatcher``
(autojunk=False) spend ~37 s of CPU on ONE pair (measured); the run page
(``RunPage.changes()`` in services/api/reads.py, rendered by run.html) diffs every
consecutive pair of up to KODO_MAX_REVISIONS=5 revisions on every load, inside a gevent
worker that yields to no other request meanwhile.
"""

from __future__ import annotations

import random
import signal
import time

from shared.domain.contracts import PLAN_OUTPUT_SCHEMA, validate_answer
from shared.domain.plan_diff import plan_diff

DESIGN_MAX = 20000
CPU_BUDGET_S = 2.0


def _design(seed: int, p_a: float = 0.3) -> str:
    rng = random.Random(seed)  # noqa: S311 - a fixed, reproducible text
    lines: list[str] = []
    used = 0
    while True:
        line = "a" if rng.random() < p_a else ""
        if used + len(line) + 1 > DESIGN_MAX:
            return "\n".join(lines)
        lines.append(line)
        used += len(line) + 1


def _plan(design: str) -> dict:
    return {
        "design": design,
        "files": [{"path": "calc.py", "change": "modify", "why": "x"}],
        "risks": [],
        "tests": [],
    }


class _OverBudget(Exception):
    pass


def _raise(*_: object) -> None:
    raise _OverBudget


def test_plan_diff_of_two_revisions_at_the_design_cap_is_cheap() -> None:
    old, new = _plan(_design(1)), _plan(_design(2))
    validate_answer(PLAN_OUTPUT_SCHEMA, old)  # both within the contract
    validate_answer(PLAN_OUTPUT_SCHEMA, new)
    previous = signal.signal(signal.SIGPROF, _raise)
    signal.setitimer(signal.ITIMER_PROF, CPU_BUDGET_S)
    start = time.process_time()
    over = False
    try:
        plan_diff(old, new)
    except _OverBudget:
        over = True
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    spent = time.process_time() - start
    assert not over, (
        f"plan_diff spent over {CPU_BUDGET_S}s of CPU on two plans within the caps"
        " (stopped there; unbounded it takes ~37 s per pair, and the run page diffs"
        " up to KODO_MAX_REVISIONS-1 = 4 pairs per load)"
    )
    assert spent < 1.0, f"plan_diff spent {spent:.2f}s of CPU"
