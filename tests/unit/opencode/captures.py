"""Exact daemon replies (OpenCode 1.18.33) copied into tests/fixtures/opencode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "opencode"


def capture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())
