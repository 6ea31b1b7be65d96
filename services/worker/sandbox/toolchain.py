"""Finding the allowlisted programs and the host directories the sandbox binds.

A program is usable only if every prefix it needs (its own, its real file's, its
interpreter's) is safe to bind read-only (:func:`~services.worker.sandbox.layout.unsafe_bind`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from services.worker.sandbox.layout import (
    ETC_FILES,
    NETWORK_ETC,
    HostSystem,
    Toolchain,
    unsafe_bind,
)

SYSTEM_TOP = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def host_system() -> HostSystem:
    links: list[tuple[str, str]] = []
    dirs: list[str] = []
    for top in SYSTEM_TOP:
        if os.path.islink(top):
            links.append((top, os.readlink(top)))
        elif os.path.isdir(top):
            dirs.append(top)
    etc = tuple(p for p in (*ETC_FILES, *NETWORK_ETC) if os.path.exists(p))
    return HostSystem(tuple(links), tuple(dirs), etc)


def _prefix(executable: str) -> str:
    """The installation prefix of a program: the parent of its bin/ dir."""
    parent = Path(executable).parent
    return str(parent.parent if parent.name in ("bin", "sbin") else parent)


def _shebang(path: str) -> list[str]:
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
    except OSError:
        return []
    if not head.startswith(b"#!"):
        return []
    return head[2:].split(b"\n", 1)[0].decode(errors="replace").split()


def _needs(candidate: str, search: Sequence[str], depth: int = 0) -> list[str] | None:
    """Every prefix ``candidate`` needs to start (itself, its real file, its interpreter)."""
    real = os.path.realpath(candidate)
    needs = [_prefix(candidate), _prefix(real)]
    line = _shebang(real)
    if line and depth < 3:
        interp = line[0]
        if os.path.basename(interp) == "env" and len(line) > 1:
            found = which(line[1], search)
            interp = found or ""
        if not interp:
            return None
        more = _needs(interp, search, depth + 1)
        if more is None:
            return None
        needs += more
    return [p for p in dict.fromkeys(needs) if p != "/usr" and not p.startswith("/usr/")]


def which(name: str, search: Sequence[str]) -> str | None:
    """The first executable ``name`` in the ``search`` directories (shims skipped)."""
    for directory in search:
        if Path(directory).name == "shims":
            continue  # pyenv/rbenv/asdf shims re-exec through the manager's whole tree
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def resolve_toolchain(
    programs: Sequence[str], search_path: str, protected: Sequence[str]
) -> Toolchain:
    """Find each allowlisted program on ``search_path`` with a prefix safe to bind."""
    search = [d for d in search_path.split(os.pathsep) if d]
    found: dict[str, str] = {}
    binds: list[str] = []
    skipped: dict[str, list[str]] = {}
    for name in programs:
        for directory in search:
            candidate = os.path.join(directory, name)
            if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
                continue
            if Path(directory).name == "shims":
                skipped.setdefault(name, []).append(f"{candidate}: a version-manager shim")
                continue
            needs = _needs(candidate, search)
            if needs is None:
                skipped.setdefault(name, []).append(f"{candidate}: interpreter not found")
                continue
            exposed = [(p, hit) for p in needs if (hit := unsafe_bind(p, protected))]
            if exposed:
                why = ", ".join(f"binding {p} would expose {hit}" for p, hit in exposed)
                skipped.setdefault(name, []).append(f"{candidate}: {why}")
                continue
            found[name] = candidate
            binds += needs
            break
    path = tuple(dict.fromkeys(str(Path(p).parent) for p in found.values()))
    return Toolchain(found, tuple(dict.fromkeys(binds)), path, skipped)
