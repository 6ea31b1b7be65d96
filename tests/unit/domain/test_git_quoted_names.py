"""The names of a ``git diff`` read as git wrote them, quoted or not (helper-109)."""

from __future__ import annotations

import pytest

from shared.domain.diff_names import git_name, header_sides, same_name_sides


@pytest.mark.parametrize(
    ("header", "sides"),
    [
        ("diff --git a/calc.py b/calc.py", ("calc.py", "calc.py")),
        ("diff --git a/x b/y b/z", ("x b/y", "z")),  # differing sides: split at the last b/
        ("diff --git a/a b/x b/a b/x", ("a b/x", "a b/x")),  # one name holding " b/"
        (
            'diff --git "a/docs/caf\\303\\251.md" "b/docs/caf\\303\\251.md"',
            ("docs/caf\u00e9.md", "docs/caf\u00e9.md"),
        ),
        ('diff --git a/old.md "b/new \\"q\\".md"', ("old.md", 'new "q".md')),
        ('diff --git "a/tab\\there" b/plain', ("tab\there", "plain")),
        ('diff --git "a/bad\\377" "b/bad\\377"', ("bad\\xff", "bad\\xff")),  # not UTF-8
    ],
)
def test_a_header_s_two_names_are_read_quoted_or_not(header: str, sides: tuple[str, str]) -> None:
    assert header_sides(header) == sides


@pytest.mark.parametrize(
    "header",
    [
        "diff --cc x",
        'diff --git "a/unclosed b/x',
        'diff --git "a/x\\q" "b/x\\q"',  # an escape git never writes
        'diff --git "x" "b/x"',  # no a/ prefix
        "diff --git x y",
    ],
)
def test_what_is_no_git_header_is_said_so(header: str) -> None:
    assert header_sides(header) is None


def test_a_name_is_the_same_on_both_sides_only_when_it_is() -> None:
    assert same_name_sides('diff --git "a/\\342\\210\\225" "b/\\342\\210\\225"') == "\u2215"
    assert same_name_sides("diff --git a/x b/y") is None


def test_a_name_line_is_unquoted_only_when_quoted_whole() -> None:
    assert git_name('"b/caf\\303\\251.md"') == "b/caf\u00e9.md"
    assert git_name("b/plain.md") == "b/plain.md"
    assert git_name('"b/x" trailing') == '"b/x" trailing'
