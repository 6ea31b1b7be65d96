"""A hostile agent's text costs a worker time linear in it, well under its caps (red-team
helper-126).

Two answers well under ``KODO_MAX_ANSWER_BYTES`` (8 MiB) held a worker for minutes:

* an off-schema plan whose ``design`` is 100 kB of ``a.a.a.`` and one URL: the answer is
  recorded with its ContractViolation, redacted first (``ExactlyOnce._fail`` ->
  ``_response_record`` -> ``shared.redact``), and the URL pattern was quadratic in such
  text. Python's ``re`` holds the GIL for a whole scan: every thread of the worker
  stopped with it, other runs' steps and the lease renewer too, once per schema retry;
* a build turn whose tool part names an 800 kB path: confinement resolved it, and the
  kernel leaves a path past PATH_MAX to Python's ``realpath`` walk, quadratic in its
  length (about 50 s of CPU per attempt).

What holds now: each run ends within seconds, refused under the rule that names it, the
worker spends a few seconds of CPU at most, and a run submitted beside the first one
plans as usual.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.sample_repo import FILES
from tests.security import attacks
from tests.security.harness import Hostile

pytestmark = pytest.mark.security

DEADLINE_S = 45.0
WORKER_CPU_S = 10.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def test_an_off_schema_design_under_the_cap_does_not_stall_the_worker(hostile: Hostile) -> None:
    pid = hostile.fresh_worker().popen.pid
    design = "a." * 50_000 + " http://example.invalid/"
    hostile_plan = {**attacks.plan(("README.md", "modify")), "design": design}
    fixture = hostile.fixture("rt126-redact", plan=hostile_plan)
    benign = hostile.fixture("rt126-benign", plan=attacks.plan(("README.md", "modify")))

    cpu_before = _cpu_s(pid)
    attacked = hostile.submit(hostile.repo("rt126-redact"), fixture)
    other = hostile.submit(hostile.repo("rt126-benign"), benign)
    other_status = hostile.wait(other, {"waiting_input"}, DEADLINE_S)["status"]
    attacked_run = hostile.wait(attacked, set(), DEADLINE_S)
    cpu = _cpu_s(pid) - cpu_before

    assert other_status == "waiting_input"
    assert attacked_run["status"] == "failed"
    assert "no valid plan" in (attacked_run.get("error") or ""), attacked_run.get("error")
    assert cpu < WORKER_CPU_S, f"the worker spent {cpu:.0f} s of CPU on a 100 kB plan"


def test_a_tool_part_naming_an_800_kb_path_is_refused_in_bounded_time(hostile: Hostile) -> None:
    pid = hostile.fresh_worker().popen.pid
    long = "a/" * 400_000 + "x.txt"  # one name, a tenth of the answer cap
    readme = attacks.append_lines("README.md", FILES["README.md"], ["", "More."])
    fixture = hostile.fixture(
        "rt126-long-path",
        plan=attacks.plan(("README.md", "modify")),
        # (oc-compat reports the edit of a header-only chunk as a tool part naming it)
        patch=attacks.patch(readme, f"diff --git a/{long} b/{long}\n"),
        build=attacks.build("python3", "-c", "print('ok')"),
    )
    run_id = hostile.submit(hostile.repo("rt126-long-path"), fixture)
    hostile.wait(run_id, {"waiting_input"}, DEADLINE_S)
    assert hostile.approve(run_id).status_code == 200

    cpu_before = _cpu_s(pid)
    outcome = hostile.wait(run_id, set(), DEADLINE_S)
    cpu = _cpu_s(pid) - cpu_before

    assert outcome["status"] == "failed"
    assert "ToolPathUnreadable" in (outcome.get("error") or ""), outcome.get("error")
    assert cpu < WORKER_CPU_S, f"the worker spent {cpu:.0f} s of CPU on one tool path"
