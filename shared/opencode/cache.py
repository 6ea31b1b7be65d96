"""L1: a bounded, thread-safe, per-process map of op_key -> recorded answer."""

from __future__ import annotations

from typing import Any

from shared.lru import Lru


class LruCache(Lru[str, dict[str, Any]]):
    """Holds only answers whose ledger row is ``succeeded`` (the call protocol's rule)."""

    def __init__(self, capacity: int = 1024) -> None:
        super().__init__(capacity)
