"""The step contract version: a digest of what decides the prompts kodo pays for."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shared.domain.contracts import BUILD_OUTPUT_SCHEMA, EDIT_REPORT_SCHEMA, PLAN_OUTPUT_SCHEMA
from shared.domain.prompts import (
    apply_prompt,
    compile_prompt,
    decide_prompt,
    plan_block,
    plan_brief,
)
from shared.domain.step_contract import (
    SAMPLE_ALLOWLIST,
    SAMPLE_DIFFSTAT,
    SAMPLE_GOAL,
    SAMPLE_PLAN,
    SAMPLE_REJECTION,
    contract_digest,
    contract_material,
    step_contract_version,
)
from shared.hashing import op_key


def test_the_version_is_the_digest_of_the_material_and_is_computed_once() -> None:
    version = step_contract_version()
    assert version == contract_digest(contract_material())
    assert set(version) <= set("0123456789abcdef")
    assert len(version) == 16
    assert step_contract_version() is version


def test_the_material_is_each_step_prompt_builders_real_output_and_its_schema() -> None:
    material = contract_material()
    assert material["schemas"] == {
        "CompileST": PLAN_OUTPUT_SCHEMA,
        "ApplyPatchST": EDIT_REPORT_SCHEMA,
        "DecideST": BUILD_OUTPUT_SCHEMA,
    }
    prompts = material["prompts"]
    assert compile_prompt(SAMPLE_GOAL, 2, [SAMPLE_REJECTION]) in prompts["CompileST"]
    assert (
        apply_prompt(SAMPLE_GOAL, plan_brief(SAMPLE_PLAN), 2, [SAMPLE_REJECTION])
        in prompts["ApplyPatchST"]
    )
    decide = decide_prompt(
        SAMPLE_GOAL, plan_block(SAMPLE_PLAN), SAMPLE_DIFFSTAT, SAMPLE_ALLOWLIST, 1
    )
    assert decide in prompts["DecideST"]
    assert material["op_key"] == op_key("run", "CompileST", 1, "prompt", {"type": "object"})


def _edit(material: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    edited = copy.deepcopy(material)
    node = edited
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return edited


@pytest.mark.parametrize(
    "path",
    [
        ("schemas", "CompileST", "required"),  # an answer schema
        ("prompts", "DecideST"),  # a prompt's wording
        ("op_key",),  # the op_key recipe
    ],
    ids=str,
)
def test_changing_a_schema_a_prompt_or_the_op_key_recipe_changes_the_version(
    path: tuple[str, ...],
) -> None:
    material = contract_material()
    assert contract_digest(_edit(material, path, ["changed"])) != contract_digest(material)


def test_the_version_does_not_depend_on_the_order_keys_were_written_in() -> None:
    material = contract_material()
    reordered = dict(reversed(list(material.items())))
    assert contract_digest(reordered) == contract_digest(material)
