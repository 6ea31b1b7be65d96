"""The JSON text kodo sends for a ``jsonb`` value: what ``json.dumps`` writes, each
character Postgres cannot store (U+0000, a lone surrogate) as U+FFFD, and a number
that is not JSON (NaN, an infinity) as null.

Such a character refuses the whole write, and the ledger must still record what an
agent said that was refused, never fail to record it (:mod:`shared.domain.storable`).
"""

from __future__ import annotations

import json
from typing import Any

from shared.domain.storable import storable


def dumps(value: Any) -> str:
    """``json.dumps(value)``; ASCII, so an unstorable character can only be an escape
    ``\\u0000`` or ``\\udXXX``, and a document with neither is sent as it is."""
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:  # NaN or an infinity: not JSON, refused by jsonb; stored as null
        return json.dumps(storable(value))
    if "\\u0000" in text or "\\ud" in text:  # or a pair (astral text), or text that reads so
        return json.dumps(storable(value))
    return text
