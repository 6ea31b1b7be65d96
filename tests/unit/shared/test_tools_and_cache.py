"""Tool allowlists deny by default; the L1 cache is bounded."""

from __future__ import annotations

import pytest

from shared.opencode.cache import LruCache
from shared.opencode.tools import (
    KNOWN_TOOLS,
    UnknownAgent,
    forbidden_tool_uses,
    permission_rules,
    tools_map,
)


def test_the_plan_agent_may_only_read() -> None:
    allowed = {tool for tool, on in tools_map("plan").items() if on}
    assert allowed == {"read", "grep", "glob", "list"}
    assert set(tools_map("plan")) == set(KNOWN_TOOLS)


def test_the_build_agent_may_also_edit_but_never_run_bash_or_spawn_tasks() -> None:
    allowed = {tool for tool, on in tools_map("build").items() if on}
    assert allowed == {"read", "grep", "glob", "list", "edit", "write", "apply_patch"}


def test_session_rules_deny_everything_not_allowed_and_never_ask() -> None:
    rules = permission_rules("plan")
    assert rules[0] == {"permission": "*", "pattern": "*", "action": "deny"}
    assert {r["action"] for r in rules} == {"allow", "deny"}
    assert {"permission": "task", "pattern": "*", "action": "deny"} in rules


def test_an_unknown_agent_has_no_allowlist() -> None:
    with pytest.raises(UnknownAgent):
        tools_map("reviewer")


def test_tool_parts_outside_the_allowlist_are_reported() -> None:
    parts: list[dict[str, object]] = [
        {"type": "tool", "tool": "read"},
        {"type": "tool", "tool": "StructuredOutput"},
        {"type": "tool", "tool": "bash"},
        {"type": "text", "text": "bash"},
    ]
    assert forbidden_tool_uses("plan", parts) == ["bash"]
    assert forbidden_tool_uses("plan", parts[:2]) == []


def test_the_l1_cache_evicts_the_least_recently_used() -> None:
    cache = LruCache(capacity=2)
    cache.put("a", {"v": 1})
    cache.put("b", {"v": 2})
    assert cache.get("a") == {"v": 1}
    cache.put("c", {"v": 3})
    assert cache.get("b") is None
    assert len(cache) == 2
