"""How the CLI draws what a run did: its patch, its verification, its whole story.

Pure functions from API answers (and artifact bytes) to rich renderables. The patch,
the command, its output and the diagnostic are all written by the agent, so every
line goes through :func:`visible` and reaches rich only as a :class:`Text`: a diff line
carrying ``\\x1b[2J`` or a bidi override shows the escape, it is never obeyed.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from services.cli.run_list import usd
from services.cli.views import (
    ascii_cell,
    budget_line,
    cell,
    file_lines,
    labelled,
    one_line,
    shown_path,
    step_states,
    terminal_rows,
)
from shared.domain.diff_modes import FileModes
from shared.domain.diff_names import file_line_name, git_name, header_sides
from shared.domain.display import visible


def block_lines(text: str) -> list[str]:
    """Agent text as lines safe to print: newlines kept, every other control escaped."""
    return visible(text, multiline=True).expandtabs(4).split("\n")


def bytes_text(content: bytes) -> str:
    """Artifact bytes as text; bytes that are not UTF-8 show as U+FFFD, visibly."""
    return content.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class FileStat:
    path: str
    added: int
    removed: int
    modes: FileModes = field(default_factory=FileModes)


def _git_header_name(line: str) -> str:
    """The new name a ``diff --git a/X b/Y`` header gives (git's quoting read): X when
    both sides are one name; else a guess that ``rename to`` lines correct."""
    sides = header_sides(line)
    return sides[1] if sides is not None else line.removeprefix("diff --git ")


_HUNK = re.compile(r"@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def diff_lines(patch: str) -> Iterator[tuple[str, str]]:
    """Each line of a unified diff with what it is: ``file`` (``diff --git``), ``meta``
    (a line between a file header and its hunks), ``hunk``, ``add``, ``del``,
    ``context`` or ``note``.

    A line inside a hunk is content by the hunk's own counts, whatever it starts with:
    an added line ``++ b/x.py`` reads ``+++ b/x.py`` and a removed ``-- a/x.py`` reads
    ``--- a/x.py``, so a reader going by prefixes dropped them from the stat (the CLI
    did) and drew them as another file's header. A hunk whose counts the lines break
    ends there, and the line is read as a header would be.
    """
    old_left = new_left = 0
    for line in patch.removesuffix("\n").split("\n"):  # only \n ends a line: a \r shows
        if old_left > 0 or new_left > 0:
            sign = line[:1]
            if sign == "+" and new_left > 0:
                new_left -= 1
                yield "add", line
                continue
            if sign == "-" and old_left > 0:
                old_left -= 1
                yield "del", line
                continue
            if sign == " " and old_left > 0 and new_left > 0:
                old_left, new_left = old_left - 1, new_left - 1
                yield "context", line
                continue
            if sign == "\\":
                yield "note", line
                continue
            old_left = new_left = 0
        found = _HUNK.match(line)
        if found is not None:
            old_left = int(found.group(1) if found.group(1) is not None else 1)
            new_left = int(found.group(2) if found.group(2) is not None else 1)
            yield "hunk", line
        elif line.startswith("diff --git "):
            yield "file", line
        elif line.startswith("\\"):
            yield "note", line
        else:
            yield "meta", line


def diffstat(patch: str) -> list[FileStat]:
    """Lines added and removed per file of a unified diff (``diff --git`` or ``+++`` headers)."""
    stats: list[FileStat] = []
    path: str | None = None
    added = removed = 0
    modes = FileModes()
    for kind, line in diff_lines(patch):
        header = None
        if kind == "meta" and modes.feed(line):
            continue
        if kind == "file":
            header = _git_header_name(line)
        elif kind == "meta" and line.startswith("+++ ") and path is None:
            header = file_line_name(line[4:]).removeprefix("b/")
        elif kind == "meta" and line.startswith(("rename to ", "copy to ")) and path is not None:
            path = git_name(
                line.split(" to ", 1)[1]
            )  # the whole new name (the header is ambiguous)
            continue
        if header is not None:
            if path is not None:
                stats.append(FileStat(path, added, removed, modes))
            path, added, removed, modes = header, 0, 0, FileModes()
        elif kind == "add":
            added += 1
        elif kind == "del":
            removed += 1
    if path is not None:
        stats.append(FileStat(path, added, removed, modes))
    return stats


STAT_PATH_CHARS = 56
"""A diffstat row's path is cut to this, in its middle: the row stays within the card's
width, and a path padded with blanks (quoted) cannot draw a row of the agent's own."""


def _stat_path(path: str) -> str:
    shown = shown_path(path)
    if len(shown) <= STAT_PATH_CHARS:
        return shown
    head = STAT_PATH_CHARS * 2 // 3
    return f"{shown[:head]}…{shown[-(STAT_PATH_CHARS - head - 1) :]}"


def diffstat_lines(stats: list[FileStat]) -> list[str]:
    """One row per file (its path quoted when it is not plain, and cut in its middle past
    STAT_PATH_CHARS: red-team helper-106), then the totals."""
    paths = [_stat_path(s.path) for s in stats]
    width = max((len(p) for p in paths), default=0)
    lines = [
        f" {p:<{width}} | +{s.added} -{s.removed}{_said_of(s.modes)}"
        for p, s in zip(paths, stats, strict=True)
    ]
    total_added = sum(s.added for s in stats)
    total_removed = sum(s.removed for s in stats)
    lines.append(f" {len(stats)} file(s) changed, +{total_added} -{total_removed}")
    return lines


def _said_of(modes: FileModes) -> str:
    """What a row adds to its counts: binary (its lines are not text), and a mode that
    is not a plain file's (a chmod has no line to count: helper-119)."""
    said = [word for word in ("binary" if modes.binary else None, modes.note) if word]
    return f"  [{'; '.join(said)}]" if said else ""


_DIFF_STYLES = {"file": "bold", "hunk": "cyan", "add": "green", "del": "red"}


def _style(kind: str, line: str) -> str:
    if kind == "meta" and line.startswith(("+++ ", "--- ")):
        return "bold"
    return _DIFF_STYLES.get(kind, "")


def diff_view(patch: str, width: int | None = None) -> Text:
    """The patch, one escaped line per line, coloured by kind (a pipe drops the colour):
    an added line that reads like a header is green like any added line. ``width``: a
    terminal's, each line folded to it (:func:`terminal_rows`), every further row after
    kodo's mark; None (a pipe): lines whole."""
    out = Text()
    for kind, line in diff_lines(patch):
        shown = visible(line, multiline=True).expandtabs(4)
        for row in [shown] if width is None else terminal_rows(shown, width):
            out.append(row, style=_style(kind, line))
            out.append("\n")
    return out


@dataclass
class StepCost:
    calls: int = 0
    failed: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


def spent_number(call: dict[str, Any], key: str) -> float:
    """What a settled call spent of its run's budget (``spentTokens``, ``spentUsd``)."""
    value = call.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def costs_by_step(calls: list[dict[str, Any]]) -> dict[str, StepCost]:
    """Each step's provider calls (paid attempts), failed calls, tokens and cost."""
    found: dict[str, StepCost] = {}
    for call in calls:
        step = found.setdefault(str(call.get("stepId")), StepCost())
        step.calls += 1
        step.failed += call.get("status") == "failed"
        step.tokens += int(spent_number(call, "spentTokens"))
        step.cost_usd += spent_number(call, "spentUsd")
    return found


def timeline_table(run: dict[str, Any], calls: list[dict[str, Any]]) -> Table:
    """One row per step: state, round, deliveries, duration, calls, tokens, cost, detail."""
    rows = {str(s.get("stepId")): s for s in run.get("steps") or [] if isinstance(s, dict)}
    costs = costs_by_step(calls)
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for name in ("step", "state", "round", "deliveries", "duration", "calls", "tokens", "cost"):
        table.add_column(name, justify="left" if name in ("step", "state") else "right")
    table.add_column("detail", overflow="fold")
    for step, state, detail in step_states(run):
        row = rows.get(step, {})
        duration = row.get("durationMs")
        took = f"{duration} ms" if isinstance(duration, int) else None
        if took is not None and detail.startswith(took):
            detail = detail.removeprefix(took).strip()  # the duration has its own column
        paid: list[Text] = [cell(None), cell(None), cell(None)]  # the approval is no step
        if step in rows or step in costs:
            spent = costs.get(step, StepCost())
            calls_made = f"{spent.calls} ({spent.failed} failed)" if spent.failed else spent.calls
            paid = [cell(calls_made), cell(spent.tokens), cell(usd(spent.cost_usd))]
        table.add_row(
            cell(step),
            cell(state),
            cell(row.get("round")),
            cell(row.get("deliveries")),
            cell(took),
            *paid,
            ascii_cell(detail or None),  # agent-quoted: a step's error
        )
    return table


@dataclass
class RunStory:
    """Everything ``kodo run show`` draws, as the API answered it."""

    run: dict[str, Any]
    intent: dict[str, Any]
    revisions: dict[str, Any]
    calls: list[dict[str, Any]]
    artifacts: list[dict[str, Any]]
    # Each round's patch, oldest first: (artifact name, text). A repair round's patch is
    # its own commit on top of the earlier rounds', so the change is all of them.
    patches: list[tuple[str, str]] = field(default_factory=list)
    decision: dict[str, Any] | None = None
    diagnostic: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def of_kind(artifacts: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Every artifact of a kind, oldest first (a later round's is stored later)."""
    found = [a for a in artifacts if a.get("kind") == kind and isinstance(a.get("id"), int)]
    return sorted(found, key=lambda a: int(a["id"]))


def latest(artifacts: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    """The newest artifact of a kind (a later round's decision or output replaces the
    earlier one; patches add up: see :func:`of_kind`)."""
    found = of_kind(artifacts, kind)
    return found[-1] if found else None


def round_label(index: int, name: str) -> str:
    """``patch.r2.diff (round 2, a repair on top of round 1)``-like heading of a patch."""
    if index == 0:
        return f"{visible(name)} (round 1)"
    return f"{visible(name)} (round {index + 1}, a repair on top of round {index})"


def current_revision(revisions: dict[str, Any]) -> dict[str, Any] | None:
    current = revisions.get("currentPlanSha256")
    listed = [r for r in revisions.get("revisions") or [] if isinstance(r, dict)]
    matching = [r for r in listed if r.get("planSha256") == current]
    return matching[-1] if matching else (listed[-1] if listed else None)


def plan_lines(revision: dict[str, Any] | None) -> list[str]:
    """The approved (or current) plan in brief: its digest, design's first line, files,
    and the decision on it with the reviewer's comment."""
    if revision is None:
        return ["plan:       - (none compiled yet)"]
    lines = [
        f"plan:       revision {one_line(revision.get('revision'))}"
        f"  sha256 {one_line(revision.get('planSha256'))}"
    ]
    raw = revision.get("plan")
    plan: dict[str, Any] = raw if isinstance(raw, dict) else {}
    design = plan.get("design")
    if design is not None:
        first = block_lines(str(design))[0]
        lines += labelled("design:", first, column=12)  # folded: no row starts with it
    for f in plan.get("files") or []:
        if isinstance(f, dict):  # with the path a rename takes away, paths quoted if not plain
            lines += file_lines(f, why=False, column=12)
    decision = revision.get("decision")
    if isinstance(decision, dict):
        lines.append(
            f"decision:   {one_line(decision.get('decision'))} by"
            f" {one_line(decision.get('approver'))} at {local_time(decision.get('decidedAt'))}"
        )
        comment = decision.get("comment")
        if comment is not None:
            lines.extend(f"  comment:  {line}" for line in block_lines(str(comment)))
    else:
        lines.append("decision:   - (not decided)")
    return lines


_SHOW = 14
"""Where ``kodo run show``'s values start once flush (``verify:     ``), as a card's column."""


def _flush(rows: list[str]) -> list[str]:
    """Rows :func:`labelled` indents for a card, flush left as ``kodo run show``'s are."""
    return [row.removeprefix("  ") for row in rows]


def verification_lines(story: RunStory) -> list[str]:
    """The command DecideST chose and how it exited (ExecuteST's diagnostic, or 0)."""
    argv = (story.decision or {}).get("argv")
    if not isinstance(argv, list) or not argv:
        return ["verify:     - (no command chosen)"]
    # each argument as a shell would read it, folded under the label: an argument padded
    # to a row's end drew the agent's own "exit: 0" row (red-team helper-103)
    lines = _flush(
        labelled("verify:", one_line(shlex.join(str(a) for a in argv)), prose=False, column=_SHOW)
    )
    execute = next(
        (
            s
            for s in story.run.get("steps") or []
            if isinstance(s, dict) and s.get("stepId") == "ExecuteST"
        ),
        None,
    )
    if execute is None:
        lines.append("  exit:     - (not run yet)")
    elif execute.get("status") == "succeeded":
        lines.append("  exit:     0")
    elif story.diagnostic is not None and "exit_code" in story.diagnostic:
        timed_out = " (timed out)" if story.diagnostic.get("timed_out") else ""
        lines.append(f"  exit:     {one_line(story.diagnostic['exit_code'])}{timed_out}")
    else:
        lines.append(f"  exit:     - ({one_line(execute.get('status'))})")
    return lines


def artifact_table(artifacts: list[dict[str, Any]]) -> Table:
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for name in ("step", "name", "kind", "size", "sha256"):
        table.add_column(name, justify="right" if name == "size" else "left", no_wrap=True)
    for a in artifacts:
        table.add_row(
            cell(a.get("stepId")),
            cell(a.get("name")),
            cell(a.get("kind")),
            cell(a.get("size")),
            cell(a.get("sha256")),
        )
    return table


def calls_summary(calls: list[dict[str, Any]]) -> str:
    costs = costs_by_step(calls).values()
    failed = sum(c.failed for c in costs)
    tokens = sum(c.tokens for c in costs)
    spent = sum(c.cost_usd for c in costs)
    return f"calls:      {len(calls)} ({failed} failed), {tokens} tokens, {usd(spent)}"


def local_time(iso: object) -> str:
    """An API time in this machine's zone, to the second (``2026-11-30 18:11:41 UTC``)."""
    if not isinstance(iso, str):
        return "-"
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    except ValueError:
        return one_line(iso)


def show_view(story: RunStory) -> Group:
    """``kodo run show``: who asked what, the plan and its decision, the steps, the calls,
    the patch's diffstat, the verification, and every artifact with its digest."""
    run, intent = story.run, story.intent
    head = [
        f"run {one_line(run.get('runId'))}  status={one_line(run.get('status'))}"
        f"  next={one_line(run.get('nextAction'))}  retries={one_line(run.get('retryCount'))}",
        f"goal:       {one_line(intent.get('goal'))}",
        f"submitter:  {one_line(intent.get('submittedBy'))}",
        f"repo:       {one_line(intent.get('repo'))}",
        f"base:       {one_line(intent.get('baseRef'))} at {one_line(intent.get('baseCommit'))}",
        f"created:    {local_time(run.get('createdAt'))}"
        f"  finished: {local_time(run.get('finishedAt'))}",
    ]
    if run.get("branch"):
        head.append(f"branch:     {one_line(run['branch'])}")
    if run.get("error"):
        head.extend(_flush(labelled("error:", one_line(run["error"]), column=_SHOW)))
    if isinstance(run.get("budget"), dict):
        head.append(budget_line(run["budget"]))
    parts: list[RenderableType] = [Text("\n".join(head))]
    parts.append(Text("\n".join(plan_lines(current_revision(story.revisions)))))
    parts.append(Text("steps:", style="bold"))
    parts.append(timeline_table(run, story.calls))
    parts.append(Text(calls_summary(story.calls)))
    if len(story.patches) == 1:
        parts.append(Text("diffstat:", style="bold"))
        parts.append(Text("\n".join(diffstat_lines(diffstat(story.patches[0][1])))))
    elif story.patches:  # every round: a repair's patch alone is not the run's change
        parts.append(Text(f"diffstat, {len(story.patches)} rounds:", style="bold"))
        for index, (name, text) in enumerate(story.patches):
            parts.append(Text(round_label(index, name)))
            parts.append(Text("\n".join(diffstat_lines(diffstat(text)))))
    parts.append(Text("\n".join(verification_lines(story))))
    parts.append(Text(f"artifacts: {len(story.artifacts)}", style="bold"))
    if story.artifacts:
        parts.append(artifact_table(story.artifacts))
    parts.extend(Text(f"note: {one_line(note)}", style="yellow") for note in story.notes)
    return Group(*parts)


def json_lines(value: object) -> list[str]:
    """A JSON value pretty-printed, then escaped: its strings' escapes show as text."""
    return block_lines(json.dumps(value, indent=2, ensure_ascii=False))
