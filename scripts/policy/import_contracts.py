#!/usr/bin/env python3
"""Gate (b): the repository's import-linter contracts hold for ``--target``.

The contracts live in the repository's ``pyproject.toml`` ``[tool.importlinter]``:
``shared.opencode`` is imported only by the steps (and the services that speak
OpenCode's protocol); ``shared.domain`` imports no framework, driver or client; the
service layer imports no web framework or task queue; deployed code imports neither the
local runtime (``devstack``) nor the model stand-ins (``standins``), which only the CLI
and the local runtime reach; the views, the watcher and the token CLI import no task
queue (their unit of work sends). A fixture is a tree with its own packages, checked against
the *same* contracts (``--config`` points at the repository's file), with the target
first on the import path so its packages shadow the installed ones. Exit 0 when every
contract is kept, 1 when one is broken or the check cannot run (fail closed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, default=REPO, help="a repository root")
    parser.add_argument("--config", type=Path, default=REPO / "pyproject.toml")
    args = parser.parse_args(argv)
    target = args.target.resolve()
    if not (target / "shared").is_dir():
        print(f"import_contracts: {target} has no shared/ package: failing closed")
        return 1
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run(
        [str(LINT_IMPORTS), str(args.config.resolve()), "--no-cache"],
        cwd=target,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.startswith("Analyzed")), 0)
    for line in lines[start:] if start else lines[-30:]:  # the report, without the banner
        print(line)
    verdict = "ok" if done.returncode == 0 else "FAIL"
    print(f"import_contracts: {verdict} ({target})")
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
