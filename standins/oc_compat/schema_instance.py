"""Minimal deterministic instances of a JSON Schema, and deliberate violations of one.

The scripted model answers schemas it has no special script for with the smallest
obviously-fake instance that validates: required properties only, first enum
value, bounds respected. Unsupported keywords (``pattern``, ``format``) are ignored.
"""

from __future__ import annotations

from typing import Any

_MAX_DEPTH = 32


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    node: object = root
    for key in ref[2:].split("/"):
        node = (
            node.get(key.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
        )
    return node if isinstance(node, dict) else {}


def _type_of(schema: dict[str, Any]) -> str | None:
    declared = schema.get("type")
    if isinstance(declared, str):
        return declared
    if isinstance(declared, list):
        named = [t for t in declared if isinstance(t, str)]
        non_null = [t for t in named if t != "null"]
        chosen = non_null or named
        return chosen[0] if chosen else None
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return None


def _string(schema: dict[str, Any], label: str) -> str:
    text = f"scripted {label}".strip()
    low = schema.get("minLength", 0)
    high = schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text = text + "x" * (low - len(text))
    if isinstance(high, int) and len(text) > high:
        text = text[len(text) - high :]  # keep the tail: it tells array items apart
    return text


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    value: float = 0
    if isinstance(schema.get("minimum"), int | float):
        value = max(value, schema["minimum"])
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        value = max(value, schema["exclusiveMinimum"] + 1)
    if isinstance(schema.get("maximum"), int | float):
        value = min(value, schema["maximum"])
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        value = min(value, schema["exclusiveMaximum"] - 1)
    return int(value) if integer else float(value)


def _instance(schema: object, root: dict[str, Any], label: str, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None if depth > _MAX_DEPTH else "scripted"
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            merged = {k: v for k, v in schema.items() if k != combinator}
            first = options[0] if isinstance(options[0], dict) else {}
            return _instance({**merged, **_resolve(first, root)}, root, label, depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
        return {n: _instance(props.get(n, {}), root, n, depth + 1) for n in names}
    if kind == "array":
        low = schema.get("minItems", 0)
        high = schema.get("maxItems")
        count = max(low if isinstance(low, int) else 0, 1)
        if isinstance(high, int):
            count = min(count, high)
        item = schema.get("items", {})
        return [_instance(item, root, f"{label} {i + 1}", depth + 1) for i in range(count)]
    if kind == "string":
        return _string(schema, label)
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _string(schema, label)


def minimal_instance(schema: dict[str, Any]) -> Any:
    """The smallest deterministic value satisfying the common keywords of ``schema``."""
    return _instance(schema, schema, "", 0)


def violate(schema: dict[str, Any], answer: Any) -> Any:
    """A near miss of ``answer`` that ``schema`` rejects, as a sloppy model would send.

    Drops required properties (keeping the first); with nothing to drop, gives the
    first property a value of the wrong type (``null``).
    """
    if not isinstance(answer, dict):
        return {"unexpected": answer}
    required = schema.get("required")
    names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
    if len(names) >= 2:
        return {names[0]: answer.get(names[0])}
    if len(names) == 1:
        return {}
    props = schema.get("properties")
    if isinstance(props, dict) and props:
        first = next(iter(props))
        return {**answer, first: None}
    return "not an object"
