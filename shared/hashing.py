"""Content digests: every artifact and every provider call is named by a sha256."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_bytes(value: Any) -> bytes:
    """The signed form of a JSON value: ``canonical_json`` encoded as UTF-8.

    A digest a human approves is taken over exactly these bytes, and these bytes are
    what is stored and served, so ``sha256sum`` of the download is the digest.
    """
    return canonical_json(value).encode("utf-8")


def sha256_hex(data: bytes | str) -> str:
    """Hex sha256 of ``data`` (text is encoded as UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def op_key(run_id: str, step_id: str, attempt: int, prompt: str, schema: dict[str, Any]) -> str:
    """The exactly-once key of a provider call: same inputs, same key, one bill."""
    return sha256_hex(canonical_json([run_id, step_id, attempt, prompt, schema]))
