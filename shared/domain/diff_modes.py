"""What a ``git diff``'s mode lines say of a file, in words an approver reads.

A patch's ``old mode 100644`` / ``new mode 100755`` lines (and ``new file mode
100755``) change what the branch carries as surely as its hunks: a ``chmod +x`` alone
has no line to show, and the run page drew it as "README.md +0 -0, no text lines", the
CLI's diffstat as ``README.md | +0 -0`` (red-team helper-119). Both readers feed their
meta lines here and show the note beside the file.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = {"100755": "executable", "120000": "symlink", "160000": "submodule"}
"""Modes other than a plain file's (100644), by what they make of it."""


@dataclass
class FileModes:
    """The mode lines of one file of a diff, fed in order."""

    old: str | None = None
    new: str | None = None
    added: bool = False
    binary: bool = False

    def feed(self, line: str) -> bool:
        """Read ``line`` if it is a mode (or binary) line; whether it was one."""
        if line.startswith("new file mode "):
            self.added, self.new = True, line.removeprefix("new file mode ").strip()
        elif line.startswith("old mode "):
            self.old = line.removeprefix("old mode ").strip()
        elif line.startswith("new mode "):
            self.new = line.removeprefix("new mode ").strip()
        elif line.startswith("Binary files") or line == "GIT binary patch":
            self.binary = True
        else:
            return False
        return True

    @property
    def note(self) -> str | None:
        """What the file's modes make of it, when that is not a plain file's: ``mode
        100644 → 100755 (executable)``, ``new file mode 100755 (executable)``."""
        if self.added and self.new in KINDS:
            return f"new file mode {self.new} ({KINDS[self.new]})"
        if self.old is None or self.new is None or self.old == self.new:
            return None
        kind = KINDS.get(self.new, "not executable" if self.old == "100755" else "")
        return f"mode {self.old} → {self.new}" + (f" ({kind})" if kind else "")
