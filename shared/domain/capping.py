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
MAX_CUTS_LISTED = 50  # the cuts a capped document lists (room is kept for these only)
CUT_NOTE_BYTES = 200  # the room one listed cut takes
SMALL_FIELD_BYTES = 512  # a top-level field this small is kept even when the rest cannot be


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
    """Bytes as a diagnostic is stored: indented, so a long list of small items is
    measured with the lines it takes (:meth:`ArtifactOut.json`)."""
    return len(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True).encode())


def _walk(value: Json, path: Path, found: list[tuple[int, Path, Json]]) -> int:
    """Note every string and list under ``value`` with its size, and return the size of
    ``value``: estimated from its parts in one pass (escapes and indentation aside), as
    encoding each list anew encoded its items once per list above them. Only the total
    is measured exactly (:func:`encoded_size`)."""
    if isinstance(value, str):
        size = len(value.encode()) + 2
        found.append((size, path, value))
        return size
    if isinstance(value, list):
        size = 2 + sum(_walk(item, (*path, i), found) + 8 for i, item in enumerate(value))
        found.append((size, path, value))
        return size
    if isinstance(value, dict):
        return 2 + sum(
            len(str(key)) + 12 + _walk(item, (*path, str(key)), found)
            for key, item in value.items()
        )
    return len(str(value))


def _targets(doc: Json) -> tuple[list[tuple[int, Path, Json]], tuple[int, Path, Json] | None]:
    """The strings worth cutting, largest first, and the largest list of more than one
    item (cut once no string is worth it)."""
    found: list[tuple[int, Path, Json]] = []
    _walk(doc, (), found)
    strings = [f for f in found if isinstance(f[2], str) and len(f[2]) > MIN_CUT_CHARS]
    lists = [f for f in found if isinstance(f[2], list) and len(f[2]) > 1]
    strings.sort(key=lambda f: f[0], reverse=True)
    return strings, max(lists, key=lambda f: f[0]) if lists else None


def _replace(doc: Json, path: Path, new: Json) -> None:
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new


def _label(path: Path) -> str:
    return "/".join(str(p) for p in path) or "<root>"


def cap_json(doc: dict[str, Json], max_bytes: int) -> tuple[dict[str, Json], list[Cut]]:
    """``doc`` if it fits in ``max_bytes`` (UTF-8 JSON), else a copy cut down to fit.

    Each round cuts the largest strings, as many as the excess needs (each to what the
    cap leaves, plus a marker), or, once no string is worth cutting, the largest list
    loses the tail the excess needs (halving it took a round, a walk of the whole
    document, per halving). A round walks the document once: cutting one string a round, 2,000
    agent-written paths of 4 kB took two minutes. What was cut is returned, with room
    kept for the first :data:`MAX_CUTS_LISTED` of them to be listed. A document that
    cannot be cut enough is reduced to its small top-level fields (a rule's name, a
    step's), never to nothing.
    """
    size = encoded_size(doc)
    if size <= max_bytes:
        return doc, []
    work: dict[str, Json] = json.loads(json.dumps(doc))  # a deep copy, JSON types only
    cuts: list[Cut] = []

    def excess() -> int:  # with room for the list of cuts the caller adds
        return size - max_bytes + CUT_NOTE_BYTES * (min(len(cuts), MAX_CUTS_LISTED) + 1)

    for _ in range(MAX_ROUNDS):
        if excess() <= 0:
            break
        strings, largest_list = _targets(work)
        if strings:
            left = excess()
            for _size, path, value in strings:
                keep = max(0, min(len(value) - MIN_CUT_CHARS, len(value) - left))
                marker = f"... [cut: {len(value) - keep} of {len(value)} characters]"
                _replace(work, path, value[:keep] + marker)
                cuts.append(Cut(_label(path), "string", len(value), keep))
                left -= len(value) - keep - len(marker)
                if left <= 0:
                    break
        elif largest_list is not None:
            target_size, path, value = largest_list  # cut to what the cap leaves it
            keep = max(1, len(value) * (target_size - excess()) // target_size)
            _replace(work, path, value[:keep])
            cuts.append(Cut(_label(path), "list", len(value), keep))
        else:
            break
        size = encoded_size(work)
    if excess() <= 0:
        return work, cuts
    small: dict[str, Json] = {}
    room = max_bytes - CUT_NOTE_BYTES * (min(len(cuts), MAX_CUTS_LISTED) + 1)
    for key, value in doc.items():
        field = encoded_size({key: value})
        if field <= SMALL_FIELD_BYTES and field <= room:
            small[key] = value
            room -= field
    return small, cuts
