"""`kodo demo` shows the run's branch (``git log -p``) with every unsafe character
escaped: each added line of the patch is the agent's (a red-team pass found it printed
raw, so a terminal obeyed the agent's escapes: a forged green "All tests passed", a
hidden link, text reordered by bidi overrides)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import click
from click.testing import CliRunner

from services.cli import demo

HOSTILE = "ok\x1b[2K\x1b[32mAll tests passed\x1b[0m \u202egnp.exe\u202c \x1b]8;;http://evil/\x07x"


def _git(repo: Path, *args: str) -> None:
    ident = ("-c", "user.name=t", "-c", "user.email=t@t")
    subprocess.run(["git", "-C", str(repo), *ident, *args], check=True, capture_output=True)


def test_the_branch_is_shown_with_the_agents_escapes_made_visible(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "base")
    _git(repo, "checkout", "-q", "-b", "kodo/run")
    (repo / "README.md").write_text(HOSTILE + "\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-q", "-m", "kodo: goal")

    @click.command()
    def show() -> None:
        demo._print_branch(repo, "kodo/run")

    out = CliRunner().invoke(show, color=True).output
    assert "All tests passed" in out
    assert [c for c in ("\x1b[2K", "\x07", "\u202e", "\x1b]8") if c in out] == [], repr(out)
    assert "\\x1b[2K" in out  # shown, as its escape
