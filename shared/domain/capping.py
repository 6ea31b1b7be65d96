"""Fit a JSON document under a byte cap by cutting its largest parts, saying what was cut.

A diagnostic quotes what the agent wrote (errors, output, rejected answers): its size is
the attacker's choice unless it is capped. Cutting the largest strings (then the longest
lists) keeps the small, telling fields (step, attempt, status, rule) whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Json = Any
Path = tuple[str | int, ...]

MIN_CUT_CHARS = 256  # below this, a string is not worth cutting: shorten lists instead
MAX_ROUNDS = 200


@dataclass(frozen=True)
class Cut:
    """One part shortened: where, how big it was and how much of it remains."""

    path: str
    kind: str  # "string" or "list"
    original: int  # characters or items
    kept: int

    def to_json(self) -> dict[str, Json]:
        unit = "characters" if self.kind == "string" else "items"
        return {"field": self.path, "kept": self.kept, "of": self.original, "unit": unit}


def encoded_size(value: Json) -> int:
    return len(json.dumps(value, ensure_ascii=False, sort_keys=True).encode())


def _walk(value: Json, path: Path, found: list[tuple[int, Path, Json]]) -> None:
    if isinstance(value, str):
        found.append((encoded_size(value), path, value))
    elif isinstance(value, list):
        found.append((encoded_size(value), path, value))
        for i, item in enumerate(value):
            _walk(item, (*path, i), found)
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(item, (*path, str(key)), found)


def _largest(doc: Json) -> tuple[int, Path, Json] | None:
    """The largest string worth cutting, else the largest list of more than one item."""
    found: list[tuple[int, Path, Json]] = []
    _walk(doc, (), found)
    strings = [f for f in found if isinstance(f[2], str) and len(f[2]) > MIN_CUT_CHARS]
    lists = [f for f in found if isinstance(f[2], list) and len(f[2]) > 1]
    pool = strings or lists
    return max(pool, key=lambda f: f[0]) if pool else None


def _replace(doc: Json, path: Path, new: Json) -> None:
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new


def _label(path: Path) -> str:
    return "/".join(str(p) for p in path) or "<root>"


def cap_json(doc: dict[str, Json], max_bytes: int) -> tuple[dict[str, Json], list[Cut]]:
    """``doc`` if it fits in ``max_bytes`` (UTF-8 JSON), else a copy cut down to fit.

    Each round halves the excess's owner: the largest string is cut to what the cap
    leaves (plus a marker), or the largest list loses its tail. What was cut is
    returned; a document that cannot be cut enough is reduced to its cuts alone.
    """
    size = encoded_size(doc)
    if size <= max_bytes:
        return doc, []
    work: dict[str, Json] = json.loads(json.dumps(doc))  # a deep copy, JSON types only
    cuts: list[Cut] = []
    for _ in range(MAX_ROUNDS):
        # Leave room for the list of cuts the caller adds.
        excess = size - max_bytes + 200 * (len(cuts) + 1)
        if excess <= 0:
            break
        target = _largest(work)
        if target is None:
            break
        target_size, path, value = target
        if isinstance(value, str):
            keep = max(0, min(len(value) - MIN_CUT_CHARS, len(value) - excess))
            marker = f"... [cut: {len(value) - keep} of {len(value)} characters]"
            _replace(work, path, value[:keep] + marker)
            cuts.append(Cut(_label(path), "string", len(value), keep))
        else:
            keep = max(1, len(value) // 2) if target_size > excess else 1
            _replace(work, path, value[:keep])
            cuts.append(Cut(_label(path), "list", len(value), keep))
        size = encoded_size(work)
    if size + 200 * len(cuts) > max_bytes:
        return {}, cuts
    return work, cuts
