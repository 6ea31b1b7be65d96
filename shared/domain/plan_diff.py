"""A readable diff between two plan revisions (pure).

A reviewer who asked for changes wants to see what changed, not two JSON documents:
each plan is laid out as labelled lines (design, one line per file, risks, tests) and
the two layouts are compared line by line.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal

LineKind = Literal["same", "added", "removed"]


def plan_lines(plan: object) -> list[str]:
    """The plan as labelled lines; anything that is not a plan card reads as one line."""
    if not isinstance(plan, dict):
        return [f"plan: {plan!r}"]
    lines: list[str] = []
    design = plan.get("design")
    lines.extend(
        f"design: {line}" for line in str(design if design is not None else "").split("\n")
    )
    for entry in _list(plan.get("files")):
        if isinstance(entry, dict):
            source = f" (from {entry.get('from')})" if "from" in entry else ""
            lines.append(
                f"file: {entry.get('change')} {entry.get('path')}{source}: {entry.get('why')}"
            )
        else:
            lines.append(f"file: {entry!r}")
    lines.extend(f"risk: {risk}" for risk in _list(plan.get("risks")))
    lines.extend(f"test: {test}" for test in _list(plan.get("tests")))
    return lines


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class DiffLine:
    kind: LineKind
    text: str

    @property
    def sign(self) -> str:
        return {"same": " ", "added": "+", "removed": "-"}[self.kind]


def plan_diff(old: object, new: object) -> list[DiffLine]:
    """Every line of both plans in order, each marked same, added or removed."""
    before, after = plan_lines(old), plan_lines(new)
    out: list[DiffLine] = []
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out.extend(DiffLine("same", line) for line in before[i1:i2])
            continue
        out.extend(DiffLine("removed", line) for line in before[i1:i2])
        out.extend(DiffLine("added", line) for line in after[j1:j2])
    return out
