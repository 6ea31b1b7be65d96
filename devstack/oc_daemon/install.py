"""Install the real OpenCode from the npm registry into a cache directory the tests reuse.

``npm install opencode-ai@1.18.33`` fetches two ~177 MB single-file binaries (AVX2
and baseline) and takes ~15 s; it is done once per cache directory, never inside
the repository. A registry that cannot be reached is an error, said loudly: the
conformance suite must fail rather than skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

VERSION = "1.18.33"
PACKAGE = f"opencode-ai@{VERSION}"
CACHE_ENV = "KODO_OPENCODE_CACHE"
INSTALL_TIMEOUT_S = 600.0
_CANDIDATES = (
    "node_modules/opencode-linux-x64/bin/opencode",
    "node_modules/opencode-linux-x64-baseline/bin/opencode",
    "node_modules/.bin/opencode",
)


class InstallError(RuntimeError):
    """npm is missing, the registry is unreachable, or the package has no usable binary."""


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$KODO_OPENCODE_CACHE``, else ``~/.cache/kodo/opencode/<version>``."""
    env = os.environ if env is None else env
    override = env.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser().resolve()
    return Path.home() / ".cache" / "kodo" / "opencode" / VERSION


def _runs(binary: Path) -> bool:
    """The binary answers ``--version`` with our version (a wrong CPU build would not)."""
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.strip() == VERSION


def find_binary(directory: Path) -> Path | None:
    """The first installed candidate that runs, or ``None``."""
    for relative in _CANDIDATES:
        candidate = directory / relative
        if candidate.is_file() and os.access(candidate, os.X_OK) and _runs(candidate):
            return candidate
    return None


def install(directory: Path | None = None, *, timeout_s: float = INSTALL_TIMEOUT_S) -> Path:
    """Ensure ``opencode-ai`` is installed in ``directory``; return the binary's path.

    Idempotent: an install that already runs is reused without touching the network.
    """
    target = directory or cache_dir()
    found = find_binary(target)
    if found is not None:
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError("npm is not on PATH: cannot install the real OpenCode")
    target.mkdir(parents=True, exist_ok=True)
    manifest = target / "package.json"
    if not manifest.exists():
        manifest.write_text('{"name": "kodo-opencode-cache", "private": true}\n')
    argv = [npm, "install", "--no-audit", "--no-fund", "--no-save", PACKAGE]
    try:
        done = subprocess.run(
            argv, cwd=target, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise InstallError(
            f"npm registry unreachable: `npm install {PACKAGE}` took over {timeout_s:.0f}s"
        ) from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise InstallError(
            f"npm registry unreachable or install failed: `npm install {PACKAGE}` in {target}"
            f" exited {done.returncode}:\n{tail}"
        )
    found = find_binary(target)
    if found is None:
        raise InstallError(f"{PACKAGE} installed in {target} but no runnable opencode binary")
    return found
