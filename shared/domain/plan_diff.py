"""A readable diff between two plan revisions (pure).

A reviewer who asked for changes wants to see what changed, not two JSON documents:
each plan is laid out as labelled lines (design, one line per file, risks, tests) and
the two layouts are compared line by line.

Every agent-written value is quoted as a JSON string (the design line by line), so a
line stands for exactly one entry: laid out bare, ``rename docs/b.md (from docs/a.md): keep``
was both a rename of docs/a.md whose why said ``keep (from test_calc.py)`` and a
rename of test_calc.py to a path holding ``(from docs/a.md): keep``, and the revision
that swapped one for the other was drawn all unchanged (red-team helper-97). A risk
or test holding a line break stays one line (``\n``), never a second, forged one.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any, Literal

from shared.domain.change_check import PLAN_KINDS
from shared.domain.display import lookalike_name, shown_name_text

LineKind = Literal["same", "added", "removed"]


def plan_lines(plan: object) -> list[str]:
    """The plan as labelled lines; anything that is not a plan card reads as one line."""
    if not isinstance(plan, dict):
        return [f"plan: {plan!r}"]
    lines: list[str] = []
    design = plan.get("design")
    # each line quoted too: bare, an escape character and the text "\x1b" (a tab and
    # "\t", a line and the same with trailing blanks) were drawn alike (helper-103)
    lines.extend(
        f"design: {_quoted(line)}" for line in str(design if design is not None else "").split("\n")
    )
    for entry in _list(plan.get("files")):
        if isinstance(entry, dict):
            change = entry.get("change")
            kind = change if change in PLAN_KINDS else _quoted(change)
            source = f" from {_path(entry.get('from'))}" if "from" in entry else ""
            lines.append(
                f"file: {kind} {_path(entry.get('path'))}{source}: {_quoted(entry.get('why'))}"
            )
        else:
            lines.append(f"file: {_quoted(entry)}")
    lines.extend(f"risk: {_quoted(risk)}" for risk in _list(plan.get("risks")))
    lines.extend(f"test: {_quoted(test)}" for test in _list(plan.get("tests")))
    return lines


def _quoted(value: object) -> str:
    """A string in double quotes, its own quotes and backslashes escaped (anything else
    as JSON): one way to write each value, and none that reads as the text around it.
    Every other character is left to the page, which escapes controls as it does
    everywhere (a line break shows as ``\\n``, never breaks the line)."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _path(value: object) -> str:
    """A path quoted as :func:`_quoted` does, but one that may be drawn like another (a
    no-break space, a decomposed letter) as JSON in ASCII: two revisions naming lookalike
    files were drawn alike (red-team helper-106). A path holding the text ``\u00a0``
    is quoted with its backslash doubled, so the two spellings never meet."""
    if isinstance(value, str) and lookalike_name(value):
        return shown_name_text(value)
    return _quoted(value)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class DiffLine:
    kind: LineKind
    text: str

    @property
    def sign(self) -> str:
        return {"same": " ", "added": "+", "removed": "-"}[self.kind]


MATCHED_PAIRS_MAX = 250_000
"""The most (old line, new line) pairs the matcher may weigh: ``difflib`` is quadratic in
the lines that differ, and two designs of 15,000 short lines each (within the plan's
20,000 characters) cost 37 s of CPU per pair, on every load of the run page (red-team
helper-127). Past it, the changed middle is drawn as removed, then added: every line
that changed is still shown, the diff is only less tight."""


def plan_diff(old: object, new: object) -> list[DiffLine]:
    """Every line of both plans in order, each marked same, added or removed: the lines
    both share at the start and at the end as they are, the middle matched line by line
    when it is small enough (:data:`MATCHED_PAIRS_MAX`)."""
    before, after = plan_lines(old), plan_lines(new)
    head = 0
    while head < min(len(before), len(after)) and before[head] == after[head]:
        head += 1
    tail = 0
    while (
        tail < min(len(before), len(after)) - head
        and before[len(before) - 1 - tail] == after[len(after) - 1 - tail]
    ):
        tail += 1
    middle_a = before[head : len(before) - tail]
    middle_b = after[head : len(after) - tail]
    out = [DiffLine("same", line) for line in before[:head]]
    if len(middle_a) * len(middle_b) > MATCHED_PAIRS_MAX:
        out.extend(DiffLine("removed", line) for line in middle_a)
        out.extend(DiffLine("added", line) for line in middle_b)
    else:
        matcher = difflib.SequenceMatcher(a=middle_a, b=middle_b, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                out.extend(DiffLine("same", line) for line in middle_a[i1:i2])
                continue
            out.extend(DiffLine("removed", line) for line in middle_a[i1:i2])
            out.extend(DiffLine("added", line) for line in middle_b[j1:j2])
    out.extend(DiffLine("same", line) for line in before[len(before) - tail :])
    return out
