"""What a patch changed (as git reports it) is judged against the plan and the policy."""

from __future__ import annotations

import dataclasses
import tracemalloc
from typing import Any

import pytest

from shared.domain.change_check import (
    IndexChange,
    RawRecords,
    check_changes,
    confinement_refusal,
    link_stays_inside,
    parse_numstat,
    parse_raw,
    parse_raw_numstat,
    planned_changes,
    staging_refusal,
    unreadable_names,
    with_counts,
)
from shared.domain.policy import Policy

Z40 = "0" * 40
BLOB = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def plan(*entries: tuple[str, str] | tuple[str, str, str]) -> dict[str, Any]:
    files: list[dict[str, str]] = []
    for entry in entries:
        item = {"path": entry[0], "change": entry[1], "why": ""}
        if len(entry) == 3:
            item["from"] = entry[2]
        files.append(item)
    return {"design": "d", "files": files, "risks": [], "tests": []}


def added(path: str, mode: str = "100644", **kw: Any) -> IndexChange:
    return IndexChange("A", path, "000000", mode, BLOB, **kw)


def modified(path: str, old: str = "100644", new: str = "100644") -> IndexChange:
    return IndexChange("M", path, old, new, BLOB)


def deleted(path: str) -> IndexChange:
    return IndexChange("D", path, "100644", "000000", Z40)


def renamed(source: str, path: str) -> IndexChange:
    return IndexChange("R", path, "100644", "100644", BLOB, source)


def copied(source: str, path: str) -> IndexChange:
    return IndexChange("C", path, "100644", "100644", BLOB, source)


DEFAULT = Policy()


def rules(
    changes: list[IndexChange], approved: dict[str, Any], policy: Policy = DEFAULT
) -> list[str]:
    return [v.rule for v in check_changes(changes, approved, policy).violations]


def test_a_patch_that_does_exactly_what_the_plan_says_passes() -> None:
    approved = plan(("calc.py", "modify"), ("test_calc.py", "add"), ("old.md", "delete"))
    changes = [modified("calc.py"), added("test_calc.py"), deleted("old.md")]
    report = check_changes(changes, approved, Policy())
    assert report.violations == []
    assert report.untouched == ()


def test_a_patch_touching_a_path_the_plan_does_not_name_is_outside_the_plan() -> None:
    approved = plan(("README.md", "modify"))
    report = check_changes(
        [modified("README.md"), modified("calc.py"), added("test_evil.py")], approved, Policy()
    )
    [violation] = report.violations
    assert violation.rule == "outside_plan"
    assert violation.paths == ("calc.py", "test_evil.py")
    assert "calc.py, test_evil.py" in violation.detail


def test_a_patch_deleting_what_the_plan_says_to_modify_is_outside_the_plan() -> None:
    report = check_changes([deleted("calc.py")], plan(("calc.py", "modify")), Policy())
    [violation] = report.violations
    assert violation.rule == "outside_plan"
    assert violation.detail == "calc.py: the plan says modify, the patch did delete"


@pytest.mark.parametrize(
    ("said", "did"),
    [
        ("add", modified("x.py")),
        ("modify", added("x.py")),
        ("delete", added("x.py")),
        ("add", deleted("x.py")),
    ],
)
def test_every_kind_mismatch_is_outside_the_plan(said: str, did: IndexChange) -> None:
    assert rules([did], plan(("x.py", said))) == ["outside_plan"]


def test_a_planned_rename_matches_gits_rename_or_a_delete_and_an_add() -> None:
    approved = plan(("new.py", "rename", "old.py"))
    assert rules([renamed("old.py", "new.py")], approved) == []
    assert rules([deleted("old.py"), added("new.py")], approved) == []


def test_a_rename_matches_a_plan_that_deletes_the_source_and_adds_the_target() -> None:
    approved = plan(("old.py", "delete"), ("new.py", "add"))
    assert rules([renamed("old.py", "new.py")], approved) == []


def test_a_rename_the_plan_called_a_modification_is_outside_the_plan() -> None:
    report = check_changes([renamed("a.py", "b.py")], plan(("b.py", "modify")), Policy())
    assert [(v.rule, v.paths) for v in report.violations] == [
        ("outside_plan", ("a.py",)),
        ("outside_plan", ("b.py",)),
    ]


def test_a_rename_into_a_forbidden_path_is_caught_on_the_target_side() -> None:
    move = renamed("ci.yml", ".github/workflows/ci.yml")
    approved = plan((".github/workflows/ci.yml", "rename", "ci.yml"))
    report = check_changes([move], approved, Policy())
    assert [(v.rule, v.paths) for v in report.violations] == [
        ("forbidden_path", (".github/workflows/ci.yml",))
    ]


def test_a_rename_out_of_a_forbidden_path_is_caught_on_the_source_side() -> None:
    report = check_changes(
        [renamed(".env", "leak.txt")], plan(("leak.txt", "rename", ".env")), Policy()
    )
    assert [(v.rule, v.paths) for v in report.violations] == [("forbidden_path", (".env",))]


def test_a_copy_is_an_addition_and_both_its_sides_are_checked() -> None:
    assert rules([copied("calc.py", "calc2.py")], plan(("calc2.py", "add"))) == []
    assert rules([copied(".env", "env.txt")], plan(("env.txt", "add"))) == ["forbidden_path"]
    assert rules([copied("a.py", "b.py")], plan(("b.py", "modify"))) == ["outside_plan"]


def test_a_path_reaching_out_or_into_git_fails_confinement_before_anything_else() -> None:
    approved = plan(("../x", "add"), (".git/hooks/post-checkout", "add"))
    changes = [added("../x"), added(".git/hooks/post-checkout")]
    assert rules(changes, approved, Policy(forbidden_paths=())) == ["confinement", "confinement"]


def test_a_type_change_is_a_modification_and_a_new_symlink_is_judged_as_one() -> None:
    to_link = IndexChange("T", "calc.py", "100644", "120000", BLOB, link_target="/etc/passwd")
    assert rules([to_link], plan(("calc.py", "modify"))) == ["symlink"]
    to_file = IndexChange("T", "link", "120000", "100644", BLOB)
    assert rules([to_file], plan(("link", "modify"))) == []


def test_a_symlink_is_refused_by_default_even_if_it_points_inside() -> None:
    link = added("docs/link", "120000", link_target="../README.md", link_inside=True)
    report = check_changes([link], plan(("docs/link", "add")), Policy())
    [violation] = report.violations
    assert (violation.rule, violation.paths) == ("symlink", ("docs/link",))
    assert "does not allow symlinks" in violation.detail


def test_a_symlink_inside_the_worktree_passes_when_the_policy_allows_symlinks() -> None:
    link = added("docs/link", "120000", link_target="../README.md", link_inside=True)
    assert rules([link], plan(("docs/link", "add")), Policy(allow_symlinks=True)) == []


@pytest.mark.parametrize(
    "target", ["/etc/passwd", "../../etc", "../..", "a/../../..", ".git/config", ""]
)
def test_a_symlink_leading_out_is_refused_even_when_symlinks_are_allowed(target: str) -> None:
    link = added("link", "120000", link_target=target, link_inside=True)
    assert rules([link], plan(("link", "add")), Policy(allow_symlinks=True)) == ["symlink"]


def test_a_symlink_the_filesystem_resolves_outside_is_refused_whatever_its_text_says() -> None:
    link = added("link", "120000", link_target="chain", link_inside=False)
    assert rules([link], plan(("link", "add")), Policy(allow_symlinks=True)) == ["symlink"]


def test_the_lexical_link_check_resolves_relative_to_the_links_directory() -> None:
    assert link_stays_inside("a/b/link", "../c")
    assert link_stays_inside("a/link", "..")
    assert not link_stays_inside("a/link", "../..")
    assert not link_stays_inside("link", "/var/lib")


def test_a_submodule_gitlink_is_refused_on_either_side() -> None:
    gitlink = added("vendor/lib", "160000")
    assert rules([gitlink], plan(("vendor/lib", "add"))) == ["submodule"]
    dropped = IndexChange("D", "vendor/lib", "160000", "000000", Z40)
    assert rules([dropped], plan(("vendor/lib", "delete"))) == ["submodule"]


def test_new_executables_are_reported_and_refused_only_when_the_policy_says_so() -> None:
    changes = [
        added("run.sh", "100755"),
        modified("tool.py", "100644", "100755"),
        modified("x", "100755", "100755"),
    ]
    approved = plan(("run.sh", "add"), ("tool.py", "modify"), ("x", "modify"))
    report = check_changes(changes, approved, Policy())
    assert report.violations == []
    assert report.executables == ("run.sh", "tool.py")
    strict = check_changes(changes, approved, Policy(allow_new_executables=False))
    assert [(v.rule, v.paths) for v in strict.violations] == [("executable", ("run.sh", "tool.py"))]


def test_the_file_and_line_budgets_count_what_git_reports() -> None:
    changes = with_counts(
        [modified("a.py"), modified("b.py")], {"a.py": (3, 1), "b.py": (None, None)}
    )
    approved = plan(("a.py", "modify"), ("b.py", "modify"))
    report = check_changes(changes, approved, Policy(max_files=1, max_lines=3))
    assert [v.rule for v in report.violations] == ["max_files", "max_lines"]
    assert report.lines == 4


def test_a_patch_may_leave_planned_paths_alone_and_they_are_reported() -> None:
    approved = plan(("a.py", "modify"), ("b.py", "modify"), ("c.py", "rename", "d.py"))
    report = check_changes([modified("a.py")], approved, Policy())
    assert report.violations == []
    assert report.untouched == ("b.py", "c.py", "d.py")


def test_an_unexpected_git_status_fails_closed() -> None:
    odd = IndexChange("U", "a.py", "100644", "100644", BLOB)
    assert rules([odd], plan(("a.py", "modify"))) == ["unknown_change"]


def test_the_plan_entries_carry_a_renames_source() -> None:
    assert [(p.path, p.change, p.source) for p in planned_changes(plan(("b", "rename", "a")))] == [
        ("b", "rename", "a")
    ]


def test_gits_raw_and_numstat_records_are_parsed_with_both_sides_of_renames() -> None:
    raw = (
        f":100644 100644 {BLOB} {BLOB} M\0calc.py\0"
        f":100644 100644 {BLOB} {BLOB} R087\0ci.yml\0.github/workflows/ci.yml\0"
        f":000000 120000 {Z40} {BLOB} A\0link\0"
        f":100644 100644 {BLOB} {BLOB} C100\0a b.py\0c\tx.py\0"
    )
    changes = parse_raw(raw)
    assert [(c.status, c.source, c.path, c.new_mode) for c in changes] == [
        ("M", None, "calc.py", "100644"),
        ("R", "ci.yml", ".github/workflows/ci.yml", "100644"),
        ("A", None, "link", "120000"),
        ("C", "a b.py", "c\tx.py", "100644"),
    ]
    numstat = "\x00".join(
        ["2\t1\tcalc.py", "0\t0\t", "ci.yml", ".github/workflows/ci.yml", "-\t-\tlink", ""]
    )
    counts = parse_numstat(numstat)
    assert counts == {"calc.py": (2, 1), ".github/workflows/ci.yml": (0, 0), "link": (None, None)}


def test_an_empty_git_answer_is_no_change() -> None:
    assert parse_raw("") == []
    assert parse_numstat("") == {}


def test_hostile_paths_pass_through_the_nul_separated_records_verbatim() -> None:
    """With -z git neither quotes nor escapes: spaces, quotes, tabs, newlines, backslashes
    that look like octal escapes, a leading colon and a path named like /dev/null arrive
    as they are, and each record keeps its own paths."""
    hostile = ['a "quoted" name.py', "new\nline.txt", "caf\\303\\251.txt", ":colon", "dev/null"]
    raw = "".join(f":000000 100644 {Z40} {BLOB} A\0{p}\0" for p in hostile)
    raw += f":100644 100644 {BLOB} {BLOB} R100\0tab\there.py\0{hostile[0]}x\0"
    changes = parse_raw(raw)
    assert [(c.status, c.source, c.path) for c in changes] == [
        *[("A", None, p) for p in hostile],
        ("R", "tab\there.py", f"{hostile[0]}x"),
    ]
    numstat = "\0".join(
        [f"1\t0\t{hostile[0]}", "3\t2\tx\ty.py", "0\t0\t", "tab\there.py", f"{hostile[0]}x", ""]
    )
    assert parse_numstat(numstat) == {
        hostile[0]: (1, 0),
        "x\ty.py": (3, 2),
        f"{hostile[0]}x": (0, 0),
    }


def test_one_raw_and_numstat_answer_gives_each_change_its_counts() -> None:
    """``--raw --numstat -z`` in one process: the raw records, then the counts. A path
    read at its place is a path whatever it starts with (a colon, digits and tabs like a
    count), so neither section is mistaken for the other."""
    hostile = [":colon", "1\t2\tcount-like", "-\t-\tbinary-like"]
    raw = "".join(f":000000 100644 {Z40} {BLOB} A\0{p}\0" for p in hostile)
    raw += f":100644 100644 {BLOB} {BLOB} R090\0old.py\0:new.py\0"
    raw += f":100644 100644 {BLOB} {BLOB} M\0logo.png\0"
    numstat = "\0".join(
        [
            f"1\t0\t{hostile[0]}",
            f"2\t0\t{hostile[1]}",
            f"3\t0\t{hostile[2]}",
            "4\t1\t",
            "old.py",
            ":new.py",
            "-\t-\tlogo.png",
            "",
        ]
    )
    changes = parse_raw_numstat(raw + numstat)
    assert [(c.status, c.source, c.path, c.added, c.removed) for c in changes] == [
        ("A", None, ":colon", 1, 0),
        ("A", None, "1\t2\tcount-like", 2, 0),
        ("A", None, "-\t-\tbinary-like", 3, 0),
        ("R", "old.py", ":new.py", 4, 1),
        ("M", None, "logo.png", None, None),
    ]
    assert changes == with_counts(parse_raw(raw), parse_numstat(numstat))
    assert parse_raw_numstat("") == []


def _listing(paths: list[str]) -> str:
    raw = "".join(f":000000 100644 {Z40} {BLOB} A\0{p}\0" for p in paths)
    raw += f":100644 100644 {BLOB} {BLOB} R090\0old.py\0:new.py\0"
    return raw + "".join(f"1\t0\t{p}\0" for p in paths) + "4\t1\t\0old.py\0:new.py\0"


def _counted(listing: bytes, size: int) -> int:
    records = RawRecords()
    for at in range(0, len(listing), size):
        records.feed(listing[at : at + size])
    return records.count


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 16])
def test_raw_records_are_counted_whatever_paths_start_with_and_wherever_chunks_end(
    size: int,
) -> None:
    """A path starting with ``:`` looks like a record's head to a plain count; a
    rename's two paths are one record; a chunk may end anywhere, mid-head too."""
    listing = _listing([":colon", ":0:", "plain"])  # three adds and a rename: 4 records
    assert len(parse_raw_numstat(listing)) == 4
    assert _counted(listing.encode(), size) == 4


def test_nothing_listed_is_no_record() -> None:
    assert _counted(b"", 10) == 0


def test_a_listing_is_counted_as_it_arrives_without_being_held() -> None:
    """Held and parsed, 200,000 changes made 237 MB of objects before they could be
    counted; fed a chunk at a time, nothing of them is kept."""
    listing = _listing([f"n/{i}.md" for i in range(200_000)]).encode()
    tracemalloc.start()
    try:
        records = RawRecords()
        view = memoryview(listing)
        for at in range(0, len(listing), 1 << 16):
            records.feed(bytes(view[at : at + (1 << 16)]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert records.count == 200_001
    assert peak < 1 << 20, f"counting held {peak} bytes"


def test_a_raw_record_cut_short_in_the_combined_answer_is_an_error() -> None:
    with pytest.raises(ValueError, match="unexpected git --raw record"):
        parse_raw_numstat(":100644 100644\0a.py\0")
    with pytest.raises(IndexError):
        parse_raw_numstat(f":100644 100644 {BLOB} {BLOB} R100\0only-one-path")


def test_a_mode_change_and_a_binary_file_are_parsed_and_judged() -> None:
    raw = (
        f":100644 100755 {BLOB} {BLOB} M\0run.sh\0"
        f":000000 100644 {Z40} {BLOB} A\0logo.png\0"
        f":100644 120000 {BLOB} {BLOB} T\0docs\0"
    )
    counts = parse_numstat("\0".join(["0\t0\trun.sh", "-\t-\tlogo.png", "1\t0\tdocs", ""]))
    changes = with_counts(parse_raw(raw), counts)
    assert [(c.path, c.old_mode, c.new_mode, c.added) for c in changes] == [
        ("run.sh", "100644", "100755", 0),
        ("logo.png", "000000", "100644", None),
        ("docs", "100644", "120000", 1),
    ]
    approved = plan(("run.sh", "modify"), ("logo.png", "add"), ("docs", "modify"))
    report = check_changes(changes, approved, Policy(allow_new_executables=False))
    assert sorted(v.rule for v in report.violations) == ["executable", "symlink"]
    assert report.executables == ("run.sh",)


def test_a_record_without_a_status_fails_closed() -> None:
    with pytest.raises(ValueError, match="unexpected git --raw record"):
        parse_raw(f":100644 100644 {BLOB} {BLOB}\0x.py\0")


@pytest.mark.parametrize(
    "reason",
    [
        "error: invalid path '../escape.txt'",
        "error: affected file 'link/x' is beyond a symbolic link",
        "error: /etc/passwd: outside repository",
    ],
)
def test_git_refusing_where_a_patch_writes_is_a_confinement_violation(reason: str) -> None:
    found = confinement_refusal(reason)
    assert found is not None
    assert found.rule == "confinement"
    assert reason in found.detail


def test_a_patch_that_merely_does_not_apply_is_no_confinement_violation() -> None:
    assert (
        confinement_refusal("error: patch failed: calc.py:3\nerror: calc.py: patch does not apply")
        is None
    )


def test_git_refusing_to_stage_a_nested_repository_without_a_commit_is_a_submodule() -> None:
    said = "error: 'vendor/' does not have a commit checked out\nfatal: adding files failed"
    found = staging_refusal(said)
    assert found is not None
    assert found.rule == "submodule"
    assert "vendor/" in found.detail


def test_a_refusal_to_stage_a_path_out_of_the_worktree_stays_a_confinement() -> None:
    found = staging_refusal("error: invalid path '.GIT/config'")
    assert found is not None
    assert found.rule == "confinement"
    assert staging_refusal("fatal: unable to write new index file") is None


def test_a_name_git_gave_that_is_not_utf8_is_named_either_side_of_a_rename() -> None:
    changes = [
        IndexChange("A", "ok.txt", "000000", "100644", BLOB),
        IndexChange("A", "\ufffd.txt", "000000", "100644", BLOB),
        IndexChange("R", "new.txt", "100644", "100644", BLOB, source="old\ufffd.txt"),
    ]
    assert unreadable_names(changes) == ["old\ufffd.txt", "\ufffd.txt"]
    assert unreadable_names(changes[:1]) == []


def test_kodo_s_own_folder_is_forbidden_even_by_a_policy_that_replaces_the_defaults() -> None:
    only_secrets = Policy(forbidden_paths=("secrets/*",))
    rewrite = [modified(".kodo/policy.toml")]
    assert rules(rewrite, plan((".kodo/policy.toml", "modify")), only_secrets) == ["forbidden_path"]
    assert rules([added(".kodo")], plan((".kodo", "add")), only_secrets) == ["forbidden_path"]
    assert rules(
        [renamed(".kodo/policy.toml", "policy.toml")],
        plan(("policy.toml", "rename", ".kodo/policy.toml")),
        only_secrets,
    ) == ["forbidden_path"]


@pytest.mark.parametrize(
    ("coding", "refused"),
    [("unicode_escape", True), ("utf-7", True), ("?", True), ("utf-8", False), (None, False)],
)
def test_a_file_declaring_an_encoding_python_reads_otherwise_than_shown_is_refused(
    coding: str | None, refused: bool
) -> None:
    """An added or modified file, and a renamed one, whose first lines declare it."""
    for change in (added("calc.py"), renamed("notes.txt", "calc.py")):
        change = dataclasses.replace(change, coding=coding)
        approved = plan(("calc.py", "add"), ("notes.txt", "delete"))
        assert ("source_encoding" in rules([change], approved)) is refused
