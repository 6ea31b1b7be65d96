"""The repository an intent was submitted against, and whether a step still sees it. Pure.

At submit the repository's resolved path and its device/inode are recorded; a step that
opens the repository compares them with what it observes now, so a repository swapped
for a symlink (or another directory) between submit and run is refused, not followed.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.policy import Violation

RULE = "repo_pinning"


@dataclass(frozen=True)
class RepoPin:
    """A repository's real path and the identity of the directory there."""

    path: str
    device: int
    inode: int


def pin_violation(recorded: RepoPin | None, observed: RepoPin | None) -> Violation | None:
    """Why the repository a step would open is not the one submitted, if it is not."""
    if recorded is None:
        return Violation(
            RULE, "the intent records no repository identity (submitted before pinning)"
        )
    if observed is None:
        return Violation(RULE, f"the repository {recorded.path} is gone", (recorded.path,))
    if observed.path != recorded.path:
        return Violation(
            RULE,
            f"the repository {recorded.path} now resolves to {observed.path}",
            (recorded.path, observed.path),
        )
    if (observed.device, observed.inode) != (recorded.device, recorded.inode):
        return Violation(
            RULE,
            f"the repository {recorded.path} is another directory now "
            f"(device/inode {observed.device}/{observed.inode}, "
            f"submitted {recorded.device}/{recorded.inode})",
            (recorded.path,),
        )
    return None
