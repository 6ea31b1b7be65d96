"""Bounded everything: output, answers, processes and time cannot exhaust the worker.

Each memory test starts a fresh worker, so its high-water mark (VmHWM) measures that
attack alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from devstack.sample_repo import FILES
from shared.config import Settings
from tests.security import attacks
from tests.security.harness import (
    EXEC_TIMEOUT_S,
    MARK,
    WORKTREE_BYTES,
    Hostile,
    Outcome,
    assert_fails_closed,
    script_attack,
)

pytestmark = pytest.mark.security

README = FILES["README.md"]
MB = 1024 * 1024


def test_300_mb_of_command_output_leaves_worker_memory_bounded(hostile: Hostile) -> None:
    hostile.fresh_worker()
    before = hostile.worker_peak_rss_mb()
    fixture = hostile.fixture(
        "flood",
        plan=attacks.plan(("README.md", "modify")),
        patch=attacks.patch(attacks.append_lines("README.md", README, ["", "More."])),
        build=attacks.build(
            "python3",
            "-c",
            "import sys\nfor _ in range(300): sys.stdout.buffer.write(b'y' * 2**20)",
        ),
    )
    outcome = hostile.drive(hostile.repo("flood"), fixture)
    grew = hostile.worker_peak_rss_mb() - before
    assert grew < 100, f"the worker grew {grew:.0f} MB for 300 MB of output"
    output = outcome.artifact("command-output.txt") or b""
    assert len(output) <= MB, f"{len(output)} bytes of output kept"


def test_a_30_mb_off_schema_plan_is_refused_with_memory_bounded(hostile: Hostile) -> None:
    hostile.fresh_worker()
    before = hostile.worker_peak_rss_mb()
    huge = {"design": "x" * (30 * MB), "files": "everything", "risks": [], "tests": []}
    outcome = hostile.drive(hostile.repo("huge-plan"), hostile.fixture("huge-plan", plan=huge))
    grew = hostile.worker_peak_rss_mb() - before
    assert outcome.status == "failed", outcome.describe()
    assert grew < 150, f"the worker grew {grew:.0f} MB for a 30 MB answer"
    diagnostic = outcome.artifact("diagnostic.json") or b""
    assert len(diagnostic) <= MB, f"diagnostic.json holds {len(diagnostic)} bytes"


def test_a_fork_bomb_is_stopped_and_leaves_nothing_running(hostile: Hostile) -> None:
    marker = f"{MARK}-bomb-{hostile.nonce}"
    started = time.monotonic()
    outcome = script_attack(hostile, "bomb", attacks.FORK_BOMB, args=(marker,), forks=1500)
    assert time.monotonic() - started < 90
    output = outcome.command_output()
    forked = [int(line.split()[1]) for line in output.splitlines() if line.startswith("FORKED")]
    assert (forked and forked[0] < 1500) or "FORK-REFUSED" in output, outcome.describe()
    deadline = time.monotonic() + 3
    while hostile.attack_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert hostile.attack_pids(marker) == [], "forked processes outlived the command"


def test_a_command_cannot_lift_the_limits_it_was_given(hostile: Hostile) -> None:
    """The verification command tries to raise every rlimit to unlimited and to write
    past the file-size bound (a sparse byte, so no disk is spent): each limit stays at
    the settings' value, soft and hard, whichever way the worker set it (prlimit(2) on
    the sandbox's first process as root, the prlimit program otherwise)."""
    outcome = script_attack(hostile, "limits", attacks.LIFT_LIMITS)
    output = outcome.command_output()
    settings = Settings()
    expected = {
        "CPU": settings.exec_cpu_s,
        "AS": settings.exec_memory_bytes,
        "NPROC": settings.exec_nproc,
        "FSIZE": settings.exec_fsize_bytes,
        "CORE": 0,
    }
    kept = {
        parts[1]: (int(parts[2]), int(parts[3]))
        for parts in (line.split() for line in output.splitlines())
        if parts and parts[0] == "KEPT"
    }
    assert "LIFTED" not in output, outcome.describe()
    assert kept == {name: (value, value) for name, value in expected.items()}, output
    assert "FSIZE-REFUSED EFBIG" in output, outcome.describe()
    assert "WROTE-PAST-FSIZE" not in output


def test_a_command_that_never_ends_is_killed_with_its_whole_tree(hostile: Hostile) -> None:
    marker = f"{MARK}-forever-{hostile.nonce}"
    started = time.monotonic()
    outcome = script_attack(hostile, "forever", attacks.NEVER_ENDS, marker=marker)
    took = time.monotonic() - started
    assert outcome.status == "failed", outcome.describe()
    assert "timed out" in str(outcome.run.get("error")), outcome.describe()
    assert took < EXEC_TIMEOUT_S + 30, f"the run took {took:.0f}s with a {EXEC_TIMEOUT_S}s timeout"
    assert hostile.attack_pids(marker) == [], "the command's child outlived the timeout"


def _count(label: str, output: str) -> int:
    found = re.search(rf"^{label} (\d+)$", output, re.MULTILINE)
    assert found is not None, output
    return int(found.group(1))


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root worker's sandbox mounts the overlay")
def test_a_command_filling_its_worktree_cannot_fill_the_hosts_disk(hostile: Hostile) -> None:
    """The verification command writes 4x its worktree bound in 1 MB files, then a
    hundred thousand empty files: it stops at ENOSPC within the bound, and none of it
    reaches the host's worktree (the next run's cleanup has nothing of it to remove)."""
    outcome = script_attack(
        hostile, "fill", attacks.FILL_WORKTREE, megabytes=4 * (WORKTREE_BYTES >> 20), files=100_000
    )
    output = outcome.command_output()
    assert "FILL-STOPPED ENOSPC" in output, outcome.describe()
    assert _count("FILLED-MB", output) <= WORKTREE_BYTES >> 20
    assert "FILES-STOPPED ENOSPC" in output, outcome.describe()
    assert _count("MADE-FILES", output) <= WORKTREE_BYTES // 4096
    worktree = hostile.workspaces / outcome.run_id
    if worktree.exists():
        assert not list(worktree.glob("fill-*")), "the command's files reached the host"
        assert not (worktree / "deep").exists(), "the command's files reached the host"
    assert outcome.status == "succeeded", outcome.describe()


def _nested_plan(depth: int, size: int) -> dict[str, object]:
    unit = "[" * depth + "]" * depth
    nested = json.loads("[" + ",".join([unit] * (size // len(unit))) + "]")
    return {**attacks.plan(("README.md", "modify")), "x": nested}


def test_a_deeply_nested_answer_is_refused_before_it_is_parsed(hostile: Hostile) -> None:
    """3.8 MB of arrays 500 deep (under the byte cap): before, parsing it cost the
    worker hundreds of MB, redacting it overflowed Python's stack with the call left
    `sent`, and a 12 MB ledger row froze the API's run page. Now the body's shape is
    refused unparsed, every attempt is recorded failed, and the run's pages answer."""
    hostile.fresh_worker()
    before = hostile.worker_peak_rss_mb()
    plan = _nested_plan(500, 38 * MB // 10)
    outcome = hostile.drive(hostile.repo("deep"), hostile.fixture("deep", plan=plan))
    grew = hostile.worker_peak_rss_mb() - before

    assert outcome.status == "failed", outcome.describe()
    assert "answer misshapen" in json.dumps(outcome.diagnostic()), outcome.describe()
    assert grew < 150, f"the worker grew {grew:.0f} MB for a misshapen answer"
    with hostile.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT status, octet_length(coalesce(response::text, ''))"
                " FROM app.opencode_calls WHERE run_id = :r"
            ),
            {"r": outcome.run_id},
        ).all()
    assert rows, "the calls are in the ledger"
    assert {status for status, _ in rows} == {"failed"}, rows
    assert max(size for _, size in rows) < 300 * 1024, rows
    calls = hostile.http.get(
        f"/runs/{outcome.run_id}/calls", headers=hostile.as_(hostile.approver), timeout=30
    )
    assert calls.status_code == 200
    with hostile.signed_in(timeout_s=30) as browser:
        assert browser.get(f"/ui/runs/{outcome.run_id}").status_code == 200


def _as_patch(tmp_path: Path, name: str, make: Callable[[Path], None]) -> str:
    """The diff adding what ``make`` writes into an empty repository (its ``.git`` too),
    binary files as git's compressed literals, which the daemon's tools apply as is."""
    scratch = tmp_path / f"gen-{name}"
    scratch.mkdir()
    subprocess.run(["git", "init", "-q", str(scratch)], check=True)
    make(scratch)
    subprocess.run(["git", "-C", str(scratch), "add", "-A"], check=True)
    shown = subprocess.run(
        ["git", "-C", str(scratch), "diff", "--cached", "--binary", "--full-index"],
        check=True,
        capture_output=True,
    )
    return shown.stdout.decode()


def _one_line_file_as_binary_patch(tmp_path: Path, path: str, size: int, fill: bytes = b"a") -> str:
    """A diff adding ``path``: ``size`` bytes of ``fill`` on one line, written as a
    binary literal (a few hundred kB)."""

    def make(scratch: Path) -> None:
        (scratch / ".git" / "info" / "attributes").write_text(f"{path} binary\n")
        with (scratch / path).open("wb") as out:
            for _ in range(size // MB):
                out.write(fill * MB)
            out.write(b"\n")

    return _as_patch(tmp_path, path, make)


def test_a_200_mb_one_line_file_is_refused_with_memory_bounded(
    hostile: Hostile, tmp_path: Path
) -> None:
    """One line counts once against max_lines, whatever its length: a file of 200 MB on
    one line passed every gate, grew the worker by 1.6 GB, and its patch (200 MB, three
    copies held at once) was to be stored and shown to the approver. Its size is now
    refused before a byte of it is read (the patch's bytes are bounded too, below)."""
    hostile.fresh_worker()
    before = hostile.worker_peak_rss_mb()
    fixture = hostile.fixture(
        "one-long-line",
        plan=attacks.plan(("data.txt", "add")),
        patch=attacks.patch(_one_line_file_as_binary_patch(tmp_path, "data.txt", 200 * MB)),
    )
    outcome = hostile.drive(hostile.repo("one-long-line"), fixture)
    grew = hostile.worker_peak_rss_mb() - before
    assert_fails_closed(outcome, "max_file_bytes")
    assert grew < 100, f"the worker grew {grew:.0f} MB for a 200 MB line"
    for name in ("patch.diff", "diagnostic.json"):
        kept = outcome.artifact(name) or b""
        assert len(kept) <= MB, f"{name} holds {len(kept)} bytes"


def _many_long_paths_as_patch(tmp_path: Path, count: int) -> str:
    """A diff adding ``count`` files, each at a path of about 4 kB (15 folders of 250
    characters): as many as one turn's 8 MiB of messages can carry."""
    deep = "/".join(["a" * 250] * 15)

    def make(scratch: Path) -> None:
        for i in range(count):
            folder = scratch / f"d{i // 100}" / deep
            folder.mkdir(parents=True, exist_ok=True)
            (folder / (f"{i:08d}" + "b" * 200)).write_bytes(b"x\n")

    return _as_patch(tmp_path, "long-paths", make)


def _unplanned_files(hostile: Hostile, name: str, diff: str) -> Outcome:
    """A run whose approved plan names README.md and whose patch is ``diff`` (files no
    plan names, which the answer lists as none)."""
    fixture = hostile.fixture(
        name,
        plan=attacks.plan(("README.md", "modify")),
        patch={**attacks.patch(diff), "files": []},
    )
    return hostile.drive(hostile.repo(name), fixture)


def test_850_files_at_4_kb_paths_are_refused_naming_the_rules_in_bounded_records(
    hostile: Hostile, tmp_path: Path
) -> None:
    """The refusal listed every change and path: capping that diagnostic took 47 s of
    the step, kept none of the rules' names (only its cuts), and the ledger's verdict
    kept 3.4 MB. Now a change past max_files is refused before a file of it is read."""
    outcome = _unplanned_files(hostile, "long-paths", _many_long_paths_as_patch(tmp_path, 850))
    assert_fails_closed(outcome, "max_files")
    diagnostic = json.loads(outcome.artifact("diagnostic.json") or b"{}")
    assert diagnostic["rules"] == ["max_files"]
    assert "touches 850 files" in diagnostic["violations"][0]["detail"]
    assert len(outcome.artifact("diagnostic.json") or b"") <= 257 * 1024
    with hostile.engine.connect() as conn:
        kept = conn.execute(
            text("SELECT max(length(rejected)) FROM app.opencode_calls WHERE run_id = :r"),
            {"r": outcome.run_id},
        ).scalar_one()
    assert kept is not None
    assert kept <= 4100, f"the ledger's verdict holds {kept} characters"


def _crlf_files_read_one_by_one_as_patch(tmp_path: Path, count: int) -> str:
    """A diff adding a ``.gitattributes`` that makes every file one git reads alone
    (``-diff``: binary to numstat; ``eol=lf``: its CRLF bytes differ from its blob) and
    ``count`` such files."""

    def make(scratch: Path) -> None:
        (scratch / ".git" / "info" / "attributes").write_text("* -text\n")
        (scratch / ".gitattributes").write_text("* -diff text eol=lf\n")
        for i in range(count):
            folder = scratch / f"d{i // 1000}"
            folder.mkdir(exist_ok=True)
            (folder / f"f{i}").write_bytes(b"x%d\r\n" % i)

    return _as_patch(tmp_path, "crlf", make)


def test_thousands_of_files_each_read_alone_are_refused_before_any_is_read(
    hostile: Hostile, tmp_path: Path
) -> None:
    """Each file git calls binary, or whose bytes differ from its blob by line endings,
    took a git process to judge, all before max_files was counted: 10,000 held the step
    for 111 s (one patch call can carry 250,000). The count now comes first."""
    hostile.fresh_worker()
    before = hostile.worker_peak_rss_mb()
    diff = _crlf_files_read_one_by_one_as_patch(tmp_path, 5000)
    outcome = _unplanned_files(hostile, "crlf-many", diff)
    assert_fails_closed(outcome, "max_files")
    error = outcome.run.get("error") or ""
    assert "touches 5001 files (more than 50 are not read)" in error, outcome.describe()
    assert hostile.worker_peak_rss_mb() - before < 100


def test_a_file_of_zeros_past_max_file_bytes_is_refused_before_it_is_read(
    hostile: Hostile, tmp_path: Path
) -> None:
    """Zeros compress: 4 GiB of them is a 1.7 MB patch, under max_patch_bytes, and
    passed every rule (a git diff of it took 4.1 GB). Each file's blob is bounded."""
    fixture = hostile.fixture(
        "zeros",
        plan=attacks.plan(("blob.bin", "add")),
        patch=attacks.patch(_one_line_file_as_binary_patch(tmp_path, "blob.bin", 64 * MB, b"\0")),
    )
    outcome = hostile.drive(hostile.repo("zeros"), fixture)
    assert_fails_closed(outcome, "max_file_bytes")
    assert "blob.bin: over 16777216 bytes" in (outcome.run.get("error") or "")
    assert outcome.artifact("patch.diff") is None


def test_a_12_mb_line_under_max_file_bytes_is_refused_as_git_writes_its_patch(
    hostile: Hostile, tmp_path: Path
) -> None:
    """A file under max_file_bytes whose patch is over max_patch_bytes: git's patch is
    read to the bound and no further, and nothing of it is stored."""
    fixture = hostile.fixture(
        "long-line",
        plan=attacks.plan(("data.txt", "add")),
        patch=attacks.patch(_one_line_file_as_binary_patch(tmp_path, "data.txt", 12 * MB)),
    )
    outcome = hostile.drive(hostile.repo("long-line"), fixture)
    assert_fails_closed(outcome, "max_patch_bytes")
    assert "over 4194304 bytes" in (outcome.run.get("error") or "")
    assert outcome.artifact("patch.diff") is None


NUL_SCRIPT = (
    b"#!/bin/sh\n# Checks the calculator.\n"
    + b"# bash reads 80 bytes to call a file binary, git 8,000: \0\n"
    + b"".join(b"true %d\n" % i for i in range(5000))
    + b"echo HIDDEN\n"
)


def test_a_script_git_calls_binary_for_one_nul_counts_every_line(
    hostile: Hostile, tmp_path: Path
) -> None:
    """One NUL in a comment makes a 5,000-line script binary to git (a NUL in its first
    8,000 bytes), while a shell still runs every line of it: counted as no lines, it
    passed a 2,000-line max_lines, and the run page showed it as an empty added file
    (a red-team pass). Each of its line feeds counts now."""

    def make(scratch: Path) -> None:
        (scratch / "check.sh").write_bytes(NUL_SCRIPT)

    fixture = hostile.fixture(
        "nul-script",
        plan=attacks.plan(("check.sh", "add")),
        patch=attacks.patch(_as_patch(tmp_path, "nul-script", make)),
    )
    outcome = hostile.drive(hostile.repo("nul-script"), fixture)
    assert_fails_closed(outcome, "max_lines")
    assert "the patch changes 5004 lines (max 2000)" in (outcome.run.get("error") or "")


def test_a_short_script_git_calls_binary_lands_and_its_run_page_says_so(
    hostile: Hostile, tmp_path: Path
) -> None:
    """Under every limit, a script with one NUL is allowed (it runs like any script), but
    its patch is a ``GIT binary patch`` no reader can read: the run page says the file
    is binary to git, and that a script holding such a byte still runs, instead of
    showing an empty added file."""
    script = b"#!/bin/sh\n# one NUL makes this binary to git: \0\necho checked\n"

    def make(scratch: Path) -> None:
        (scratch / "check.sh").write_bytes(script)

    fixture = hostile.fixture(
        "nul-script-lands",
        plan=attacks.plan(("check.sh", "add")),
        patch=attacks.patch(_as_patch(tmp_path, "nul-script-lands", make)),
        build=attacks.build("python3", "-c", "print(open('check.sh', 'rb').read()[-8:-1])"),
    )
    outcome = hostile.drive(hostile.repo("nul-script-lands"), fixture)
    assert outcome.status == "succeeded", outcome.describe()
    assert b"GIT binary patch" in (outcome.artifact("patch.diff") or b"")
    assert "b'checked'" in outcome.command_output(), outcome.describe()
    with hostile.signed_in(timeout_s=30) as browser:
        page = browser.get(f"/ui/runs/{outcome.run_id}")
    assert page.status_code == 200
    assert "Binary to git (a NUL byte in its first 8,000 bytes)" in page.text
    assert "check.sh" in page.text
