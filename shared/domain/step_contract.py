"""The step contract version: one digest of everything that decides a paid prompt.

A provider call is named by its op_key, taken over the prompt and the answer schema
(``shared.hashing.op_key``). A worker whose prompt builders, schemas or op_key recipe
differ from those a run was started with would ask the same attempt in other words:
a new op_key, a second payment, and an answer to a question the run never asked. So
the version is a sha256 over the real output of every prompt builder for a fixed
sample (first attempt, and a retry quoting a rejection), the answer schemas, and the
op_key of a fixed call. It changes with any of them, and with nothing else.

A run records the version it was started under (``runs.contract_version``); a step
compares it with its own before it enters, and parks the run at ``waiting_upgrade``
when they differ (``shared.service.contract``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from shared.domain.contracts import BUILD_OUTPUT_SCHEMA, EDIT_REPORT_SCHEMA, PLAN_OUTPUT_SCHEMA
from shared.domain.prompts import (
    apply_prompt,
    compile_prompt,
    decide_prompt,
    plan_block,
    plan_brief,
)
from shared.domain.run_machine import StepId
from shared.hashing import canonical_json, op_key, sha256_hex

SAMPLE_GOAL = "Add multiply to calc.py"
SAMPLE_PLAN: dict[str, Any] = {
    "design": "a function beside add",
    "files": [{"path": "calc.py", "change": "modify", "why": "the new function"}],
    "risks": [],
    "tests": ["python -m pytest"],
}
SAMPLE_DIFFSTAT = " calc.py | 3 +++\n 1 file changed, 3 insertions(+)\n"
SAMPLE_ALLOWLIST = ("python", "make")
SAMPLE_REJECTION = "design: too short"
SAMPLE_REPAIR = (["python", "-m", "unittest"], "exited 1", "FAILED (failures=1)\nline two")
SAMPLE_EXCHANGES = (("Which Python?\nOr both?", "3.11"),)
VERSION_CHARS = 16


def contract_material() -> dict[str, Any]:
    """What the version is a digest of: prompts, schemas and the op_key recipe."""
    plan_text = plan_block(SAMPLE_PLAN)
    retry = [SAMPLE_REJECTION]
    return {
        "prompts": {
            StepId.COMPILE.value: [
                compile_prompt(SAMPLE_GOAL, 1, []),
                compile_prompt(SAMPLE_GOAL, 2, retry),
            ],
            StepId.APPLY_PATCH.value: [
                apply_prompt(SAMPLE_GOAL, plan_brief(SAMPLE_PLAN), 1, []),
                apply_prompt(SAMPLE_GOAL, plan_brief(SAMPLE_PLAN), 2, retry),
                apply_prompt(SAMPLE_GOAL, plan_brief(SAMPLE_PLAN), 1, [], repair=SAMPLE_REPAIR),
            ],
            StepId.DECIDE.value: [
                decide_prompt(SAMPLE_GOAL, plan_text, SAMPLE_DIFFSTAT, SAMPLE_ALLOWLIST, 1),
                decide_prompt(SAMPLE_GOAL, plan_text, SAMPLE_DIFFSTAT, SAMPLE_ALLOWLIST, 2, retry),
                decide_prompt(
                    SAMPLE_GOAL,
                    plan_text,
                    SAMPLE_DIFFSTAT,
                    SAMPLE_ALLOWLIST,
                    1,
                    exchanges=SAMPLE_EXCHANGES,
                    may_ask=False,
                ),
            ],
        },
        "schemas": {
            StepId.COMPILE.value: PLAN_OUTPUT_SCHEMA,
            StepId.APPLY_PATCH.value: EDIT_REPORT_SCHEMA,
            StepId.DECIDE.value: BUILD_OUTPUT_SCHEMA,
        },
        "op_key": op_key("run", StepId.COMPILE.value, 1, "prompt", {"type": "object"}),
    }


def contract_digest(material: dict[str, Any]) -> str:
    """The first VERSION_CHARS hex digits of the sha256 of the canonical material."""
    return sha256_hex(canonical_json(material))[:VERSION_CHARS]


@cache
def step_contract_version() -> str:
    """This code's step contract version (computed once per process)."""
    return contract_digest(contract_material())
