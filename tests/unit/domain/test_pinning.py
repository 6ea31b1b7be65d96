"""A step refuses a repository that is not the one the intent was submitted against."""

from __future__ import annotations

from shared.domain.pinning import RepoPin, pin_violation

SUBMITTED = RepoPin("/srv/repos/calc", 2049, 1234)


def test_the_same_directory_at_the_same_path_passes() -> None:
    assert pin_violation(SUBMITTED, RepoPin("/srv/repos/calc", 2049, 1234)) is None


def test_a_path_that_now_resolves_elsewhere_is_refused_naming_both_paths() -> None:
    found = pin_violation(SUBMITTED, RepoPin("/srv/other/evil", 2049, 999))
    assert found is not None
    assert (found.rule, found.paths) == ("repo_pinning", ("/srv/repos/calc", "/srv/other/evil"))


def test_another_directory_at_the_same_path_is_refused() -> None:
    found = pin_violation(SUBMITTED, RepoPin("/srv/repos/calc", 2049, 4321))
    assert found is not None
    assert "another directory" in found.detail


def test_a_repository_that_is_gone_is_refused() -> None:
    found = pin_violation(SUBMITTED, None)
    assert found is not None
    assert "gone" in found.detail


def test_an_intent_without_a_pin_is_refused_rather_than_trusted() -> None:
    found = pin_violation(None, SUBMITTED)
    assert found is not None
    assert found.rule == "repo_pinning"
