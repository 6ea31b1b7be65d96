"""Text Postgres can store: no U+0000, no lone surrogate, each written as U+FFFD.

Neither ``text`` nor ``jsonb`` holds U+0000 (SQLSTATE 22P05), and a lone UTF-16
surrogate (``"\\ud800"`` in an answer's JSON, which Python decodes as is) is neither
valid JSON text for Postgres nor encodable as UTF-8. An agent may write either, and a
write carrying one fails whole: the ledger would lose the record of what was refused.
Answers holding one are refused before anything trusts them
(:func:`shared.domain.contracts.validate_answer`); records of them are stored with the
replacement character standing visibly where it was.
"""

from __future__ import annotations

import math
import re
from typing import Any

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""U+0000 and the surrogates (a Python str holds a surrogate only unpaired)."""
REPLACEMENT = "\ufffd"


def storable_text(text: str) -> str:
    """``text`` with each unstorable character as U+FFFD."""
    return UNSTORABLE.sub(REPLACEMENT, text)


def storable(value: Any) -> Any:
    """``value`` (JSON data) with every string and key made :func:`storable_text`, and
    each non-finite number (which Python's json reads and writes) as None."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and the infinities are not JSON: jsonb refuses them
    return value
