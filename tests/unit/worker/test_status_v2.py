"""ExecuteST reads the worktree's HEAD and its changes from one ``git status --porcelain=v2
-z --branch``: the parse names HEAD's commit and every entry's path, whatever its kind,
as the filesystem holds it (never quoted)."""

from __future__ import annotations

from services.worker.steps.execute import status_v2

HEAD = "5c6f0b7d1d1e4f4a8f0f6a1b2c3d4e5f60718293"
BLOB = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_a_clean_worktree_names_its_head_and_no_path() -> None:
    status = f"# branch.oid {HEAD}\0# branch.head kodo/run-1\0"
    assert status_v2(status) == (HEAD, [])


def test_every_kind_of_entry_is_named_by_its_path() -> None:
    status = "\0".join(
        [
            f"# branch.oid {HEAD}",
            "# branch.head kodo/run-1",
            f"1 .M N... 100644 100644 100644 {BLOB} {BLOB} calc.py",
            f"1 .M N... 100644 100644 100644 {BLOB} {BLOB} a name with spaces.py",
            f"2 R. N... 100644 100644 100644 {BLOB} {BLOB} R100 new name.py",
            "old name.py",
            f"u UU N... 100644 100644 100644 100644 {BLOB} {BLOB} {BLOB} both.py",
            "? late.py",
            "? odd\tname.py",
            "? u\u00e9/with\nnewline.py",
            "! build/ignored.o",
        ]
    )
    head, paths = status_v2(status)
    assert head == HEAD
    assert paths == [
        "calc.py",
        "a name with spaces.py",
        "new name.py",
        "both.py",
        "late.py",
        "odd\tname.py",
        "u\u00e9/with\nnewline.py",
        "build/ignored.o",
    ]


def test_a_branch_without_a_commit_has_no_head() -> None:
    assert status_v2("# branch.oid (initial)\0# branch.head main\0? a.py\0") == (None, ["a.py"])
