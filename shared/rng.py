"""Seeded randomness: the same ``RANDOM_SEED`` and inputs give the same draws."""

from __future__ import annotations

import random

from shared.hashing import sha256_hex


def seeded_rng(seed: int, *context: str) -> random.Random:
    """A private RNG derived from the global seed and a context (e.g. a prompt).

    Deriving per context keeps draws independent of call order across processes.
    """
    material = sha256_hex("\x1f".join([str(seed), *context]))
    return random.Random(int(material[:16], 16))  # noqa: S311 - determinism, not crypto
