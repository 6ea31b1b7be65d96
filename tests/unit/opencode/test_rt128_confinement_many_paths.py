"""Judging a turn's tool paths costs time bounded by the answer's bytes at a small
constant, not a Python walk per path component (red-team helper-128).

helper-126 bounded ONE path (past PATH_MAX it is refused on its text). Under PATH_MAX a
path may still hold ~2 000 components (``a/a/a/.../x``, 4 kB), and ``violations``
resolves each tool part's path twice with ``os.path.realpath``: a Python loop with an
``lstat`` per component. A build turn's parts may name such a path over and over (the
daemon records every ``read``; 8 MiB of answer is ~2 000 of them):

* paths that do not exist: 200 parts (815 kB) cost 2.0 s of CPU, so ~20 s per 8 MiB;
* a 1 990-deep folder the same turn wrote into its own worktree (a ``write`` to
  ``a/a/.../x``): each ``lstat`` walks the whole prefix again in the kernel, 20 parts
  cost 3.9 s, so ~390 s per 8 MiB answer, once per attempt, GIL held between calls.

What holds once fixed: either variant refuses or passes within two seconds.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from shared.opencode.confinement import violations

DEPTH = 1900
PATH = "a/" * DEPTH + "x"  # 3 801 bytes (and a number): under PATH_MAX, every part under NAME_MAX
MAX_CPU_S = 2.0


def _reads(count: int) -> list[dict[str, object]]:
    return [
        {
            "type": "tool",
            "tool": "read",
            "state": {"status": "completed", "input": {"filePath": f"{PATH}{i}"}},
        }
        for i in range(count)  # distinct: a cache of judged paths is not the fix
    ]


@pytest.mark.parametrize(("deep_folder", "count"), [(False, 800), (True, 100)])
def test_many_deep_tool_paths_are_judged_in_bounded_time(
    tmp_path: Path, deep_folder: bool, count: int
) -> None:
    root = tmp_path / "worktree"
    root.mkdir()
    try:
        if deep_folder:  # what a write in the same turn leaves behind
            subprocess.run(["mkdir", "-p", "a/" * DEPTH], cwd=root, check=True)
        started = time.process_time()
        violations(str(root), _reads(count))
        cpu = time.process_time() - started
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=True)
    assert cpu < MAX_CPU_S, (
        f"{count} tool parts naming {len(PATH)}-byte paths (deep folder: {deep_folder})"
        f" cost {cpu:.1f} s of CPU to judge"
    )


def test_a_patch_text_naming_many_files_is_judged_in_bounded_time(tmp_path: Path) -> None:
    """One ``apply_patch`` part whose text names 60 000 files (2.2 MB, a quarter of the
    answer cap): each header's path is resolved twice in Python (~4 s; ~16 s at 8 MiB)."""
    text = "".join(f"*** Add File: d/d/d/d/d/d/d/d/f{i}\n" for i in range(60_000))
    part = {
        "type": "tool",
        "tool": "apply_patch",
        "state": {"status": "completed", "input": {"patchText": text}},
    }
    started = time.process_time()
    violations(str(tmp_path), [part])
    cpu = time.process_time() - started
    assert cpu < MAX_CPU_S, f"a patch text naming 60 000 files cost {cpu:.1f} s of CPU to judge"
