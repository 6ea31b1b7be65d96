"""Where a tree's symlinks lead, judged from the tree itself (pure: no disk).

A symlink a run's tree holds stays live for every agent turn; one that leads out of the
worktree (``w -> ..``, ``r -> /``, or a chain such as ``d -> .`` with ``l -> d/..``) lets
the daemon's tools reach other runs' worktrees. The disk is the daemon's to rewrite at
any moment (a link swapped for a folder just while kodo looks), so the judgement is
made from what the commit or the index holds: its entries' paths, which of them are
links, and the links' targets (their blobs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAX_LINKS = 40
"""As the kernel's limit on the symlinks one path may follow: more is refused."""


@dataclass(frozen=True)
class TreeLinks:
    """A tree's symlinks (path to target) and every other path it holds, folders too."""

    links: Mapping[str, str]
    nodes: frozenset[str]

    @classmethod
    def of(cls, paths: Iterable[str], links: Mapping[str, str]) -> TreeLinks:
        """From every entry's path (links included) and the links' targets."""
        nodes: set[str] = set()
        for path in paths:
            parts = path.split("/")
            nodes.update("/".join(parts[:i]) for i in range(1, len(parts)))
            if path not in links:
                nodes.add(path)
        return cls(dict(links), frozenset(nodes))

    def resolves_inside(self, path: str) -> bool:
        """Whether ``path``, each link on the way followed as the filesystem would, stays
        inside the tree (its root counts as inside). A link to an absolute path is
        outside, as is a chain of more than MAX_LINKS links; past a path the tree does not
        hold, the rest is read as names (``..`` still counts)."""
        place: list[str] = []
        todo = _parts(path)
        followed = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if not place:
                    return False
                place.pop()
                continue
            key = "/".join([*place, part])
            target = self.links.get(key)
            if target is not None:
                followed += 1
                if followed > MAX_LINKS or target.startswith("/"):
                    return False
                todo = _parts(target) + todo
                continue
            if key not in self.nodes:
                return _lexically_inside(len(place), [part, *todo])
            place.append(part)
        return True

    def escaping(self) -> list[tuple[str, str]]:
        """The links that lead out of the tree, as (path, target), sorted."""
        return sorted((p, t) for p, t in self.links.items() if not self.resolves_inside(p))


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _lexically_inside(depth: int, rest: list[str]) -> bool:
    for part in rest:
        if part == "..":
            if depth == 0:
                return False
            depth -= 1
        else:
            depth += 1
    return True
