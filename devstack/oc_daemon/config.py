"""The daemon's global config (passed as ``OPENCODE_CONFIG``): one model, deny by default.

Everything kodo relies on is stated here rather than left to defaults: the only
provider is ``kodo`` (an OpenAI-compatible LLM at ``llm_url``) with its costs, so
usage and cost are real numbers; nothing auto-updates, shares, formats, snapshots or
starts language servers; and tools that could block a headless call or leave the
worktree (``question``, ``doom_loop``, ``external_directory``, the web) are denied,
never ``ask``. The plan agent may not edit, run commands or spawn sub-agents.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PROVIDER_ID = "kodo"
MODEL_ID = "kodo-scripted"


def global_config(
    llm_url: str,
    *,
    provider_id: str = PROVIDER_ID,
    model_id: str = MODEL_ID,
    api_key: str = "sk-kodo-scripted",
) -> dict[str, Any]:
    """The config JSON; ``llm_url`` is the provider's base URL (ending in ``/v1``)."""
    model = f"{provider_id}/{model_id}"
    return {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "lsp": False,
        "formatter": False,
        "snapshot": False,
        "model": model,
        "small_model": model,
        "enabled_providers": [provider_id],
        "provider": {
            provider_id: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "kodo scripted LLM",
                "options": {
                    "baseURL": llm_url.rstrip("/"),
                    "apiKey": api_key,
                    "timeout": 600000,
                    "chunkTimeout": 120000,
                },
                "models": {
                    model_id: {
                        "name": "kodo scripted model",
                        "tool_call": True,
                        "limit": {"context": 128000, "output": 4096},
                        "cost": {"input": 1.0, "output": 2.0, "cache_read": 0.1, "cache_write": 0},
                    }
                },
            }
        },
        "permission": {
            "external_directory": "deny",
            "doom_loop": "deny",
            "question": "deny",
            "webfetch": "deny",
            "websearch": "deny",
        },
        "agent": {
            "plan": {"permission": {"edit": "deny", "bash": "deny", "task": "deny"}},
            "build": {"permission": {"edit": "allow", "bash": "deny", "task": "deny"}},
        },
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` readable only by us (it names the LLM's key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path
