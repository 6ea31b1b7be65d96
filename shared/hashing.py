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


_BLOB_DIGESTS = {40: hashlib.sha1, 64: hashlib.sha256}
"""git's object formats by the length of their hex ids: SHA-1 (40) and SHA-256 (64)."""


def git_blob_digest(size: int, object_id_length: int) -> Any:
    """A hash object fed git's blob header for ``size`` bytes, in the object format whose
    ids have ``object_id_length`` hex digits: update it with the bytes, and its hex digest
    is the blob id ``git hash-object --no-filters`` gives them. ValueError for a length
    no object format has."""
    make = _BLOB_DIGESTS.get(object_id_length)
    if make is None:
        raise ValueError(f"no git object format has {object_id_length}-digit ids")
    digest = make(usedforsecurity=False)
    digest.update(b"blob %d\0" % size)
    return digest
