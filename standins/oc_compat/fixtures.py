"""Scripted answers from files: ``[oc:fixture=NAME]`` answers from ``NAME.json``.

The security suite plays a hostile model: any plan, patch or build answer, off-schema
ones included, comes verbatim from a file the test wrote, so an attack is data. The
file holds one answer per step kind, ``{"plan": ..., "patch": ..., "build": ...}``; a
kind it lacks is answered as usual. Files are read on every prompt (a test may write
one while the server runs). A bad name, a missing folder or file, or a file that is not
such an object fails the prompt loudly: a typo must never pass for a harmless answer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

KINDS = ("plan", "patch", "build")
"""Step kinds a fixture can script, chosen by the requested schema (see kind_of)."""

_BARE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class FixtureError(ValueError):
    """A fixture directive that cannot be honoured (bad name, missing file, bad JSON)."""


def kind_of(schema: dict[str, Any]) -> str | None:
    """Which kodo contract ``schema`` asks for: plan, patch, build, or None (another one)."""
    props = schema.get("properties")
    names = props if isinstance(props, dict) else {}
    if "design" in names:
        return "plan"
    if set(names) == {"summary", "files"}:  # the EditReport: a fixture's "patch" is edited
        return "patch"
    if "argv" in names:
        return "build"
    return None


def fixture_path(folder: Path | None, name: str) -> Path:
    """``folder/NAME.json``; NAME must be a bare file name (no ``/``, no ``..``)."""
    if _BARE_NAME.fullmatch(name) is None or ".." in name:
        raise FixtureError(f"fixture name {name!r} is not a bare name ([A-Za-z0-9_.-], no '..')")
    if folder is None:
        raise FixtureError(
            f"[oc:fixture={name}] but no fixtures folder is set "
            "(--fixtures-dir or OC_COMPAT_FIXTURES_DIR)"
        )
    return folder / f"{name}.json"


def load_fixture(folder: Path | None, name: str) -> dict[str, Any]:
    """The answers of fixture ``name``: an object whose keys are among :data:`KINDS`."""
    path = fixture_path(folder, name)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FixtureError(f"cannot read fixture {path}: {exc.strerror or exc}") from exc
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise FixtureError(f"fixture {path} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise FixtureError(f"fixture {path} must hold an object keyed by {', '.join(KINDS)}")
    unknown = sorted(set(value) - set(KINDS))
    if unknown:
        raise FixtureError(f"fixture {path} has unknown kinds {unknown} (known: {list(KINDS)})")
    return value


def scripted(folder: Path | None, name: str, schema: dict[str, Any]) -> tuple[bool, Any]:
    """``(True, answer)`` if fixture ``name`` scripts the step ``schema`` asks for, else
    ``(False, None)``: the caller answers as usual. The answer is returned verbatim."""
    answers = load_fixture(folder, name)
    kind = kind_of(schema)
    if kind is None or kind not in answers:
        return False, None
    return True, answers[kind]
