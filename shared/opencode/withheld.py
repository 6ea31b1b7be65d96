"""What the ledger keeps of a turn that broke a turn rule, or could not be read whole.

Such a turn may have read what it must not (another run's worktree, the daemon's
``tool-output`` folder) and said it back: its record keeps the answer's metadata, what
it was billed and a bounded tool trail, never the answer's text.
"""

from __future__ import annotations

from typing import Any

from shared.opencode.confinement import SHOWN_NAME, shown_path
from shared.opencode.messages import PromptReply

WITHHELD = (
    "the turn broke a turn rule: nothing the model said is kept (it may carry what the"
    " turn read where it must not); tools lists what the turn's tools named"
)
_METADATA_KEYS = frozenset(
    {"id", "sessionID", "parentID", "role", "mode", "agent", "modelID", "providerID"}
    | {"time", "cost", "tokens", "finish"}
)
"""What a withheld record keeps of the answer's ``info``: ids, model, timing and cost;
never its text (``structured``, ``error``) or its paths."""


TRAIL_USES = 50
"""A withheld record's trail keeps this many tool uses (then a count of the rest)..."""
TRAIL_PATHS = 4
"""...each with this many of the paths it named, each cut by :func:`shown_path`."""


METADATA_ENTRIES = 50
"""A metadata object keeps this many of its entries."""


def _metadata(value: Any, depth: int = 0) -> Any:
    """A metadata value as a withheld record keeps it: numbers and flags whole, text
    cut by :func:`shown_path`, objects of those two levels deep; nothing else."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str):
        return shown_path(value)
    if isinstance(value, dict) and depth < 2:
        return {
            shown_path(str(k), SHOWN_NAME): _metadata(v, depth + 1)
            for k, v in list(value.items())[:METADATA_ENTRIES]
        }
    return None


def withheld_record(
    reply: PromptReply, usage: dict[str, Any] | None, trail: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """The ledger's record of a turn that broke a turn rule, or could not be read whole:
    the answer's metadata, what it was billed and its tool trail (tool, status, the
    paths named, bounded: a path is text the model chose), no text of the answer."""
    info = {k: _metadata(v) for k, v in reply.info.items() if k in _METADATA_KEYS}
    uses = trail or []
    kept: list[dict[str, Any]] = [
        {
            "tool": shown_path(str(use.get("tool")), SHOWN_NAME),
            "status": shown_path(str(use.get("status")), SHOWN_NAME),
            "paths": [shown_path(str(p)) for p in use.get("paths", [])[:TRAIL_PATHS]],
            **(
                {"more_paths": len(use["paths"]) - TRAIL_PATHS}
                if len(use.get("paths", [])) > TRAIL_PATHS
                else {}
            ),
        }
        for use in uses[:TRAIL_USES]
    ]
    if len(uses) > TRAIL_USES:
        kept.append({"more_uses": len(uses) - TRAIL_USES})
    return {"info": info, "usage": usage, "tools": kept, "withheld": WITHHELD}
