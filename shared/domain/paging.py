"""Keyset pages: newest first by ``(created_at, id)``, never OFFSET.

A cursor is the last row's position, opaque to clients (URL-safe base64 of a small JSON
object) but not secret: it names a time and an id the client already saw. A cursor
that does not decode to exactly that shape is refused (fail closed), never read as
"start again".
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from shared.domain.storable import UNSTORABLE

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class BadCursor(ValueError):
    """The cursor is not one this API handed out."""


@dataclass(frozen=True)
class Position:
    """Where a page ended: the last row's creation time and id."""

    created_at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps({"t": self.created_at.isoformat(), "id": self.id}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> Position:
        if len(cursor) > 400:
            raise BadCursor("cursor too long")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            value = json.loads(raw)
        except (binascii.Error, ValueError) as exc:
            raise BadCursor("not a cursor this API returned") from exc
        if not isinstance(value, dict) or set(value) != {"t", "id"}:
            raise BadCursor("not a cursor this API returned")
        at, ident = value["t"], value["id"]
        if not isinstance(at, str) or not isinstance(ident, str) or not ident:
            raise BadCursor("not a cursor this API returned")
        if UNSTORABLE.search(ident):  # (no id holds one; Postgres cannot compare it: a 500)
            raise BadCursor("not a cursor this API returned")
        try:
            created_at = datetime.fromisoformat(at)
        except ValueError as exc:
            raise BadCursor("not a cursor this API returned") from exc
        if created_at.tzinfo is None:
            raise BadCursor("not a cursor this API returned")
        return cls(created_at, ident)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows and where the next one starts (None: this was the last)."""

    items: list[T]
    next_cursor: str | None


def page_of(rows: list[T], limit: int, position: Callable[[T], Position]) -> Page[T]:
    """Cut ``rows`` (fetched with ``limit + 1``) to a page; the extra row says there is
    more, and the last row kept is where the next page starts."""
    if len(rows) <= limit:
        return Page(rows, None)
    kept = rows[:limit]
    return Page(kept, position(kept[-1]).encode())
