"""Red-team helper-110: kodo reads an apply_patch text's headers as opencode 1.18.33 does.

The daemon (``Patch.parse``) splits on ``\\n`` only and JS-``trim()``s each header's
path (stripping ``\\r``, ``\\v``, ``\\f``, ``\\u2028``, ``\\u2029``, ``\\ufeff`` and the
Unicode spaces). ``confinement.patch_paths`` uses ``str.splitlines`` and ``str.strip``,
so a path behind one of those characters is a different path (or none) to kodo.
"""

from __future__ import annotations

import pytest

from shared.opencode.confinement import violations

ROOT = "/ws/run-a"
OTHER = "/ws/run-b/README.md"


def _part(patch: str) -> dict[str, object]:
    return {
        "type": "tool",
        "tool": "apply_patch",
        "state": {"status": "completed", "input": {"patchText": patch}},
    }


@pytest.mark.parametrize(
    "spelling",
    ["\r", "\v", "\f", "\u2028", "\u2029", "\ufeff", "\u00a0\r"],
    ids=["cr", "vt", "ff", "line-sep", "para-sep", "bom", "nbsp-cr"],
)
@pytest.mark.parametrize("header", ["*** Add File: ", "*** Delete File: ", "*** Move to: "])
def test_a_patch_header_the_daemon_reads_as_another_runs_file_is_outside(
    header: str, spelling: str
) -> None:
    patch = "\n".join(
        [
            "*** Begin Patch",
            "*** Update File: calc.py" if header == "*** Move to: " else "",
            f"{header}{spelling}{OTHER}",
            "+x",
            "*** End Patch",
        ]
    )
    found = violations(ROOT, [_part(patch)], resolve=lambda p: p)
    assert [(v.rule, v.path) for v in found] == [("PathOutsideWorktree", OTHER)], found


def test_a_patch_header_naming_nothing_is_unreadable() -> None:
    patch = "*** Begin Patch\n*** Add File: \u3000\n+x\n*** End Patch"
    found = violations(ROOT, [_part(patch)], resolve=lambda p: p)
    assert [v.rule for v in found] == ["ToolPathUnreadable"]


def test_where_the_daemon_says_a_patch_wrote_is_judged_too() -> None:
    part = _part("*** Begin Patch\n*** Add File: ok.txt\n+x\n*** End Patch")
    state = part["state"]
    assert isinstance(state, dict)
    state["metadata"] = {"files": [{"filePath": f"{ROOT}/ok.txt", "movePath": OTHER}]}
    found = violations(ROOT, [part], resolve=lambda p: p)
    assert [(v.rule, v.path) for v in found] == [("PathOutsideWorktree", OTHER)]
