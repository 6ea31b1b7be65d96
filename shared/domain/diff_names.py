"""The file a ``diff --git a/X b/Y`` header names, where the header alone can tell.

A name may itself hold `` b/``, so the header splits two ways; when both sides are one
name (every change but a rename or copy) that name is certain. Otherwise the ``rename``
/``copy`` or ``---``/``+++`` lines that follow must decide.
"""

from __future__ import annotations


def same_name_sides(header: str) -> str | None:
    """The name both sides of ``header`` give (``diff --git a/N b/N``), or None."""
    sides = header.removeprefix("diff --git ")
    half = (len(sides) - 5) // 2  # "a/" + name + " b/" + name
    name = sides[2 : 2 + half]
    return name if sides == f"a/{name} b/{name}" else None
