"""A diff's mode lines, said in words beside the file they change."""

from __future__ import annotations

import pytest

from shared.domain.diff_modes import FileModes


def _note(*lines: str) -> FileModes:
    modes = FileModes()
    for line in lines:
        modes.feed(line)
    return modes


@pytest.mark.parametrize(
    ("lines", "note"),
    [
        (("old mode 100644", "new mode 100755"), "mode 100644 → 100755 (executable)"),
        (("old mode 100755", "new mode 100644"), "mode 100755 → 100644 (not executable)"),
        (("old mode 100644", "new mode 120000"), "mode 100644 → 120000 (symlink)"),
        (("new file mode 100755",), "new file mode 100755 (executable)"),
        (("new file mode 120000",), "new file mode 120000 (symlink)"),
        (("new file mode 160000",), "new file mode 160000 (submodule)"),
        (("new file mode 100644",), None),
        (("deleted file mode 100755",), None),
        (("index 1234567..89abcde 100644",), None),
    ],
)
def test_a_mode_other_than_a_plain_files_is_said(lines: tuple[str, ...], note: str | None) -> None:
    assert _note(*lines).note == note


def test_only_mode_and_binary_lines_are_read() -> None:
    modes = FileModes()
    assert modes.feed("GIT binary patch")
    assert modes.binary
    assert not modes.feed("index 1234567..89abcde 100644")
    assert not modes.feed("--- a/x")
