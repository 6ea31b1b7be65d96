"""The running code's version, recorded on every run, step and process.

It is the package version plus what identifies the build (a PEP 440 local label):

- ``KODO_BUILD_ID`` when set: baked in at install where the tree has no ``.git`` (the
  Dockerfile takes it as a build ARG and keeps it as an ENV), e.g. ``0.1.0+ci.812``;
- else the commit of the checkout the code runs from, ``0.1.0+g1a2b3c4``, with
  ``.dirty`` appended when the tree has uncommitted changes;
- else ``0.1.0+unknown``: never the bare package version, which every build shares.

Computed once per process (git is asked at most twice, at the first call), never per
request.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

BUILD_ID_ENV = "KODO_BUILD_ID"
_LABEL = re.compile(r"[A-Za-z0-9]+(\.[A-Za-z0-9]+)*")
MAX_BUILD_ID_CHARS = 40
"""Runs store the version in 64 characters; the package version takes the rest."""
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


class BuildIdInvalid(ValueError):
    """KODO_BUILD_ID is not a PEP 440 local version label: the process refuses to start."""


def compose_version(package: str, *, build_id: str | None, git_sha: str | None, dirty: bool) -> str:
    """The version string from the package version and what identifies the build."""
    if build_id:
        if len(build_id) > MAX_BUILD_ID_CHARS or not _LABEL.fullmatch(build_id):
            raise BuildIdInvalid(
                f"{BUILD_ID_ENV}={build_id!r} is refused: rule build_id: at most"
                f" {MAX_BUILD_ID_CHARS} characters of letters and digits, dot-separated"
                " (a PEP 440 local version label, e.g. ci.812 or g1a2b3c4)"
            )
        return f"{package}+{build_id}"
    if git_sha:
        return f"{package}+g{git_sha[:7]}" + (".dirty" if dirty else "")
    return f"{package}+unknown"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _package_version() -> str:
    try:
        return version("kodo")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "0"


def build_version(environ: Mapping[str, str], root: Path) -> str:
    """The version of the code in ``root`` (a checkout or an installed tree)."""
    build_id = environ.get(BUILD_ID_ENV, "").strip() or None
    sha = dirty = None
    if build_id is None and (root / ".git").exists():
        sha = _git(root, "rev-parse", "--short=7", "HEAD")
        dirty = bool(_git(root, "status", "--porcelain")) if sha else None
    return compose_version(_package_version(), build_id=build_id, git_sha=sha, dirty=bool(dirty))


@cache
def app_version() -> str:
    """Read once per process: the code a process runs cannot change under it."""
    return build_version(os.environ, _SOURCE_ROOT)
