"""A pinned git's root binds only what no enclosing mount already shows alike
(services.worker.git_ops._unshadowed): each bind is a mount and a reading of the mount
table for bubblewrap, so a folder of the common dir bound again inside the common dir's
own bind is CPU for nothing; a bind that changes what its parent shows stays."""

from __future__ import annotations

from services.worker.git_ops import _unshadowed

RO, RW, TMPFS = "--ro-bind", "--bind", "--tmpfs"
COMMON = "/r/.git"


def test_folders_of_a_read_only_common_dir_are_shown_by_its_bind() -> None:
    mounts = {
        COMMON: RO,
        f"{COMMON}/objects": RO,
        f"{COMMON}/refs": RO,
        f"{COMMON}/logs": RO,
        f"{COMMON}/config": RO,
        f"{COMMON}/worktrees": TMPFS,
        f"{COMMON}/worktrees/run-1": RO,
    }

    assert _unshadowed(mounts) == {
        COMMON: RO,
        f"{COMMON}/worktrees": TMPFS,
        f"{COMMON}/worktrees/run-1": RO,  # hidden by the tmpfs otherwise
    }


def test_a_read_only_config_inside_a_writable_git_dir_stays_read_only() -> None:
    mounts = {
        COMMON: RW,
        f"{COMMON}/objects": RW,
        f"{COMMON}/config": RO,
        f"{COMMON}/worktrees": TMPFS,
        f"{COMMON}/worktrees/run-1": RW,
        f"{COMMON}/worktrees/run-1/config.worktree": RO,
    }

    assert _unshadowed(mounts) == {
        COMMON: RW,
        f"{COMMON}/config": RO,
        f"{COMMON}/worktrees": TMPFS,
        f"{COMMON}/worktrees/run-1": RW,
        f"{COMMON}/worktrees/run-1/config.worktree": RO,
    }


def test_objects_made_writable_inside_a_read_only_common_dir_stay_bound() -> None:
    mounts = {COMMON: RO, f"{COMMON}/objects": RW, f"{COMMON}/refs": RO}

    assert _unshadowed(mounts) == {COMMON: RO, f"{COMMON}/objects": RW}


def test_a_part_that_lives_elsewhere_is_bound_where_it_is() -> None:
    """``objects`` behind a link is bound at its real path, which no other bind holds."""
    mounts = {COMMON: RO, "/store/objects": RO, "/store/objects/pack": RO}

    assert _unshadowed(mounts) == {COMMON: RO, "/store/objects": RO}


def test_the_nearest_enclosing_mount_decides_not_a_farther_one() -> None:
    """A read-only bind inside a tmpfs inside a read-only bind: the tmpfs hides it."""
    mounts = {"/a": RO, "/a/b": TMPFS, "/a/b/c": RO, "/a/b/c/d": RO}

    assert _unshadowed(mounts) == {"/a": RO, "/a/b": TMPFS, "/a/b/c": RO}


def test_a_name_that_merely_starts_like_a_mounted_folder_is_not_inside_it() -> None:
    mounts = {"/r/.git": RO, "/r/.gitx": RO, "/r/.git-objects": RO}

    assert _unshadowed(mounts) == mounts
