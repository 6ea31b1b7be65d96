#!/usr/bin/env python3
"""Gate (c): no ``typing.cast`` anywhere ("no as casts": validate and narrow instead).

Runs ruff's banned-api rule (TID251) with the repository's configuration, whose
``[tool.ruff.lint.flake8-tidy-imports.banned-api]`` bans ``typing.cast``, over every
Python file of ``--target``. The repository run leaves out the policy fixtures (whose
``bad`` halves break the rule on purpose). Exit 0 clean, 1 on any use or if ruff
cannot run (fail closed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).parent / "ruff"
FIXTURES = "scripts/policy/fixtures"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, default=REPO, help="a repository root")
    args = parser.parse_args(argv)
    target = args.target.resolve()
    if not any(target.rglob("*.py")):
        print(f"no_cast: no Python files under {target}: failing closed")
        return 1
    argv_ruff = [
        str(RUFF),
        "check",
        "--config",
        str(REPO / "pyproject.toml"),
        "--select",
        "TID251",
        "--no-cache",
        "--output-format",
        "concise",
    ]
    if target == REPO:
        argv_ruff += ["--extend-exclude", FIXTURES]
    done = subprocess.run(
        [*argv_ruff, str(target)], capture_output=True, text=True, timeout=120, cwd=target
    )
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip():
            print(line)
    verdict = "ok" if done.returncode == 0 else "FAIL"
    print(f"no_cast: {verdict} ({target})")
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
