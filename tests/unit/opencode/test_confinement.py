"""Path confinement: a turn whose tool parts name a path outside the worktree fails closed."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from shared.opencode.confinement import PATHS_JUDGED_MAX, patch_paths, violations
from shared.opencode.errors import OpenCodePermanentError
from shared.opencode.messages import PromptReply
from shared.opencode.turn_inspection import Turn, TurnRejected, assert_turn_rules


def _part(tool: str, status: str = "completed", **given: Any) -> dict[str, Any]:
    return {"type": "tool", "tool": tool, "state": {"status": status, "input": given}}


@pytest.fixture
def worktrees(tmp_path: Path) -> tuple[Path, Path]:
    """Two runs' worktrees side by side; run1 holds a symlink into run2."""
    run1, run2 = tmp_path / "ws" / "run1", tmp_path / "ws" / "run2"
    run1.mkdir(parents=True)
    run2.mkdir()
    os.symlink(run2, run1 / "link2")
    (run1 / ".git").write_text("gitdir: /elsewhere\n")
    return run1, run2


@pytest.mark.parametrize(
    "path",
    ["calc.py", "sub/new.py", "{wt}/README.md", "./a/../b.txt", "{wt}"],
    ids=["relative", "new-subdir", "absolute", "dots-inside", "the-root"],
)
def test_paths_inside_the_worktree_pass(worktrees: tuple[Path, Path], path: str) -> None:
    run1, _ = worktrees
    given = path.format(wt=run1)
    parts = [_part("write", filePath=given, content="x"), _part("read", filePath=given)]
    assert violations(str(run1), parts) == []


@pytest.mark.parametrize(
    ("tool", "given", "rule"),
    [
        ("write", {"filePath": "../run2/escape.txt"}, "PathOutsideWorktree"),
        ("edit", {"filePath": "{wt}/../run2/README.md"}, "PathOutsideWorktree"),
        ("write", {"filePath": "/etc/passwd"}, "PathOutsideWorktree"),
        ("write", {"filePath": "link2/via_link.txt"}, "PathOutsideWorktree"),
        ("write", {"filePath": "{wt}2/sibling-prefix.txt"}, "PathOutsideWorktree"),
        ("write", {"filePath": ".git/hooks/pre-commit"}, "GitMetadataForbidden"),
        ("edit", {"filePath": "sub/.git/config"}, "GitMetadataForbidden"),
        ("read", {"filePath": "../../secret.txt"}, "PathOutsideWorktree"),
        ("list", {"path": "/"}, "PathOutsideWorktree"),
        ("glob", {"pattern": "../**/*.json"}, "PathOutsideWorktree"),
        ("grep", {"pattern": "x", "path": "link2"}, "PathOutsideWorktree"),
        ("write", {"content": "no path"}, "ToolPathUnreadable"),
        ("edit", {"filePath": 7}, "ToolPathUnreadable"),
        ("apply_patch", {"patchText": "*** Begin Patch\n*** End Patch"}, "ToolPathUnreadable"),
        (
            "apply_patch",
            {"patchText": "*** Begin Patch\n*** Add File: ../run2/x.py\n+x\n*** End Patch"},
            "PathOutsideWorktree",
        ),
        ("write", {"filePath": "notes\x00.md"}, "ToolPathUnreadable"),
        ("read", {"filePath": "/etc/passwd\x00"}, "ToolPathUnreadable"),
        (
            "apply_patch",
            {"patchText": "*** Begin Patch\n*** Add File: a\x00b\n+x\n*** End Patch"},
            "ToolPathUnreadable",
        ),
    ],
    ids=[
        "dotdot-into-another-run",
        "absolute-dotdot",
        "absolute-elsewhere",
        "through-a-symlink",
        "a-sibling-sharing-the-prefix",
        "into-dot-git",
        "into-a-nested-dot-git",
        "read-outside",
        "list-root",
        "glob-climbing-out",
        "grep-through-a-symlink",
        "write-without-path",
        "edit-with-a-non-string-path",
        "patch-naming-no-file",
        "patch-adding-outside",
        "write-a-nul-name",
        "read-a-nul-path",
        "patch-a-nul-name",
    ],
)
def test_a_tool_part_naming_a_path_outside_or_in_git_breaks_a_named_rule(
    worktrees: tuple[Path, Path], tool: str, given: dict[str, Any], rule: str
) -> None:
    run1, _ = worktrees
    given = {k: v.format(wt=run1) if isinstance(v, str) else v for k, v in given.items()}
    found = violations(str(run1), [_part(tool, **given)])
    assert [v.rule for v in found] == [rule]


@pytest.mark.parametrize("status", ["completed", "error", "running", "pending"])
def test_the_parts_status_does_not_matter_a_denied_escape_is_still_one(
    worktrees: tuple[Path, Path], status: str
) -> None:
    run1, _ = worktrees
    found = violations(str(run1), [_part("write", status, filePath="/tmp/x")])  # noqa: S108
    assert [(v.rule, v.status) for v in found] == [("PathOutsideWorktree", status)]


def test_tools_without_paths_and_text_parts_are_not_judged(worktrees: tuple[Path, Path]) -> None:
    run1, _ = worktrees
    parts = [
        {"type": "text", "text": "../../etc/passwd"},
        _part("StructuredOutput", files=[{"path": "../x"}]),
        {"type": "tool", "tool": "invalid", "state": {"input": {"tool": "bash"}}},
        _part("glob", pattern="**/*.py"),
    ]
    assert violations(str(run1), parts) == []


def test_patch_paths_reads_every_header_of_an_apply_patch_text() -> None:
    text = (
        "*** Begin Patch\n*** Add File: a.py\n+x\n*** Update File: b.py\n*** Move to: c.py\n"
        "@@\n-x\n+y\n*** Delete File: d.py\n*** End Patch\n"
    )
    assert patch_paths(text) == ["a.py", "b.py", "c.py", "d.py"]


PROMPT = "msg_000000000000kodoprompt01"


def _reply(*parts: dict[str, Any], parent: str = PROMPT) -> PromptReply:
    return PromptReply(info={"id": "msg_1", "parentID": parent}, parts=list(parts))


def test_the_call_wrapper_rule_fails_a_turn_that_wrote_outside_in_an_earlier_message(
    worktrees: tuple[Path, Path],
) -> None:
    run1, run2 = worktrees
    escape = {"parts": [_part("write", "error", filePath=str(run2 / "x.txt"))]}
    turn = Turn(earlier=[escape], children=[])
    with pytest.raises(TurnRejected) as rejected:
        assert_turn_rules("build", "ses_1", _reply(), turn, directory=str(run1), prompt_id=PROMPT)
    assert rejected.value.error_name == "PathOutsideWorktree"
    assert str(run2 / "x.txt") in str(rejected.value)


def test_the_call_wrapper_rule_passes_a_turn_that_edited_inside(
    worktrees: tuple[Path, Path],
) -> None:
    run1, _ = worktrees
    edit = {"parts": [_part("edit", filePath=str(run1 / "calc.py"), oldString="a")]}
    turn = Turn(earlier=[edit], children=[])
    assert_turn_rules("build", "ses_1", _reply(), turn, directory=str(run1), prompt_id=PROMPT)


def test_an_agent_without_the_tool_is_told_so_before_its_path_is_judged(
    worktrees: tuple[Path, Path],
) -> None:
    run1, _ = worktrees
    turn = Turn(earlier=[{"parts": [_part("write", filePath="/x")]}], children=[])
    with pytest.raises(TurnRejected) as rejected:
        assert_turn_rules("plan", "ses_1", _reply(), turn, directory=str(run1), prompt_id=PROMPT)
    assert rejected.value.error_name == "ToolNotAllowed"


def test_an_answer_to_another_prompt_than_kodos_is_refused_before_its_tools_are_read(
    worktrees: tuple[Path, Path],
) -> None:
    """The daemon's answer names the user message it answers: one kodo did not send
    (the daemon continued the turn on its own) cannot be judged by kodo's rules."""
    run1, _ = worktrees
    turn = Turn(earlier=[], children=[])
    reply = _reply(parent="msg_23925bfb3000Sq2uPlJnobRy5Y")
    with pytest.raises(TurnRejected) as rejected:
        assert_turn_rules("plan", "ses_1", reply, turn, directory=str(run1), prompt_id=PROMPT)
    assert rejected.value.error_name == "TurnNotInspectable"
    assert "not kodo's prompt" in str(rejected.value)


def test_an_answer_that_escapes_is_refused_for_it_even_when_the_rest_of_its_turn_is_unread(
    worktrees: tuple[Path, Path],
) -> None:
    """A turn too long to read (more pages than kodo reads) is not inspectable; but an
    escape in the answer itself is seen, and refused as the escape it is (fatal), not
    retried as a turn kodo could not read."""
    run1, run2 = worktrees
    unread = OpenCodePermanentError("the turn has more messages than kodo reads")
    turn = Turn(earlier=unread, children=[])
    reply = _reply(_part("write", "completed", filePath=str(run2 / "x.txt")))
    with pytest.raises(TurnRejected) as rejected:
        assert_turn_rules("build", "ses_1", reply, turn, directory=str(run1), prompt_id=PROMPT)
    assert rejected.value.error_name == "PathOutsideWorktree"
    clean = _reply(_part("edit", "completed", filePath=str(run1 / "calc.py"), oldString="a"))
    with pytest.raises(TurnRejected) as rejected:
        assert_turn_rules("build", "ses_1", clean, turn, directory=str(run1), prompt_id=PROMPT)
    assert rejected.value.error_name == "TurnNotInspectable"


@pytest.mark.parametrize(
    "given",
    ["a/" * 400_000 + "x.txt", "{wt}/" + "b" * 256, "x/../" * 1000 + "ok.txt"],
    ids=["800-kB-of-parts", "a-part-past-NAME_MAX", "past-PATH_MAX-however-it-collapses"],
)
def test_a_path_no_call_can_open_is_refused_before_any_walk(
    worktrees: tuple[Path, Path], given: str
) -> None:
    """Resolving an 800 kB name walked it in Python, quadratic in its length: a minute
    of a worker's CPU per attempt (red-team helper-126). No file can be opened by such a
    name (ENAMETOOLONG, the daemon's tools included), so it is refused unread."""
    run1, _ = worktrees
    started = time.process_time()
    found = violations(str(run1), [_part("edit", filePath=given.format(wt=run1))])
    assert [v.rule for v in found] == ["ToolPathUnreadable"]
    assert time.process_time() - started < 0.5


def test_a_long_path_a_call_can_open_is_judged_as_any_other(worktrees: tuple[Path, Path]) -> None:
    run1, _ = worktrees
    deep = "d/" * 1500 + "x.py"  # 3 kB: under PATH_MAX with the worktree's own path
    assert violations(str(run1), [_part("write", filePath=deep, content="x")]) == []
    outside = "d/" * 500 + "../" * 502 + "escape.txt"  # 2.5 kB, climbing out
    assert [v.rule for v in violations(str(run1), [_part("write", filePath=outside)])] == [
        "PathOutsideWorktree"
    ]


def test_a_turn_naming_more_paths_than_any_turn_needs_is_refused_not_judged(
    tmp_path: Path,
) -> None:
    text = "".join(f"*** Add File: f{i}.txt\n" for i in range(PATHS_JUDGED_MAX + 5))
    found = violations(str(tmp_path), [_part("apply_patch", patchText=text)])
    assert [v.rule for v in found] == ["ToolPathUnreadable"]
    assert f"more than {PATHS_JUDGED_MAX} paths" in found[0].path
    within = "".join(f"*** Add File: f{i}.txt\n" for i in range(PATHS_JUDGED_MAX))
    assert violations(str(tmp_path), [_part("apply_patch", patchText=within)]) == []
