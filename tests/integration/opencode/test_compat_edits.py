"""oc-compat's build agent performs a scripted diff as the daemon's edit tools would:
all files in one ``git apply`` when they all land, file by file when one is refused, so
each refusal names its file and the files before it stay written. Real git on a temp dir.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from standins.oc_compat.edits import ToolUse, perform

pytestmark = pytest.mark.integration

TWO_FILES = """\
diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1 +1,2 @@
 A = 1
+B = 2
diff --git a/test_calc.py b/test_calc.py
new file mode 100644
--- /dev/null
+++ b/test_calc.py
@@ -0,0 +1 @@
+import calc
"""

INTO_GIT = """\
diff --git a/.git/hooks/post-checkout b/.git/hooks/post-checkout
new file mode 100755
--- /dev/null
+++ b/.git/hooks/post-checkout
@@ -0,0 +1 @@
+#!/bin/sh
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "calc.py").write_text("A = 1\n")
    return tmp_path


def _summary(uses: list[ToolUse]) -> list[tuple[str, str, bool, str]]:
    return [(u.tool, Path(u.path).name, u.ok, u.output) for u in uses]


def test_a_diff_that_lands_whole_reports_each_file_as_applied_alone(repo: Path) -> None:
    together = perform(repo, TWO_FILES)
    written = {p: (repo / p).read_text() for p in ("calc.py", "test_calc.py")}

    (repo / "test_calc.py").unlink()
    (repo / "calc.py").write_text("A = 1\n")
    one_by_one = perform(repo, TWO_FILES, pause=lambda _i: False)

    assert (
        _summary(together)
        == _summary(one_by_one)
        == [
            ("edit", "calc.py", True, "Edit applied successfully."),
            ("write", "test_calc.py", True, "Edit applied successfully."),
        ]
    )
    assert written == {p: (repo / p).read_text() for p in ("calc.py", "test_calc.py")}
    assert written == {"calc.py": "A = 1\nB = 2\n", "test_calc.py": "import calc\n"}


def test_a_refused_file_is_named_and_the_others_still_land(repo: Path) -> None:
    uses = perform(repo, TWO_FILES + INTO_GIT)

    assert [(u.tool, Path(u.path).name, u.ok) for u in uses] == [
        ("edit", "calc.py", True),
        ("write", "test_calc.py", True),
        ("write", "post-checkout", False),
    ]
    assert uses[2].output.startswith("Error: ")
    assert (repo / "calc.py").read_text() == "A = 1\nB = 2\n"
    assert not (repo / ".git" / "hooks" / "post-checkout").exists()
