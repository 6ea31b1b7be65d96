"""objects/info/alternates read as git reads it (red-team helper-114 on helper-111's fix).

git's parse_alt_odb_entry unquotes a line starting with ``"`` with unquote_c_style,
which stops only at a ``"`` or a backslash: a quoted entry may span a line feed. After
its closing quote git skips one character, whatever it is, and the next entry starts
there. kodo splits the file at line feeds first, so ``"foo`` LF ``"X/elsewhere/objects``
is, to kodo, two broken quotes read literally (relative names under the borrowing
objects folder, inside the roots), and to git the store ``objects/foo<LF>`` (missing,
skipped) then ``/elsewhere/objects``: a store outside the roots, borrowed.

And kodo follows every entry of every file without git's deduplication
(alt_odb_usable): a file naming its own store ``.`` n times is read n**5 times.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from shared.git_dir import alternates_refusal
from tests.outside_roots import elsewhere


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def test_a_quoted_entry_spanning_a_line_feed_is_read_as_git_reads_it(tmp_path: Path) -> None:
    """Rule git_dir: every store git borrows from lies under KODO_REPO_ROOTS."""
    found = elsewhere(tmp_path)
    inside, victim = found.inside, found.victim
    secret = found.secret
    repo = inside / "repo"
    _git(tmp_path, "init", "-q", str(repo))
    alternates = repo / ".git" / "objects" / "info" / "alternates"
    alternates.write_bytes(b'"foo\n"X' + str(victim / ".git" / "objects").encode() + b"\n")

    shown = _git(repo, "cat-file", "-p", secret)  # git itself borrows from outside
    assert "elsewhere-secret" in shown.stdout, shown.stderr

    why = alternates_refusal(repo / ".git", (inside,))
    assert why is not None, f"git reads {secret} from {victim} through {alternates.read_bytes()!r}"
    assert why.startswith("git_dir: ")


def test_a_store_named_many_times_is_read_once(tmp_path: Path) -> None:
    """Rule git_dir answers at once: a submit (the API's request) or a compile step must
    not spin on a 64 KiB alternates file (git reads each store once)."""
    inside = tmp_path / "roots"
    repo = inside / "repo"
    inside.mkdir()
    _git(tmp_path, "init", "-q", str(repo))
    (repo / ".git" / "objects" / "info" / "alternates").write_text(".\n" * 20)
    done: list[str | None] = []
    worker = threading.Thread(
        target=lambda: done.append(alternates_refusal(repo / ".git", (inside,))), daemon=True
    )
    worker.start()
    worker.join(timeout=5)
    assert done, "alternates_refusal still reading after 5 s (20 lines of '.': 20**5 reads)"
