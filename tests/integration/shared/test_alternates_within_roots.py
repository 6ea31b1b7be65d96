"""The object stores a repository borrows lie under KODO_REPO_ROOTS (red-team helper-111).

``objects/info/alternates`` is read as git reads it, so kodo's view and git's agree:
one store per line, ``#`` comments, C-quoted lines unquoted, relative lines under the
borrowing ``objects`` folder, alternates of alternates followed as deep as git does.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from shared.git_dir import ALTERNATES_DEPTH, alternates_refusal


def _store(path: Path) -> Path:
    (path / "objects" / "info").mkdir(parents=True)
    return path


def _borrow(git_dir: Path, text: str) -> None:
    (git_dir / "objects" / "info" / "alternates").write_text(text)


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    inside, outside = tmp_path / "roots", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    return inside, outside


def test_a_repository_borrowing_from_inside_the_roots_may_be_worked_on(
    roots: tuple[Path, Path],
) -> None:
    inside, _ = roots
    lender = _store(inside / "lender" / ".git")
    git_dir = _store(inside / "repo" / ".git")
    _borrow(git_dir, f"# a comment\n\n{lender / 'objects'}\n../../../lender/.git/objects\n")
    assert alternates_refusal(git_dir, (inside,)) is None
    assert alternates_refusal(inside / "plain" / ".git", (inside,)) is None  # none at all


@pytest.mark.parametrize(
    "line",
    [
        "{out}/objects",  # absolute
        "../../../../elsewhere/v/objects",  # relative, climbing out
        '"{quoted}/objects"',  # C-quoted, as git writes a name with a control in it
        "{inside}/link/objects",  # a link under the roots that leads out
    ],
)
def test_a_repository_borrowing_from_outside_the_roots_is_refused(
    roots: tuple[Path, Path], line: str
) -> None:
    inside, outside = roots
    victim = _store(outside / "v")
    tabbed = _store(outside / "t\tv")
    (inside / "link").symlink_to(victim)
    git_dir = _store(inside / "repo" / ".git")
    quoted = str(tabbed).replace("\t", "\\t")
    _borrow(git_dir, line.format(out=victim, quoted=quoted, inside=inside) + "\n")
    why = alternates_refusal(git_dir, (inside,))
    assert why is not None
    assert why.startswith("git_dir: ")
    assert "outside KODO_REPO_ROOTS" in why


def test_a_store_borrowed_by_a_borrowed_store_is_judged_too(roots: tuple[Path, Path]) -> None:
    inside, outside = roots
    victim = _store(outside / "v")
    lender = _store(inside / "lender")
    _borrow(lender, f"{victim / 'objects'}\n")
    git_dir = _store(inside / "repo" / ".git")
    _borrow(git_dir, f"{lender / 'objects'}\n")
    assert "outside KODO_REPO_ROOTS" in (alternates_refusal(git_dir, (inside,)) or "")


def test_stores_past_git_s_depth_are_not_read_as_git_reads_none(roots: tuple[Path, Path]) -> None:
    inside, outside = roots
    shallow = [_store(inside / f"t{i}") for i in range(ALTERNATES_DEPTH + 1)]
    for borrower, lender in itertools.pairwise(shallow):
        _borrow(borrower, f"{lender / 'objects'}\n")
    _borrow(shallow[-1], f"{_store(outside / 'w') / 'objects'}\n")  # the 6th file: git reads it
    assert alternates_refusal(shallow[0], (inside,)) is not None
    chain = [_store(inside / f"s{i}") for i in range(ALTERNATES_DEPTH + 2)]
    for borrower, lender in itertools.pairwise(chain):
        _borrow(borrower, f"{lender / 'objects'}\n")
    _borrow(chain[-1], f"{_store(outside / 'v') / 'objects'}\n")  # git never gets there
    assert alternates_refusal(chain[0], (inside,)) is None


def test_what_follows_a_closing_quote_is_read_as_git_reads_it(roots: tuple[Path, Path]) -> None:
    """git skips the one character after a closing quote and reads on from there."""
    inside, outside = roots
    victim = _store(outside / "v")
    git_dir = _store(inside / "repo" / ".git")
    _borrow(git_dir, f'"{inside}/x"X{victim / "objects"}\n')
    assert "outside KODO_REPO_ROOTS" in (alternates_refusal(git_dir, (inside,)) or "")
    _borrow(git_dir, f'"{inside}/x"X{inside}/y\n')
    assert alternates_refusal(git_dir, (inside,)) is None
