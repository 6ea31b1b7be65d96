"""The one table the benchmark prints, and the JSON it writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    metric: str
    ours: float | None
    baseline: float | None = None
    target: str = ""
    met: bool | None = None
    unit: str = "ms"

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "us" or abs(value) >= 100 or (unit == "count" and value == int(value)):
        return f"{value:.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def table(rows: list[Row], baseline: str | None = "bare celery") -> str:
    """Rows beside their baseline figure (the ratio is kodo's over the baseline's); a
    phase with nothing to compare with (``baseline=None``) has neither column."""
    header: tuple[str, ...] = ("metric", "unit", "kodo", "target", "met?")
    if baseline is not None:
        header = (*header[:3], baseline, "ratio", *header[3:])
    lines = []
    for r in rows:
        compared = (
            (_num(r.baseline, r.unit), "-" if r.ratio is None else f"{r.ratio:.1f}x")
            if baseline is not None
            else ()
        )
        lines.append(
            (
                r.metric,
                r.unit or "-",
                _num(r.ours, r.unit),
                *compared,
                r.target or "-",
                "-" if r.met is None else ("yes" if r.met else "NO"),
            )
        )
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]

    def fmt(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)])


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def none_row(metric: str, count: int | None) -> Row:
    """A count whose target is zero (failures, things left behind); None: not known."""
    return Row(metric, count, target="0", met=at_most(count, 0), unit="count")


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [
        {
            "metric": r.metric,
            "unit": r.unit,
            "kodo": r.ours,
            "baseline": r.baseline,
            "ratio": r.ratio,
            "target": r.target or None,
            "met": r.met,
        }
        for r in rows
    ]


def write_json(path: Path, rows: list[Row], details: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"rows": rows_json(rows), **details}
    path.write_text(json.dumps(body, indent=2, sort_keys=False) + "\n")
