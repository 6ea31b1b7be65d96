"""The scripted model: what it answers, chosen by the requested schema and the repo.

Pure given (seed, prompt, directory contents): no clock, no global state, so the
same request against the same working tree always gets the same answer.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from shared.hashing import canonical_json
from shared.rng import seeded_rng
from standins.oc_compat import edits, fixtures, recipes, repo
from standins.oc_compat.directives import Directives, parse, strip
from standins.oc_compat.schema_instance import minimal_instance, violate

PLAN_BEGIN = "--- plan.json ---"
PLAN_END = "--- end plan.json ---"
REPAIR_BEGIN = "--- verification output ---"
ANSWER_BEGIN = "--- the approver's answer ---"
REVIEW_BEGIN = "--- reviewer's comment ---"
REVIEW_END = "--- end reviewer's comment ---"
UNITTEST_ARGV = ["python3", "-m", "unittest", "discover", "-s", ".", "-p", "test_*.py"]
# git is off the default exec allowlist (and the sandbox shows no .git): list the tree.
FALLBACK_ARGV = ["python3", "-c", "import os; print(sorted(os.listdir('.')))"]
FAIL_ARGV = ["python3", "-c", "import sys; print('verification failed'); sys.exit(3)"]

_OPENINGS = (
    "Keep the change small and local:",
    "Make the smallest change that does the job:",
    "Touch as little as possible:",
    "One focused edit:",
)
_RISKS = (
    "The appended lines may not match the project's conventions.",
    "Reviewers may expect a broader change than a note.",
    "A concurrent edit of the same file would conflict.",
)
_COMMENT = {
    ".md": "<!-- {} -->",
    ".html": "<!-- {} -->",
    ".sh": "# {}",
    ".toml": "# {}",
    ".yaml": "# {}",
    ".yml": "# {}",
    ".cfg": "# {}",
    ".ini": "# {}",
    ".rb": "# {}",
    ".js": "// {}",
    ".ts": "// {}",
    ".go": "// {}",
    ".rs": "// {}",
    ".c": "// {}",
    ".h": "// {}",
    ".java": "// {}",
}


@dataclass(frozen=True)
class Answer:
    """What the model produced; ``billed`` is False when no tokens were spent."""

    structured: Any = None
    text: str | None = None
    error: dict[str, Any] | None = None
    finish: str | None = None
    billed: bool = True
    diff: str | None = None  # the build agent's edits, performed on the directory


def _request_line(prompt: str) -> str:
    """The user's request: kodo's ``Intent:`` line if present, else the first line."""
    lines = [line.strip() for line in strip(prompt).splitlines()]
    for line in lines:
        if line.startswith("Intent:"):
            return line.removeprefix("Intent:").strip()[:200]
    for line in lines:
        if line and not line.startswith("kodo-attempt:"):
            return line[:200]
    return "(empty request)"


def _recipe(directory: Path, prompt: str) -> recipes.Recipe | None:
    return recipes.recipe_for(
        _request_line(prompt),
        lambda p: (
            repo.safe_relative(directory, p) is not None
            and repo.read_text(directory, p) is not None
        ),
    )


def recipe_plan(recipe: recipes.Recipe, directory: Path) -> dict[str, Any]:
    """The plan of a recipe: the function in its module, its test beside it."""
    name, module, tests = recipe.op.name, recipe.module, recipe.test_module
    test_change = "modify" if repo.read_text(directory, tests) is not None else "add"
    return {
        "design": (
            f"Add {name}(a, b) to {module}, returning {recipe.op.expression}, and a unittest"
            f" case for it in {tests}."
        ),
        "files": [
            {"path": module, "change": "modify", "why": f"Define {name}(a, b)."},
            {"path": tests, "change": test_change, "why": f"Test {name} with a known value."},
        ],
        "risks": [f"Callers may expect {name} to accept floats as well as ints."],
        "tests": ["python3 -m unittest discover passes"],
    }


def review_comment(prompt: str) -> str | None:
    """The reviewer's comment kodo quotes when it asks for a revised plan, if any."""
    start, end = prompt.find(REVIEW_BEGIN), prompt.find(REVIEW_END)
    if start < 0 or end < start:
        return None
    return prompt[start + len(REVIEW_BEGIN) : end].strip()


def revised(plan: dict[str, Any], comment: str, directory: Path) -> dict[str, Any]:
    """The plan as the scripted model revises it: the design says what the reviewer
    asked, and every existing file the comment names joins the plan."""
    listed = {f["path"] for f in plan["files"]}
    added = [
        {"path": p, "change": "modify", "why": "The reviewer asked for it."}
        for p in repo.named_files(directory, comment)
        if p not in listed
    ]
    return {
        **plan,
        "design": f"{plan['design']} Revised after review: {comment[:300]}",
        "files": [*plan["files"], *added],
    }


def plan_output(seed: int, directory: Path, prompt: str) -> dict[str, Any]:
    """A PlanOutput: a recipe's plan if the intent asks for one (see recipes.py); else
    modify the files the prompt names, else README.md, else add notes. A prompt quoting
    a reviewer's comment gets that plan revised as the comment asks."""
    comment = review_comment(prompt)
    if comment is not None:
        first = prompt[: prompt.find(REVIEW_BEGIN)]
        return revised(plan_output(seed, directory, first), comment, directory)
    recipe = _recipe(directory, prompt)
    if recipe is not None:
        return recipe_plan(recipe, directory)
    clean = strip(prompt)
    named = repo.named_files(directory, clean)
    files: list[dict[str, str]]
    if named:
        files = [{"path": p, "change": "modify", "why": f"The request names {p}."} for p in named]
    elif repo.read_text(directory, "README.md") is not None:
        files = [{"path": "README.md", "change": "modify", "why": "Record the change for readers."}]
    else:
        files = [{"path": repo.NOTES_FILE, "change": "add", "why": "No README to extend."}]
    rng = seeded_rng(seed, "plan", clean)
    paths = ", ".join(f["path"] for f in files)
    tests = ["git apply --check accepts the patch"]
    if repo.has_unittest_files(directory):
        tests.append("python3 -m unittest discover passes")
    return {
        "design": f"{rng.choice(_OPENINGS)} {_request_line(prompt)} (files: {paths})",
        "files": files,
        "risks": [rng.choice(_RISKS)],
        "tests": tests,
    }


def _planned_changes(prompt: str) -> list[tuple[str, str, str | None]]:
    """(path, change, rename source) for each file of the plan embedded in the prompt."""
    start, end = prompt.find(PLAN_BEGIN), prompt.find(PLAN_END)
    if start < 0 or end < start:
        return []
    try:
        plan = json.loads(prompt[start + len(PLAN_BEGIN) : end])
    except ValueError:
        return []
    files = plan.get("files") if isinstance(plan, dict) else None
    changes: list[tuple[str, str, str | None]] = []
    for entry in files if isinstance(files, list) else []:
        if isinstance(entry, dict):
            path, change, source = entry.get("path"), entry.get("change"), entry.get("from")
            if isinstance(path, str) and change in ("add", "modify", "delete", "rename"):
                changes.append((path, str(change), source if isinstance(source, str) else None))
    return changes


def note_lines(seed: int, path: str, context: str) -> tuple[str, ...]:
    """Deterministic lines to append: a function for Python, a comment or line otherwise."""
    rng = seeded_rng(seed, "note", path, context)
    tag = f"{rng.getrandbits(32):08x}"
    note = f"kodo note {tag}: scripted change (seed {seed})"
    suffix = PurePosixPath(path).suffix
    if suffix == ".py":
        return (
            "",
            "",
            f"# {note}",
            f"def kodo_note_{tag}() -> str:",
            '    """Added by the kodo-scripted model."""',
            f'    return "{tag}"',
        )
    template = _COMMENT.get(suffix, "{}")
    return ("", template.format(note))


def scripted_changes(seed: int, directory: Path, prompt: str) -> list[repo.FileChange]:
    """The changes the scripted build agent makes, one per planned file.

    With a plan in the prompt, they touch exactly the planned paths with the planned
    kinds of change (a change it cannot make is left out, never replaced by another); a
    recipe's files get the recipe's edits (see recipes.py), others a visible note. Only
    a prompt without a plan gets the README (or notes file) fallback.
    """
    planned = _planned_changes(prompt)
    recipe = _recipe(directory, prompt)
    if recipe is not None and parse(prompt).buggy and REPAIR_BEGIN not in prompt:
        recipe = dataclasses.replace(recipe, buggy=True)  # right only once asked to repair
    context = canonical_json([[p, c] + ([s] if s else []) for p, c, s in planned])
    if REPAIR_BEGIN in prompt:  # a repair adds a note of its own: the tree it starts from
        context += canonical_json([repo.read_text(directory, p) for p, _, _ in planned])
    changes: list[repo.FileChange] = []
    for raw_path, change, raw_source in planned:
        path = repo.safe_relative(directory, raw_path)
        source = repo.safe_relative(directory, raw_source) if raw_source is not None else None
        if path is None or any(c.path == path for c in changes):
            continue
        if change == "rename":
            if source is not None:
                changes.append(repo.FileChange(path, change, (), source))
            continue
        rewrite = None if recipe is None else recipe.edits().get(path)
        if rewrite is not None and change in ("modify", "add"):
            changes.append(repo.FileChange(path, change, rewrite=rewrite))
            continue
        lines = () if change == "delete" else note_lines(seed, path, context)
        changes.append(repo.FileChange(path, change, lines))
    if not planned:
        fallback = "README.md" if repo.read_text(directory, "README.md") is not None else None
        path = fallback or repo.NOTES_FILE
        change = "modify" if fallback else "add"
        changes = [repo.FileChange(path, change, note_lines(seed, path, context))]
    return changes


def scripted_patch(seed: int, directory: Path, prompt: str) -> dict[str, Any]:
    """The scripted build agent's change as ``{summary, diff}``: a diff that applies to
    the working tree as it is now (oc-compat performs it as tool edits)."""
    changes = scripted_changes(seed, directory, prompt)
    return {"summary": scripted_patch_summary(changes), "diff": repo.tree_diff(directory, changes)}


def scripted_patch_summary(changes: list[repo.FileChange]) -> str:
    verbs = {"add": "add", "modify": "append to", "delete": "delete", "rename": "rename"}
    said = "; ".join(
        f"{'edit' if c.rewrite else verbs.get(c.change, c.change)} {c.path}" for c in changes
    )
    return f"Scripted patch: {said or 'nothing to change'}."


QUESTION = "Should the change also cover negative numbers?"


def build_output(directory: Path, directives: Directives, prompt: str = "") -> dict[str, Any]:
    """A BuildOutput: run the unittest suite if there is one, else show the diff stat;
    ``[oc:escalate]`` asks the approver first, ``[oc:nothing-to-verify]`` answers done."""
    if directives.escalate and ANSWER_BEGIN not in prompt:
        return {"next_action": "escalate", "argv": [], "reason": "Unsure.", "question": QUESTION}
    if directives.nothing_to_verify:
        return {"next_action": "done", "argv": [], "reason": "Nothing here can be run."}
    if directives.fail_verify:
        return {"next_action": "verify", "argv": FAIL_ARGV, "reason": "Scripted failure."}
    if repo.has_unittest_files(directory):
        return {"next_action": "verify", "argv": UNITTEST_ARGV, "reason": "Run the unit tests."}
    return {"next_action": "verify", "argv": FALLBACK_ARGV, "reason": "No tests; list the files."}


def structured_answer(
    seed: int, directory: Path, prompt: str, schema: dict[str, Any], directives: Directives
) -> Any:
    """The valid answer for ``schema``: scripted for kodo's contracts, minimal otherwise."""
    props = schema.get("properties")
    names = props if isinstance(props, dict) else {}
    if "design" in names:
        return plan_output(seed, directory, prompt)
    if "argv" in names:
        return build_output(directory, directives, prompt)
    return minimal_instance(schema)


_API_ERRORS = {
    "": (400, False, "scripted bad request"),
    "retryable": (503, True, "scripted overload"),
}


def api_error(kind: str) -> dict[str, Any]:
    """An ``APIError`` shaped like the daemon's report of a failed LLM HTTP call."""
    status, retryable, message = _API_ERRORS.get(kind, _API_ERRORS[""])
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}})
    return {
        "name": "APIError",
        "data": {
            "message": message,
            "statusCode": status,
            "isRetryable": retryable,
            "responseHeaders": {"content-type": "application/json"},
            "responseBody": body,
            "metadata": {"url": "http://127.0.0.1/v1/chat/completions"},
        },
    }


_WORDS = re.compile(r"\S+")


def answer(
    seed: int,
    directory: Path,
    prompt: str,
    fmt: dict[str, Any] | None,
    directives: Directives,
    fixtures_dir: Path | None = None,
) -> Answer:
    """The model's reply to one prompt, failures included as the directives script.

    Raises :class:`fixtures.FixtureError` when an ``[oc:fixture]`` cannot be honoured.
    """
    if directives.api_error is not None:
        return Answer(error=api_error(directives.api_error), billed=False)
    if fmt is None or fmt.get("type") != "json_schema":
        words = len(_WORDS.findall(strip(prompt)))
        return Answer(
            text=f"kodo-scripted (seed {seed}) read {words} words: {_request_line(prompt)}",
            finish="stop",
        )
    schema = fmt["schema"]
    found, value = (
        fixtures.scripted(fixtures_dir, directives.fixture, schema)
        if directives.fixture is not None
        else (False, None)
    )
    diff: str | None = None
    if fixtures.kind_of(schema) == "patch":  # the build agent edits, then reports
        patch = value if found else scripted_patch(seed, directory, prompt)
        diff, value = edit_report(patch)
    elif not found:
        value = structured_answer(seed, directory, prompt, schema, directives)
    if directives.no_structured:
        error = {
            "name": "StructuredOutputError",
            "data": {"message": "Model did not produce structured output", "retries": 0},
        }
        return Answer(text=json.dumps(value), error=error, finish="stop", diff=diff)
    if directives.wants_invalid:
        value = violate(schema, value)
    if directives.huge:
        value = inflate(value, directives.huge)
    return Answer(structured=value, finish="tool-calls", diff=diff)


def edit_report(patch: Any) -> tuple[str, Any]:
    """(the diff to perform, the EditReport to answer) from a ``{summary, diff}`` patch; a
    fixture may add ``files`` to report other files than it edits (a lying agent)."""
    if not isinstance(patch, dict) or not isinstance(patch.get("diff"), str):
        return "", patch  # an off-schema fixture answer: no edits, answered verbatim
    diff = patch["diff"]
    files = patch.get("files")
    if files is None:
        files = [edits.chunk_paths(chunk)[0] for chunk in edits.split_diff(diff)]
    return diff, {"summary": patch.get("summary", ""), "files": files}


def inflate(value: Any, size: int) -> Any:
    """``value`` with its first string field grown to ``size`` characters (``[oc:huge]``):
    the oversize, off-schema answer a hostile model sends to exhaust the worker's memory."""
    if not isinstance(value, dict):
        return value
    for key, field in value.items():
        if isinstance(field, str):
            return {**value, key: field + "x" * max(0, size - len(field))}
    return {**value, "padding": "x" * size}
