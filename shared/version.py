"""The running code's version, recorded on every run it creates."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def app_version() -> str:
    """Read once per process: the installed distribution cannot change under it."""
    try:
        return version("kodo")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "0+unknown"
