"""Tool allowlists per agent: deny by default.

The same allowlist feeds the ``tools`` map sent with each prompt and the session's
permission rules (``deny``, never ``ask``: a headless call must not block).
"""

from __future__ import annotations

KNOWN_TOOLS = (
    "bash",
    "edit",
    "write",
    "apply_patch",
    "read",
    "grep",
    "glob",
    "list",
    "task",
    "todowrite",
    "todoread",
    "webfetch",
    "websearch",
    "question",
    "skill",
    "lsp",
)

READ_ONLY = frozenset({"read", "grep", "glob", "list"})

ALLOWLISTS: dict[str, frozenset[str]] = {
    "plan": READ_ONLY,
    "build": READ_ONLY | {"edit", "write", "apply_patch"},
}

ALWAYS_ALLOWED = frozenset({"StructuredOutput"})
"""OpenCode's own tool for structured answers; not a capability of the agent."""


class UnknownAgent(ValueError):
    pass


def allowlist(agent: str) -> frozenset[str]:
    try:
        return ALLOWLISTS[agent]
    except KeyError as exc:
        raise UnknownAgent(f"no tool allowlist for agent {agent!r}") from exc


def tools_map(agent: str) -> dict[str, bool]:
    """The ``tools`` field of a prompt: every known tool, true only if allowed."""
    allowed = allowlist(agent)
    return {tool: tool in allowed for tool in KNOWN_TOOLS}


def permission_rules(agent: str) -> list[dict[str, str]]:
    """Session permission rules: allowed tools allow, everything else deny."""
    allowed = allowlist(agent)
    rules = [{"permission": "*", "pattern": "*", "action": "deny"}]
    rules += [{"permission": tool, "pattern": "*", "action": "allow"} for tool in sorted(allowed)]
    rules += [
        {"permission": p, "pattern": "*", "action": "deny"}
        for p in ("external_directory", "doom_loop", "question", "task")
    ]
    return rules


def forbidden_tool_uses(agent: str, parts: list[dict[str, object]]) -> list[str]:
    """Names of tools the reply used outside the agent's allowlist."""
    allowed = allowlist(agent) | ALWAYS_ALLOWED
    used = [p.get("tool") for p in parts if p.get("type") == "tool"]
    return sorted({str(t) for t in used if str(t) not in allowed})
