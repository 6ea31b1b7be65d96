"""How the CLI draws API answers: the plan card, a run's steps, the ledger table.

Pure functions from JSON to rich renderables or text, so the commands stay short
and the same drawing serves the live display and the final print. Every value from
the API may carry agent-written text, so each goes through :func:`visible` (escape
sequences, carriage returns and bidi overrides shown escaped, never obeyed) and into
rich only as a :class:`Text` (never parsed as rich markup).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from rich.cells import cell_len
from rich.console import Group
from rich.table import Table
from rich.text import Text

from shared.domain.display import lookalike_name, shown_name_text, visible

STEP_ORDER = ("CompileST", "approval", "ApplyPatchST", "DecideST", "ExecuteST")
TERMINAL = frozenset({"succeeded", "failed", "rejected", "cancelled"})
_AFTER_APPROVAL = frozenset({"applying", "deciding", "executing", "succeeded"})
_MARK = {
    "succeeded": ("✓", "green"),
    "running": ("…", "yellow"),
    "waiting": ("?", "magenta"),
    "failed": ("✗", "red"),
    "rejected": ("✗", "red"),
    "pending": ("·", "dim"),
}


def one_line(value: object, default: str = "-") -> str:
    """One value on one line, safe to print: control and bidi characters escaped."""
    return default if value is None else visible(value)


def cell(value: object, style: str = "") -> Text:
    """A table cell that rich draws as plain text (``[red]`` in agent text stays literal)."""
    return Text(one_line(value), style=style)


def ascii_cell(value: object, style: str = "") -> Text:
    """A table cell of agent-quoted text (a step's error, a call's) in ASCII, anything
    else escaped (``\xe9``): rich lays a table out by its own count of each character's
    cells, which a terminal drawing the East Asian Ambiguous class wide exceeds, and a
    padded error then wrapped onto a row of the agent's own (red-team helper-106). The
    run page and ``kodo run show`` give the text whole."""
    shown = one_line(value).encode("ascii", "backslashreplace").decode("ascii")
    return Text(shown, style=style)


CARD_WIDTH = 80
"""Columns the plan card is folded to: every row a terminal at least this wide draws
starts with kodo's own label, or with the indent under it (never with agent text)."""
_LABEL = 10  # "  file:   ": the column where a value starts
SHOWN_CHARS = 400
"""The most characters of one risk, test or why the CLI card shows (the run page and
``--json`` show them whole)."""
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._@+/-]+")


def shown_path(path: object) -> str:
    """A path as the CLI draws it: as is when it is plain, else quoted as a JSON string,
    so no space, parenthesis or quote in it can pose as the layout around it
    (``calc.py  (docs)`` is not ``calc.py`` with a note); one that may be drawn like
    another (a no-break space, a decomposed letter) in ASCII (red-team helper-106)."""
    if isinstance(path, str) and _PLAIN_PATH.fullmatch(path):
        return path
    if isinstance(path, str) and lookalike_name(path):
        return shown_name_text(path)
    return visible(json.dumps(path, ensure_ascii=False))


def labelled(
    label: str, value: str, width: int = CARD_WIDTH, *, prose: bool = True, column: int = _LABEL
) -> list[str]:
    """``value`` under ``label``, folded to ``width``: the first row carries the label,
    each further row a continuation mark under it (``|``). A terminal then never wraps
    a row itself, so no row it draws starts with text the agent wrote (a risk padded to
    end a row with a forged ``file:`` line), and a row the agent's text begins with
    ``file:`` reads as the continuation it is. ``prose``: runs of white space count as
    one space (a risk of 2,000 spaces is one); else (a path, already quoted) the value
    is cut as it is. ``column``: where values start (past a longer label, later)."""
    head = f"  {label} ".ljust(column)
    room = max(width - len(head), 20)
    more = " " * (len(head) - 2) + "| "
    words = value.split() if prose else [value]
    chunks = _folded(words, room, sep=" " if prose else "")
    return [(head if i == 0 else more) + chunk for i, chunk in enumerate(chunks or ["-"])]


CONTINUED = "| "
"""What starts each further row of a line kodo folds for a terminal."""


def terminal_rows(text: str, width: int, *, lead: str = "") -> list[str]:
    """``text`` (one line, already made visible) as rows a ``width``-cell terminal draws
    whole: the first after ``lead``, each further after ``lead`` and :data:`CONTINUED`.
    A terminal wraps a longer row itself, at column 0: an added diff line padded with
    blanks drew a row reading ``-Run the test suite...``, a removal that never happened,
    and a line of a command's output one reading as kodo's ``== diagnostic.json``
    header (red-team helper-119). Cells are counted erring wide, as for the cards."""
    room = max(width - 1 - cell_len(lead) - len(CONTINUED), 20)  # (a cell spare: no wrap)
    chunks = _folded([text], room, sep="") or [""]
    return [lead + chunks[0], *(lead + CONTINUED + chunk for chunk in chunks[1:])]


def _folded(words: list[str], room: int, *, sep: str) -> list[str]:
    """``words`` joined by ``sep`` into rows of at most ``room`` terminal cells (a wide
    character takes two: counted as characters, 70 of them drew 140 columns and the
    terminal wrapped the rest of the row), a word longer than a row cut where it fills one."""
    rows: list[str] = []
    row, used = "", 0
    for word in words:
        need = sum(_cells(c) for c in word) + (len(sep) if row else 0)
        if row and used + need > room:
            rows.append(row)
            row, used = "", 0
        if row:
            row, used = row + sep, used + len(sep)
        for char in word:
            wide = _cells(char)
            if used + wide > room:
                rows.append(row)
                row, used = "", 0
            row, used = row + char, used + wide
    if row:
        rows.append(row)
    return rows


def _cells(char: str) -> int:
    """The terminal cells ``char`` may take, erring wide: rich's count for ASCII and
    combining marks, two for any other character. Rich counts an emoji skin-tone
    modifier as none where terminals draw two: 34 of them made an 80-cell row of 114
    columns, and the terminal wrapped it onto a row of the agent's text (red-team
    helper-99). Terminals set up for East Asian text draw the Ambiguous class wide too
    (``é``, the multiplication sign, Greek, Cyrillic: xterm ``-cjk_width``, VTE,
    iTerm2, mintty, PuTTY), which rich counts as one: 34 ``é`` did the same
    (helper-103). Erring wide only folds a row early."""
    if char.isascii() or unicodedata.category(char) in ("Mn", "Me"):
        return cell_len(char)
    return max(cell_len(char), 2)


def _capped(value: object, most: int = SHOWN_CHARS) -> str:
    text = " ".join(one_line(value).split())
    if len(text) <= most:
        return text
    return f"{text[:most]}… (+{len(text) - most} characters: the run page shows it whole)"


def question_rows(question: object) -> list[str]:
    """DecideST's question, each of its lines folded under the ``question:`` label: no
    row a terminal draws starts with the agent's text."""
    asked = visible(question, multiline=True).expandtabs(4)
    rows = [row for line in asked.split("\n") for row in labelled("question:", line, column=12)]
    return [row.removeprefix("  ") for row in rows]


def file_lines(
    entry: dict[str, Any], width: int = CARD_WIDTH, *, why: bool = True, column: int = _LABEL
) -> list[str]:
    """One file of a plan: its change and path, the path a rename removes, and why."""
    change = " ".join(one_line(entry.get("change")).split())
    path = f"{change:<6} {shown_path(entry.get('path'))}"
    lines = labelled("file:", path, width, prose=False, column=column)
    if "from" in entry:  # a rename takes its old path away: the approver must see it
        removed = f"{shown_path(entry.get('from'))} (removed by the rename)"
        lines += labelled("from:", removed, width, prose=False, column=column)
    if why:
        lines += labelled("why:", _capped(entry.get("why")), width, column=column)
    return lines


def _removals(files: list[dict[str, Any]], width: int) -> list[str]:
    """Last, next to the approve prompt: every path the plan takes away (deleted, or
    renamed from), then how many files of each kind. Each file's why comes with it
    above, so five long whys after a delete pushed the delete off the screen that asks
    for approval (red-team helper-99); these rows are never pushed off."""
    lines: list[str] = []
    for f in files:
        if f.get("change") == "delete":
            lines += labelled("removes:", shown_path(f.get("path")), width, prose=False)
        elif "from" in f:
            moved = f"{shown_path(f.get('from'))} (renamed to {shown_path(f.get('path'))})"
            lines += labelled("removes:", moved, width, prose=False)
    kinds = Counter(" ".join(one_line(f.get("change")).split()) for f in files)
    said = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    return lines + labelled("files:", f"{len(files)} in all ({said or 'none'})", width)


def plan_card_lines(card: dict[str, Any], width: int = CARD_WIDTH) -> list[str]:
    """The plan a human approves, one fact per labelled row (the digest first: it is what
    is signed). The files come last, next to the approve prompt that follows the card:
    50 risks of 2,000 characters printed after them scrolled them off the screen."""
    raw = card.get("plan")
    plan: dict[str, Any] = raw if isinstance(raw, dict) else {}
    lines = [f"Plan card (sha256 {one_line(card.get('planSha256'))})"]
    design = plan.get("design")
    # Each line of the design carries the label, so no line of it can pose as a file line.
    shown = "-" if design is None else visible(design, multiline=True).expandtabs(4)
    for line in shown.split("\n"):
        lines += labelled("design:", line, width)
    for risk in plan.get("risks") or []:
        lines += labelled("risk:", _capped(risk), width)
    for test in plan.get("tests") or []:
        lines += labelled("test:", _capped(test), width)
    files = [f for f in plan.get("files") or [] if isinstance(f, dict)]
    for f in files:
        lines += file_lines(f, width)
    lines += _removals(files, width)
    approval = card.get("approval")
    if isinstance(approval, dict):
        decision, approver = approval.get("decision"), approval.get("approver")
        lines += labelled("decision:", f"{one_line(decision)} by {one_line(approver)}", width)
    return lines


_WAITS_FOR = {
    "await:budget": "waiting for a larger budget (kodo run budget)",
    "await:answer": "waiting for the approver's answer (kodo run answer)",
}
"""What a run at waiting_input past the approval waits for, by its next action."""


ACTIVE_STEP = {
    "compiling": "CompileST",
    "applying": "ApplyPatchST",
    "deciding": "DecideST",
    "executing": "ExecuteST",
}
"""The step whose turn a run's status says it is."""


def iso_time(value: object) -> datetime | None:
    """An API time (ISO 8601; UTC if it names no zone), or None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        found = datetime.fromisoformat(value)
    except ValueError:
        return None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def so_far(started: object, now: datetime | None) -> str:
    """``4.2 s so far``: a running step's elapsed time (nothing without a clock or a start)."""
    began = iso_time(started)
    if now is None or began is None:
        return ""
    return f"{max(0.0, (now - began).total_seconds()):.1f} s so far"


def step_states(run: dict[str, Any], now: datetime | None = None) -> list[tuple[str, str, str]]:
    """(step, state, detail) per step in run order, from the run's status and step rows.

    The step whose turn the run's status says it is shows ``running`` even before its
    row is read (the run's events come from the run row, not the step rows); with
    ``now``, a running step says how long it has run."""
    status = str(run.get("status", ""))
    waits_for = _WAITS_FOR.get(str(run.get("nextAction", "")))
    rows = {str(s.get("stepId")): s for s in run.get("steps") or [] if isinstance(s, dict)}
    out = []
    for step in STEP_ORDER:
        if status == "waiting_input" and waits_for is not None and step == run.get("lastStep"):
            out.append((step, "waiting", waits_for))  # its stopped round's row says why
            continue
        if step == "approval":
            if status == "waiting_input" and waits_for is None:
                out.append((step, "waiting", "awaiting a human decision"))
            elif status == "rejected":
                out.append((step, "rejected", "plan rejected"))
            elif status in _AFTER_APPROVAL or "ApplyPatchST" in rows:
                out.append((step, "succeeded", "approved"))
            else:
                out.append((step, "pending", ""))
            continue
        if status == "waiting_upgrade" and step == run.get("lastStep"):  # its row says running
            out.append((step, "waiting", "parked: waiting for a worker of the run's step contract"))
            continue
        row = rows.get(step)
        if row is None:
            if ACTIVE_STEP.get(status) == step:  # its turn: the row may not be written yet
                out.append((step, "running", so_far(run.get("updatedAt"), now)))
            else:
                out.append((step, "pending", ""))
            continue
        state = str(row.get("status", "pending"))
        detail = f"{row['durationMs']} ms" if row.get("durationMs") is not None else ""
        if state == "running":
            detail = so_far(row.get("startedAt"), now)
        if row.get("round", 1) not in (None, 1):
            detail += f" (round {row['round']})"
        if row.get("deliveries", 1) not in (None, 1):
            detail += f" ({row['deliveries']} deliveries)"
        if row.get("error"):
            detail += f" {one_line(row['error'])}"
        out.append((step, state, detail.strip()))
    return out


def run_header(run: dict[str, Any]) -> str:
    """One line: the run's status, last step, next action and how often kodo retried."""
    return (
        f"run {one_line(run.get('runId'))}  status={one_line(run.get('status'))}"
        f"  lastStep={one_line(run.get('lastStep'))}  next={one_line(run.get('nextAction'))}"
        f"  retries={one_line(run.get('retryCount'))}"
    )


def run_view(run: dict[str, Any], now: datetime | None = None) -> Group:
    """Header plus one line per step: the live display and ``kodo run status`` share it
    (the live display passes ``now``, so a running step's time counts up)."""
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("", width=1)
    table.add_column("step")
    table.add_column("state")
    table.add_column("detail", overflow="fold")
    for step, state, detail in step_states(run, now):
        mark, style = _MARK.get(state, ("·", "dim"))
        table.add_row(Text(mark, style=style), cell(step), cell(state, style), ascii_cell(detail))
    parts: list[Any] = [Text(run_header(run), style="bold"), table]
    if run.get("error"):  # it may quote the agent: folded under its label (helper-106)
        for row in labelled("error:", one_line(run["error"]), column=9):
            parts.append(Text(row.removeprefix("  "), style="red"))
    if run.get("branch"):
        parts.append(Text(f"branch: {one_line(run['branch'])}"))
    if isinstance(run.get("budget"), dict):
        parts.append(Text(budget_line(run["budget"])))
    if run.get("question"):
        parts.append(Text("\n".join(question_rows(run["question"]))))
        digest = one_line(run.get("questionSha256"))
        answer = f"kodo run answer {one_line(run.get('runId'))} --question-sha256 {digest} -m TEXT"
        parts.append(Text(f"answer it: {answer}"))
    return Group(*parts)


def cache_levels(run: dict[str, Any] | None) -> dict[tuple[str, int], str]:
    """(step, attempt) -> cache level, when the API's step rows report attempts; else empty."""
    found: dict[tuple[str, int], str] = {}
    for step in (run or {}).get("steps") or []:
        if not isinstance(step, dict):
            continue
        for attempt in step.get("attempts") or []:
            if not isinstance(attempt, dict):
                continue
            number, cache = attempt.get("attempt"), attempt.get("cache")
            if isinstance(number, int) and isinstance(cache, str):
                found[(str(step.get("stepId")), number)] = cache
    return found


def _usage(call: dict[str, Any], key: str) -> object:
    usage = call.get("usage")
    return usage.get(key) if isinstance(usage, dict) else None


def _spent_past_usage(call: dict[str, Any]) -> bool:
    """The call spent more of its budget than the daemon counted for it, in tokens or in
    USD (its turn was cut short: it spends at least its reservation)."""

    def past(spent: object, counted: object, slack: float) -> bool:
        counted = counted if isinstance(counted, int | float) else 0
        return isinstance(spent, int | float) and spent > counted + slack

    # (a spend is whole micro-dollars, rounded up from the daemon's cost)
    return past(call.get("spentTokens"), _usage(call, "totalTokens"), 0) or past(
        call.get("spentUsd"), _usage(call, "costUsd"), 1e-6
    )


def calls_table(calls: list[dict[str, Any]], caches: dict[tuple[str, int], str]) -> Table:
    """The ledger: one row per paid call. Cache hits are not calls: a column only if known;
    an error column only when a call failed (its reason, escaped)."""
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for name, justify in (
        ("step", "left"),
        ("agent", "left"),
        ("attempt", "right"),
        ("status", "left"),
        ("duration", "right"),
        ("tokens", "right"),
        ("cost", "right"),
    ):
        table.add_column(name, justify="right" if justify == "right" else "left")
    if caches:
        table.add_column("cache")
    floored = any(_spent_past_usage(call) for call in calls)
    if floored:
        table.add_column("spent", justify="right")  # a turn cut short: at least its reservation
    failed = any(call.get("error") for call in calls)
    if failed:
        table.add_column("error", overflow="fold")  # why the call failed (agent-quoted text)
    for call in calls:
        duration = call.get("durationMs")
        cost = _usage(call, "costUsd")
        row = [
            cell(call.get("stepId")),
            cell(call.get("agent")),
            cell(call.get("attempt")),
            cell(call.get("status")),
            cell(f"{duration} ms" if duration is not None else None),
            cell(_usage(call, "totalTokens")),
            cell(f"${cost:.4f}" if isinstance(cost, int | float) else None),
        ]
        if caches:
            attempt = call.get("attempt")
            key = (str(call.get("stepId")), attempt if isinstance(attempt, int) else -1)
            row.append(cell(caches.get(key)))
        if floored:
            spent, tokens = call.get("spentUsd"), call.get("spentTokens")
            said = f"${spent:.4f}, {tokens} tokens" if isinstance(spent, int | float) else None
            row.append(cell(said))
        if failed:
            row.append(ascii_cell(call.get("error") or "", "red"))
        table.add_row(*row)
    return table


def revisions_view(listed: dict[str, Any]) -> Group:
    """Every plan of a run, oldest first: its digest, its files and the decision on it
    (a reviewer's comment is shown as written, one labelled line per line)."""
    current = listed.get("currentPlanSha256")
    parts: list[Text] = [
        Text(
            f"run {one_line(listed.get('runId'))} ({one_line(listed.get('status'))}): "
            f"{len(listed.get('revisions') or [])} of at most"
            f" {one_line(listed.get('maxRevisions'))} plan revisions"
        )
    ]
    for revision in listed.get("revisions") or []:
        if not isinstance(revision, dict):
            continue
        digest = revision.get("planSha256")
        mark = "  (current)" if digest == current else ""
        lines = [f"revision {one_line(revision.get('revision'))}: sha256 {one_line(digest)}{mark}"]
        plan = revision.get("plan")
        for f in (plan.get("files") or []) if isinstance(plan, dict) else []:
            if isinstance(f, dict):  # the path a rename removes too: revisions may differ there
                lines += file_lines(f, why=False, column=12)
        decision = revision.get("decision")
        if isinstance(decision, dict):
            who = one_line(decision.get("approver"))
            lines.append(f"  decision: {one_line(decision.get('decision'))} by {who}")
            comment = decision.get("comment")
            if comment is not None:
                shown = visible(comment, multiline=True).expandtabs(4)
                lines.extend(f"  comment:  {line}" for line in shown.split("\n"))
        parts.append(Text("\n".join(lines)))
    return Group(*parts)


def budget_line(budget: dict[str, Any]) -> str:
    """``budget: $spent spent + $reserved reserved of $limit (remaining)``, per dimension."""

    def one(name: str, fmt: str) -> str | None:
        part = budget.get(name)
        if not isinstance(part, dict):
            return None
        spent, reserved, limit = part.get("spent"), part.get("reserved"), part.get("limit")
        said = f"{fmt.format(spent or 0)} spent + {fmt.format(reserved or 0)} reserved"
        if limit is None:
            return f"{said} (no {name} budget)"
        return f"{said} of {fmt.format(limit)} ({fmt.format(part.get('remaining') or 0)} left)"

    parts = [p for p in (one("usd", "${:.4f}"), one("tokens", "{} tokens")) if p]
    return "budget: " + "; ".join(parts)


def calls_total(calls: list[dict[str, Any]]) -> str:
    """``N call(s) (F failed), T tokens, $C``: what the ledger's calls spent of the run's
    budget in all (``spentTokens``, ``spentUsd``: a call cut short spends at least its
    reservation; an unsettled call nothing yet)."""
    failed = sum(1 for c in calls if c.get("status") == "failed")
    tokens = sum(int(n) for c in calls if isinstance(n := c.get("spentTokens"), int | float))
    cost = sum(float(n) for c in calls if isinstance(n := c.get("spentUsd"), int | float))
    return f"{len(calls)} call(s) ({failed} failed), {tokens} tokens, ${cost:.4f}"
