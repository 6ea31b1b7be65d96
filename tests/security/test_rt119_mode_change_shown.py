"""A mode change the patch makes is shown on the run page (red-team helper-119).

The plan says ``modify README.md``. The build agent's only change is
``chmod +x README.md`` (git: ``old mode 100644`` / ``new mode 100755``), and a new file
``tool.sh`` planned as ``add`` lands as ``new file mode 100755``. The policy's default
``allow_new_executables = true`` lets both through, ApplyPatchST commits them, and the
run succeeds. What the approver reads on the run page's diff: ``README.md modified,
No text lines (modified).`` and ``tool.sh added``: the page's diff reader
(``services/api/diff_view.py`` ``_meta``) drops the ``old mode`` / ``new mode`` /
``new file mode`` lines, so the executable bit the branch carries is shown nowhere
(``kodo run diff`` prints the raw lines, the page does not).

Safe outcome: the page names each file's mode change (``100644 → 100755``, or
"executable"), so what is shown is what is committed.
"""

from __future__ import annotations

import re

import pytest

from tests.security import attacks
from tests.security.harness import Hostile

pytestmark = pytest.mark.security

MODE_ONLY = "diff --git a/README.md b/README.md\nold mode 100644\nnew mode 100755\n"


@pytest.fixture(scope="module")
def succeeded(hostile: Hostile) -> str:
    fixture = hostile.fixture(
        "rt119-mode",
        plan=attacks.plan(("README.md", "modify"), ("tool.sh", "add")),
        patch=attacks.patch(MODE_ONLY, attacks.add_file("tool.sh", "echo hello\n", mode="100755")),
        build=attacks.build("python3", "-c", "print('ok')"),
    )
    outcome = hostile.drive(hostile.repo("rt119-mode"), fixture)
    assert outcome.status == "succeeded", outcome.describe()
    patch = outcome.artifact("patch.diff") or b""
    assert b"new mode 100755" in patch, patch
    assert b"new file mode 100755" in patch, patch
    return str(outcome.run["runId"])


def _file_section(page: str, name: str) -> str:
    found = re.search(
        r'<div class="file" id="file-1-\d+">\s*<h3 class="mono">'
        + re.escape(name)
        + r"(.*?)</div>",
        page,
        re.S,
    )
    assert found is not None, page[page.find('id="diff"') :][:3000]
    return found.group(0)


def test_the_run_page_shows_a_chmod_the_patch_made(hostile: Hostile, succeeded: str) -> None:
    with hostile.signed_in() as browser:
        page = browser.get(f"/ui/runs/{succeeded}").text

    section = _file_section(page, "README.md")
    assert "100755" in section or "executable" in section, section


def test_the_run_page_shows_a_new_file_is_executable(hostile: Hostile, succeeded: str) -> None:
    with hostile.signed_in() as browser:
        page = browser.get(f"/ui/runs/{succeeded}").text

    section = _file_section(page, "tool.sh")
    assert "100755" in section or "executable" in section, section


def test_kodo_run_show_names_the_chmod_in_its_diffstat(hostile: Hostile, succeeded: str) -> None:
    """``kodo run show``'s diffstat draws the chmod as `` README.md | +0 -0``: the same
    silence on the CLI's summary of the change (``kodo run diff`` prints the raw lines)."""
    shown = hostile.kodo("run", "show", succeeded)
    assert shown.returncode == 0, shown.stderr
    [row] = [line for line in shown.stdout.splitlines() if "README.md" in line and "|" in line]

    assert "100755" in row or "executable" in row or "mode" in row, shown.stdout


BINARY_EXECUTABLE = (
    "diff --git a/run.sh b/run.sh\nnew file mode 100755\n"
    "index 0000000000000000000000000000000000000000..e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\n"
    "GIT binary patch\nliteral 10\nRcmZ?wbmBFZ<&ju3003Z10{{R3\n\nliteral 0\nHcmV?d00001\n\n"
)


def test_kodo_run_show_says_a_file_is_binary_and_executable() -> None:
    """``kodo run show``'s diffstat draws a new executable whose content git shows as a
    base85 binary patch as `` run.sh | +0 -0``: neither "binary" (the run page says it)
    nor its mode. Safe: the row says both."""
    from services.cli.review_views import diffstat, diffstat_lines

    [row, _total] = diffstat_lines(diffstat(BINARY_EXECUTABLE))

    assert "binary" in row.lower(), row
    assert "100755" in row or "executable" in row, row
