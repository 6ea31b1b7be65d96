"""Run-time policy gates on plans and patches, per repository. Pure: no IO.

A repository's policy (``.kodo/policy.toml`` at the run's base ref, so a patch can
never loosen the policy it is judged by) names forbidden paths, the most files and
changed lines a patch may have, and which programs may verify it. A violation fails
the run closed, with a diagnostic.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_FORBIDDEN = (
    ".github/workflows/*",
    ".env",
    ".env.*",
    "*/.env",
    "*/.env.*",
    ".kodo/*",
    ".git/*",
)


class PolicyError(ValueError):
    """The policy file itself is malformed: refuse to run rather than guess."""


@dataclass(frozen=True)
class Policy:
    forbidden_paths: tuple[str, ...] = DEFAULT_FORBIDDEN
    max_files: int = 50
    max_lines: int = 2000
    exec_allowlist: tuple[str, ...] | None = None
    source: str = "default"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Policy:
        """Rebuild the snapshot a step stored (CompileST fixes the run's policy)."""
        allow = raw.get("exec_allowlist")
        return cls(
            forbidden_paths=tuple(raw["forbidden_paths"]),
            max_files=int(raw["max_files"]),
            max_lines=int(raw["max_lines"]),
            exec_allowlist=tuple(allow) if allow is not None else None,
            source=str(raw.get("source", "stored")),
        )


@dataclass(frozen=True)
class Violation:
    rule: str
    detail: str


@dataclass(frozen=True)
class DiffStats:
    paths: tuple[str, ...]
    added: int
    removed: int

    @property
    def lines(self) -> int:
        return self.added + self.removed


def _strings(raw: object, key: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise PolicyError(f"{key} must be a list of non-empty strings")
    return tuple(raw)


def _positive(raw: object, key: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
        raise PolicyError(f"{key} must be a positive integer")
    return raw


def policy_from_mapping(raw: dict[str, Any], source: str) -> Policy:
    """Build a Policy from a parsed ``[policy]`` table; unknown keys are errors."""
    known = {"forbidden_paths", "extra_forbidden_paths", "max_files", "max_lines", "exec_allowlist"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PolicyError(f"unknown policy keys: {', '.join(unknown)}")
    forbidden = (
        _strings(raw["forbidden_paths"], "forbidden_paths")
        if "forbidden_paths" in raw
        else DEFAULT_FORBIDDEN
    )
    if "extra_forbidden_paths" in raw:
        forbidden = forbidden + _strings(raw["extra_forbidden_paths"], "extra_forbidden_paths")
    return Policy(
        forbidden_paths=forbidden,
        max_files=_positive(raw.get("max_files", 50), "max_files"),
        max_lines=_positive(raw.get("max_lines", 2000), "max_lines"),
        exec_allowlist=_strings(raw["exec_allowlist"], "exec_allowlist")
        if "exec_allowlist" in raw
        else None,
        source=source,
    )


def forbidden(path: str, patterns: tuple[str, ...]) -> str | None:
    """The first pattern that forbids ``path`` (``*`` crosses directories), if any."""
    for pattern in patterns:
        if fnmatch.fnmatchcase(path, pattern):
            return pattern
    return None


def check_plan(policy: Policy, plan: dict[str, Any]) -> list[Violation]:
    files = [
        f["path"]
        for f in plan.get("files", [])
        if isinstance(f, dict) and isinstance(f.get("path"), str)
    ]
    found = [
        Violation("forbidden_path", f"{path} matches {pattern}")
        for path in files
        if (pattern := forbidden(path, policy.forbidden_paths)) is not None
    ]
    if len(files) > policy.max_files:
        found.append(
            Violation("max_files", f"the plan touches {len(files)} files (max {policy.max_files})")
        )
    return found


def diff_stats(diff: str) -> DiffStats:
    """Paths and changed-line counts of a unified diff (hunk lines, not headers)."""
    paths: list[str] = []
    added = removed = 0
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            parts = line.split(" b/", 1)
            if len(parts) == 2:
                paths.append(parts[1])
        elif line.startswith("+++") or line.startswith("---"):
            continue
        elif line.startswith("+"):
            added += 1
        elif line.startswith("-"):
            removed += 1
    return DiffStats(tuple(dict.fromkeys(paths)), added, removed)


def check_patch(policy: Policy, stats: DiffStats) -> list[Violation]:
    found = [
        Violation("forbidden_path", f"{path} matches {pattern}")
        for path in stats.paths
        if (pattern := forbidden(path, policy.forbidden_paths)) is not None
    ]
    if len(stats.paths) > policy.max_files:
        found.append(
            Violation(
                "max_files", f"the patch touches {len(stats.paths)} files (max {policy.max_files})"
            )
        )
    if stats.lines > policy.max_lines:
        found.append(
            Violation(
                "max_lines", f"the patch changes {stats.lines} lines (max {policy.max_lines})"
            )
        )
    return found


def effective_allowlist(policy: Policy, operator: tuple[str, ...]) -> tuple[str, ...]:
    """A repository may narrow the operator's allowlist, never widen it."""
    if policy.exec_allowlist is None:
        return operator
    return tuple(p for p in policy.exec_allowlist if p in operator)
