"""Read a repository's run-time policy from its base ref (never from the worktree).

Reading ``.kodo/policy.toml`` at the run's base ref means the patch under review can
never loosen the policy it is judged by.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from shared.domain.policy import Policy, PolicyError, policy_from_mapping
from shared.gitcmd import run_git

POLICY_PATH = ".kodo/policy.toml"


def load_policy(repo: Path, base_ref: str) -> Policy:
    shown = run_git(repo, ["show", f"{base_ref}:{POLICY_PATH}"], timeout_s=30)
    if shown.returncode != 0:
        stderr = shown.stderr.decode(errors="replace")
        if "does not exist" in stderr or "exists on disk, but not in" in stderr:
            return Policy()
        raise PolicyError(f"cannot read {POLICY_PATH} at {base_ref}: {stderr.strip()}")
    try:
        parsed = tomllib.loads(shown.stdout.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{POLICY_PATH} at {base_ref} is not valid TOML: {exc}") from exc
    table = parsed.get("policy", {})
    if not isinstance(table, dict) or set(parsed) - {"policy"}:
        raise PolicyError(f"{POLICY_PATH} must hold one [policy] table")
    return policy_from_mapping(table, source=f"{base_ref}:{POLICY_PATH}")
