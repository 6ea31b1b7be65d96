"""The scripted model's answers to schemas it has no script for."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from shared.domain.contracts import BUILD_OUTPUT_SCHEMA, EDIT_REPORT_SCHEMA, PLAN_OUTPUT_SCHEMA
from standins.oc_compat.schema_instance import minimal_instance, violate
from tests.unit.opencode.captures import capture

CAPTURE_SCHEMA: dict[str, Any] = capture("prompt.structured.request.json")["format"]["schema"]

SCHEMAS: list[dict[str, Any]] = [
    CAPTURE_SCHEMA,
    PLAN_OUTPUT_SCHEMA,
    EDIT_REPORT_SCHEMA,
    BUILD_OUTPUT_SCHEMA,
    {
        "type": "object",
        "required": ["n", "x", "flag", "nothing", "tags", "pick", "fixed", "ref"],
        "properties": {
            "n": {"type": "integer", "minimum": 3, "maximum": 9},
            "x": {"type": "number", "exclusiveMinimum": 0.5},
            "flag": {"type": "boolean"},
            "nothing": {"type": "null"},
            "tags": {
                "type": "array",
                "minItems": 3,
                "uniqueItems": True,
                "items": {"type": "string", "minLength": 12, "maxLength": 14},
            },
            "pick": {"anyOf": [{"type": "string", "enum": ["b", "a"]}, {"type": "integer"}]},
            "fixed": {"const": 42},
            "ref": {"$ref": "#/$defs/inner"},
        },
        "$defs": {
            "inner": {"type": ["null", "object"], "required": ["k"], "properties": {"k": {}}}
        },
        "additionalProperties": False,
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_the_minimal_instance_satisfies_its_schema(schema: dict[str, Any]) -> None:
    Draft202012Validator(schema).validate(minimal_instance(schema))


def test_the_minimal_instance_is_the_same_every_time() -> None:
    assert minimal_instance(CAPTURE_SCHEMA) == minimal_instance(CAPTURE_SCHEMA)
    assert minimal_instance(CAPTURE_SCHEMA)["verdict"] == "ok"


def test_enums_pick_their_first_value_and_optional_properties_are_left_out() -> None:
    schema = {
        "type": "object",
        "required": ["mode"],
        "properties": {"mode": {"enum": ["fast", "slow"]}, "extra": {"type": "string"}},
    }
    assert minimal_instance(schema) == {"mode": "fast"}


@pytest.mark.parametrize(
    "schema",
    [*SCHEMAS[:4], {"type": "object", "properties": {"a": {"type": "string"}}}],
)
def test_a_violation_is_rejected_by_the_schema(schema: dict[str, Any]) -> None:
    broken = violate(schema, minimal_instance(schema))
    assert not Draft202012Validator(schema).is_valid(broken)
