"""Content digests: every artifact and every provider call is named by a sha256."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(data: bytes | str) -> str:
    """Hex sha256 of ``data`` (text is encoded as UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def op_key(run_id: str, step_id: str, attempt: int, prompt: str, schema: dict[str, Any]) -> str:
    """The exactly-once key of a provider call: same inputs, same key, one bill."""
    return sha256_hex(canonical_json([run_id, step_id, attempt, prompt, schema]))
