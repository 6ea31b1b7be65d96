#!/usr/bin/env python3
"""Gate (a): the workflow core (``shared/domain``) reads no clock, no randomness, no IO.

The seed's first axiom: the workflow is deterministic control. Ruff's banned-api is
global (it cannot say "only in shared/domain"), so this is a small AST scan of
``<target>/shared/domain``: it refuses imports of clock, entropy, environment and IO
modules, and calls such as ``datetime.now()`` or ``os.environ`` reached through an
allowed module. Exit 0 clean, 1 on any finding (or nothing to scan: fail closed),
2 on usage errors.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

BANNED_MODULES = {
    "time": "the wall clock",
    "random": "randomness",
    "secrets": "randomness",
    "uuid": "randomness (uuid4) and the clock (uuid1)",
    "httpx": "network IO",
    "requests": "network IO",
    "socket": "network IO",
    "subprocess": "process IO",
    "sqlalchemy": "database IO",
    "psycopg": "database IO",
    "redis": "broker IO",
    "celery": "the task queue",
    "kombu": "the task queue",
    "flask": "the web framework",
}
BANNED_ATTRS = {
    ("datetime", "now"): "the wall clock",
    ("datetime", "utcnow"): "the wall clock",
    ("datetime", "today"): "the wall clock",
    ("date", "today"): "the wall clock",
    ("os", "environ"): "the environment",
    ("os", "getenv"): "the environment",
    ("os", "urandom"): "randomness",
}


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def scan(path: Path) -> list[str]:
    """Findings in one file as ``path:line: message``."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as exc:
        return [f"{path}:{exc.lineno}: cannot parse ({exc.msg}): fail closed"]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            for alias in node.names:
                why = BANNED_ATTRS.get((_top(node.module), alias.name))
                if why:
                    found.append(
                        f"{path}:{node.lineno}: imports {node.module}.{alias.name} ({why})"
                    )
        elif isinstance(node, ast.Attribute):
            base = node.value
            # datetime.now / datetime.datetime.now / os.environ ...
            name = (
                base.id
                if isinstance(base, ast.Name)
                else (base.attr if isinstance(base, ast.Attribute) else None)
            )
            why = BANNED_ATTRS.get((name or "", node.attr))
            if why:
                found.append(f"{path}:{node.lineno}: uses {name}.{node.attr} ({why})")
            continue
        else:
            continue
        for module in modules:
            why = BANNED_MODULES.get(_top(module))
            if why:
                found.append(f"{path}:{node.lineno}: imports {module} ({why})")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, default=Path.cwd(), help="a repository root")
    args = parser.parse_args(argv)
    core = args.target / "shared" / "domain"
    files = sorted(core.rglob("*.py")) if core.is_dir() else []
    if not files:
        print(f"core_determinism: no Python files under {core}: nothing proven, failing closed")
        return 1
    findings = [f for path in files for f in scan(path)]
    for finding in findings:
        print(finding)
    verdict = "FAIL" if findings else "ok"
    print(f"core_determinism: {verdict} ({len(files)} files, {len(findings)} findings)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
