"""A forbidden pattern holds whatever the case or Unicode spelling of the path.

On a case-folding filesystem ``.ENV`` is the ``.env`` a dotenv loader opens, and macOS
stores names decomposed (NFD): a path must not dodge a pattern by spelling it otherwise.
"""

from __future__ import annotations

import unicodedata

import pytest

from shared.domain.policy import DEFAULT_FORBIDDEN, forbidden


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        (".ENV", ".env"),
        (".Env.local", ".env.*"),
        ("app/.eNv", "*/.env"),
        (".KODO/policy.toml", ".kodo/*"),
        (".GitHub/Workflows/ci.yml", ".github/workflows/*"),
    ],
)
def test_the_default_patterns_hold_in_any_case(path: str, pattern: str) -> None:
    assert forbidden(path, DEFAULT_FORBIDDEN) == pattern


def test_a_policys_own_pattern_holds_in_any_case_and_normal_form() -> None:
    composed = "secrets/caf\u00e9.pem"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed

    assert forbidden("SECRETS/KEY.PEM", ("secrets/*.pem",)) == "secrets/*.pem"
    assert forbidden(decomposed, ("secrets/caf\u00e9.pem",)) == "secrets/caf\u00e9.pem"
    assert forbidden(composed, (unicodedata.normalize("NFD", composed),)) is not None


def test_other_paths_stay_allowed() -> None:
    assert forbidden("env.py", DEFAULT_FORBIDDEN) is None
    assert forbidden("docs/environment.md", DEFAULT_FORBIDDEN) is None
    assert forbidden("src/kodo/policy.toml", DEFAULT_FORBIDDEN) is None
