"""An off-schema plan of many small wrong items is refused with the worker's memory and
CPU bounded (red-team helper-128).

``validate_answer`` (shared/domain/contracts.py) sorted every jsonschema error before
quoting twenty: a plan whose ``files`` is 150 000 ``1``s (a 300 kB answer, under every
cap; ``shape_problem`` counts arrays and objects, not scalars) is 150 000
ValidationErrors, about 3.5 kB each: ~530 MB and ~6 s of CPU in the worker, once per
attempt. An 8 MiB answer (4 M items) asks ~14 GB.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security import attacks
from tests.security.harness import Hostile

pytestmark = pytest.mark.security

DEADLINE_S = 120.0
WORKER_CPU_S = 10.0
MAX_GROWTH_MB = 150.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100


def test_a_plan_of_many_wrong_items_is_refused_in_bounded_memory(hostile: Hostile) -> None:
    pid = hostile.fresh_worker().popen.pid
    before = hostile.worker_peak_rss_mb()
    hostile_plan = {**attacks.plan(("README.md", "modify")), "files": [1] * 150_000}
    fixture = hostile.fixture("rt128-items", plan=hostile_plan)

    cpu_before = _cpu_s(pid)
    run = hostile.wait(hostile.submit(hostile.repo("rt128-items"), fixture), set(), DEADLINE_S)
    cpu = _cpu_s(pid) - cpu_before
    grew = hostile.worker_peak_rss_mb() - before

    assert run["status"] == "failed"
    assert "no valid plan" in (run.get("error") or ""), run.get("error")
    said = f"the worker grew {grew:.0f} MB and spent {cpu:.0f} s of CPU on a 300 kB plan"
    assert grew < MAX_GROWTH_MB, said
    assert cpu < WORKER_CPU_S, said
