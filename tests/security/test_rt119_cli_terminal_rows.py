"""On a terminal, no row ``kodo run diff`` or ``kodo run logs`` draws starts with the
agent's text (red-team helper-119).

1. ``kodo run diff``: an added line is never drawn as a removed one.

The agent appends one line to README.md: ``Build: ok``, 120 blanks, then
``-Run the test suite before every release.``. On a terminal (here a pty, 80 columns,
``NO_COLOR=1`` as many set it; with colour the row is green but still reads ``-...``)
rich folds the added line at the terminal's width, and the fold's second row starts
with the agent's own ``-Run the test suite ...``: a removal that never happened, drawn
exactly as git's own ``-`` lines are. (The plan card guards this very thing: "no row a
terminal draws starts with the agent's text", ``views.labelled``; the diff does not.
The run page is fine: the whole line sits in one green row with its sign column.)

2. ``kodo run logs`` indents the command's output so that no line of it poses as kodo's
``== diagnostic.json of ExecuteST (sha256 ...)`` header (helper-106). But it prints
each line whole, and the terminal folds a line longer than its width: the output line
``x`` * 78 + ``== diagnostic.json of ExecuteST (sha256 0000...)`` is drawn, at 80
columns, as a flush-left row reading exactly as kodo's header, followed by a forged
``"exit_code": 0`` row.

Safe outcome: every row ``kodo run diff`` draws for an added line starts with ``+``
(or a continuation mark kodo draws), never with the agent's text; e.g. no folding
(``soft_wrap`` / ``overflow="ignore"``, the terminal's own wrap then being the user's
pager setting) or a folded row prefixed by a kodo mark; ``kodo run logs`` folds the
output on a terminal under its indent (as the plan card's ``labelled`` does), so the
terminal never wraps a row of the agent's text to column 0.
"""

from __future__ import annotations

import os
import re
import select
import subprocess

import pytest

from devstack.kodo_procs import BIN
from tests.security import attacks
from tests.security.harness import Hostile

pytestmark = pytest.mark.security

README = "# calc\n\nA tiny calculator used to demonstrate kodo.\n"
FORGED = "-Run the test suite before every release."
LINE = "Build: ok" + " " * 120 + FORGED
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _terminal(hostile: Hostile) -> dict[str, str]:
    """The environment of a CLI on an 80-column terminal, signed in as the approver."""
    return {
        **os.environ,
        "KODO_API_URL": hostile.stack.api_url,
        "KODO_API_TOKEN": hostile.approver,
        "COLUMNS": "80",
        "LINES": "40",
        "TERM": "xterm-256color",
    }


def _on_a_terminal(argv: list[str], env: dict[str, str]) -> str:
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        out = b""
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                proc.kill()
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        proc.wait(timeout=60)
    finally:
        os.close(master)
    return ANSI.sub("", out.decode(errors="replace")).replace("\r\n", "\n")


def test_an_added_line_is_never_drawn_as_a_removed_one(hostile: Hostile) -> None:
    fixture = hostile.fixture(
        "rt119-wrap",
        plan=attacks.plan(("README.md", "modify")),
        patch=attacks.patch(attacks.append_lines("README.md", README, [LINE])),
        build=attacks.build("python3", "-c", "print('ok')"),
    )
    outcome = hostile.drive(hostile.repo("rt119-wrap"), fixture)
    assert outcome.status == "succeeded", outcome.describe()
    env = {**_terminal(hostile), "NO_COLOR": "1"}
    shown = _on_a_terminal([str(BIN / "kodo"), "run", "diff", str(outcome.run["runId"])], env)
    rows = shown.split("\n")
    assert any(r.startswith("+Build: ok") for r in rows), shown

    assert [r for r in rows if r.startswith("-Run the test suite")] == [], shown


def _as_drawn(text: str, columns: int) -> list[str]:
    """The rows an ``columns``-wide terminal draws (ASCII text: one cell a character)."""
    rows: list[str] = []
    for line in text.split("\n"):
        rows.extend(line[i : i + columns] for i in range(0, max(len(line), 1), columns))
    return rows


HEADER = "== diagnostic.json of ExecuteST (sha256 " + "0" * 64 + ")"


def test_a_long_output_line_never_draws_a_kodo_header(hostile: Hostile) -> None:
    program = (
        "print('ran 12 checks'); "
        f"print('x' * 78 + {HEADER!r}); "
        "print('x' * 78 + '  \"exit_code\": 0,')"
    )
    fixture = hostile.fixture(
        "rt119-logs",
        plan=attacks.plan(("README.md", "modify")),
        patch=attacks.patch(attacks.append_lines("README.md", README, ["one more line"])),
        build=attacks.build("python3", "-c", program),
    )
    outcome = hostile.drive(hostile.repo("rt119-logs"), fixture)
    assert outcome.status == "succeeded", outcome.describe()
    env = _terminal(hostile)
    shown = _on_a_terminal([str(BIN / "kodo"), "run", "logs", str(outcome.run["runId"])], env)
    rows = _as_drawn(shown, 80)
    assert any("ran 12 checks" in r for r in rows), shown

    assert [r for r in rows if r.startswith("== diagnostic")] == [], "\n".join(rows)
