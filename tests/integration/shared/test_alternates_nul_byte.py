"""An alternates file holding a NUL byte is refused naming rule git_dir, not a crash
(red-team helper-115 on helper-114's ``_alternate_entries``).

git reads objects/info/alternates into a C string (strbuf_read_file, then
link_alt_odb_entries walks it to the first NUL): ``/elsewhere/objects`` NUL ``junk``
borrows ``/elsewhere/objects``. kodo's scanner keeps the NUL in the entry and
``os.path.realpath`` raises ``ValueError: embedded null byte``: the submit's
``resolve_repo`` (and CompileST's re-check) end in an unhandled exception instead of the
``git_dir`` refusal the rule promises ("fail closed with a diagnostic naming the rule").
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shared.errors import InvalidInput
from shared.git_dir import alternates_refusal
from shared.service.runs import resolve_repo
from tests.outside_roots import elsewhere


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture
def borrowing(tmp_path: Path) -> tuple[Path, Path, Path]:
    found = elsewhere(tmp_path)
    inside, victim = found.inside, found.victim
    repo = inside / "repo"
    _git(tmp_path, "init", "-q", str(repo))
    (repo / ".git" / "objects" / "info" / "alternates").write_bytes(
        str(victim / ".git" / "objects").encode() + b"\0junk\n"
    )
    secret = found.secret
    shown = _git(repo, "cat-file", "-p", secret)  # git borrows up to the NUL
    assert "elsewhere-secret" in shown.stdout, shown.stderr
    return inside, repo, victim


def test_alternates_with_a_nul_byte_are_refused_by_rule(borrowing: tuple[Path, Path, Path]) -> None:
    inside, repo, _ = borrowing
    why = alternates_refusal(repo / ".git", (inside,))  # (had raised "embedded null byte")
    assert why is not None
    assert why.startswith("git_dir: ")


def test_the_submit_refuses_it_as_a_bad_repository(borrowing: tuple[Path, Path, Path]) -> None:
    inside, repo, _ = borrowing
    with pytest.raises(InvalidInput) as refused:  # a 400, never a ValueError's 500
        resolve_repo(str(repo), (inside,))
    assert "git_dir" in str(refused.value.details), refused.value.details
