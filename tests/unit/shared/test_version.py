"""The build's version: the package version plus what identifies the build."""

from __future__ import annotations

import pytest

from shared.version import BuildIdInvalid, compose_version


def test_a_git_build_is_named_by_its_short_commit() -> None:
    assert compose_version("0.1.0", build_id=None, git_sha="1a2b3c4d5e6f", dirty=False) == (
        "0.1.0+g1a2b3c4"
    )


def test_a_tree_with_uncommitted_changes_says_so() -> None:
    assert compose_version("0.1.0", build_id=None, git_sha="1a2b3c4d5e6f", dirty=True) == (
        "0.1.0+g1a2b3c4.dirty"
    )


def test_a_build_id_baked_in_at_install_wins_over_git() -> None:
    assert compose_version("0.1.0", build_id="ci.812", git_sha="1a2b3c4", dirty=True) == (
        "0.1.0+ci.812"
    )


def test_a_build_without_any_identity_is_marked_unknown_not_passed_off_as_the_package() -> None:
    assert compose_version("0.1.0", build_id=None, git_sha=None, dirty=False) == "0.1.0+unknown"
    assert compose_version("0.1.0", build_id="", git_sha=None, dirty=False) == "0.1.0+unknown"


@pytest.mark.parametrize("bad", ["has space", "a+b", "x/y", "-lead", "a" * 60])
def test_a_build_id_that_is_no_version_label_is_refused_naming_the_rule(bad: str) -> None:
    with pytest.raises(BuildIdInvalid, match="KODO_BUILD_ID"):
        compose_version("0.1.0", build_id=bad, git_sha=None, dirty=False)
