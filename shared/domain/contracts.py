"""The agent answer contracts (JSON Schemas) and their fail-closed validation.

OpenCode does not validate structured output against the schema it was given, so
every answer passes through :func:`validate_answer` before anything trusts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from jsonschema import Draft202012Validator

from shared.domain.storable import UNSTORABLE, storable_text

PLAN_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "design": {"type": "string", "minLength": 1, "maxLength": 20000},
        "files": {
            "type": "array",
            "minItems": 1,
            "maxItems": 200,
            "items": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "minLength": 1, "maxLength": 500},
                    "change": {"type": "string", "enum": ["add", "modify", "delete", "rename"]},
                    "from": {"type": "string", "minLength": 1, "maxLength": 500},
                    "why": {"type": "string", "maxLength": 2000},
                },
                "required": ["path", "change", "why"],
                "additionalProperties": False,
                # a rename names its old path in `from`; no other change may carry one
                "if": {"properties": {"change": {"const": "rename"}}, "required": ["change"]},
                "then": {"required": ["from"]},
                "else": {"not": {"required": ["from"]}},
            },
        },
        "risks": {
            "type": "array",
            "maxItems": 50,
            "items": {"type": "string", "maxLength": 2000},
        },
        "tests": {
            "type": "array",
            "maxItems": 50,
            "items": {"type": "string", "maxLength": 2000},
        },
    },
    "required": ["design", "files", "risks", "tests"],
    "additionalProperties": False,
}
"""PlanOutput: what the plan agent must answer (design, files, risks, tests).

Each file entry is the binding promise ApplyPatchST holds the patch to: its path and
kind of change (add, modify, delete, or rename from ``from``)."""

EDIT_REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "minLength": 1, "maxLength": 2000},
        "files": {
            "type": "array",
            "maxItems": 200,
            "items": {"type": "string", "minLength": 1, "maxLength": 500},
        },
    },
    "required": ["summary", "files"],
    "additionalProperties": False,
}
"""EditReport: what the build agent says it did after editing the worktree with its tools.

The edits themselves are read from git, never from this answer; ``files`` (the paths the
agent says it changed, relative to the repository root) is checked against git's view."""

BUILD_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "next_action": {"type": "string", "enum": ["verify", "done", "escalate"]},
        "argv": {
            "type": "array",
            "maxItems": 64,
            "items": {"type": "string", "minLength": 1, "maxLength": 1000},
        },
        "reason": {"type": "string", "maxLength": 2000},
        "question": {"type": "string", "maxLength": 2000},
    },
    "required": ["next_action", "argv", "reason"],
    "additionalProperties": False,
}
"""BuildOutput: DecideST's route. ``verify`` with the command that verifies the change
(argv, no shell); ``done``: nothing to verify (only where the policy allows it);
``escalate``: a ``question`` for the approver, who answers before the run goes on."""


UNSTORABLE_SAID = "holds a NUL byte or a lone surrogate"
MAX_ERRORS = 20
ERRORS_READ = 1000
"""Violations read (and sorted by where they are) before the first MAX_ERRORS are shown;
past it the rest are said to be many, never all read."""
MAX_PATH_CHARS = 200
MAX_MESSAGE_CHARS = 300
"""A violation message quotes the offending value: an oversize field would repeat itself
into the ledger and the next prompt. Messages and their number are cut to these."""


def _cut(message: str, rule: object, value: object) -> str:
    """The message, or its start after the rule it broke (``maxLength 20000``) if too long."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    cut = message[:MAX_MESSAGE_CHARS]
    return f"breaks {rule} {str(value)[:80]}: {cut}... ({len(message)} characters in all)"


class ContractViolation(ValueError):
    """An agent answer does not satisfy its schema."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _unstorable(value: object, at: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    """Where ``value`` holds a string (or a key) with U+0000 or a lone surrogate in it."""
    if isinstance(value, str):
        if UNSTORABLE.search(value):
            yield at
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and UNSTORABLE.search(key):
                yield (*at, "<key>")
            yield from _unstorable(item, (*at, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _unstorable(item, (*at, i))


def _shown_at(at: Iterable[object]) -> str:
    shown = "/".join(storable_text(str(p)) for p in at)
    return shown[:MAX_PATH_CHARS] or "<root>"


def validate_answer(schema: dict[str, Any], answer: object) -> dict[str, Any]:
    """Return ``answer`` as a dict if it satisfies ``schema``; raise otherwise.

    A string holding U+0000 or a lone surrogate breaks every contract: no path, argument
    or text of a plan has one, and Postgres cannot store it (the stored answer would
    differ from the one judged and hashed: :mod:`shared.domain.storable`)."""
    validator = Draft202012Validator(schema)
    # Read lazily and only so far: an answer of a million wrong items is a million
    # errors (about 3.5 kB each); sorting them all to show twenty held 710 MB for a
    # 400 kB answer (red-team helper-128).
    read = list(islice(validator.iter_errors(answer), ERRORS_READ + 1))
    errors = sorted(read[:ERRORS_READ], key=lambda e: list(e.absolute_path))
    unstorable = [
        f"{_shown_at(at)}: {UNSTORABLE_SAID}" for at in islice(_unstorable(answer), ERRORS_READ + 1)
    ]
    if errors or unstorable:
        shown = unstorable[:MAX_ERRORS] + [
            f"{_shown_at(e.absolute_path)}: {_cut(e.message, e.validator, e.validator_value)}"
            for e in errors[: max(0, MAX_ERRORS - len(unstorable))]
        ]
        found = len(read) + len(unstorable)
        if found > len(shown):
            counted = len(read) <= ERRORS_READ and len(unstorable) <= ERRORS_READ
            more = f"{found - len(shown)}" if counted else "many"
            shown.append(f"... and {more} more violations")
        raise ContractViolation(shown)
    if not isinstance(answer, dict):  # unreachable for object schemas; narrows the type
        raise ContractViolation(["<root>: answer is not an object"])
    return answer
