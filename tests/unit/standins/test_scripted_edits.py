"""The scripted build agent edits as a real model does: one tool call per model request
(read a file, then edit it; write a new one), then the EditReport naming what it changed.

Each request is decided from the prompt, the working tree and the calls already made
this turn, so the test plays the daemon: it carries out each call and asks again.
"""

from __future__ import annotations

import json
from pathlib import Path

from devstack.sample_repo import create_sample_repo
from shared.domain.contracts import EDIT_REPORT_SCHEMA
from shared.domain.prompts import apply_prompt, plan_brief
from standins.oc_compat import answers
from standins.scripted_llm.request import STRUCTURED_TOOL, ChatRequest
from standins.scripted_llm.script import decide

GOAL = "Add a multiply function to calc.py with a test"


def _request(repo: Path, prompt: str, made: list[tuple[str, str]]) -> ChatRequest:
    return ChatRequest(
        model="kodo-scripted",
        system=f"<env>\n  Working directory: {repo}\n</env>",
        prompt=prompt,
        tools={"read": {}, "edit": {}, "write": {}, STRUCTURED_TOOL: EDIT_REPORT_SCHEMA},
        tool_choice="required",
        calls_this_turn=len(made),
        stream=True,
        turn_calls=tuple(made),
    )


def _carry_out(tool: str, arguments: dict[str, str]) -> None:
    path = Path(arguments["filePath"])
    if tool == "write":
        path.write_text(arguments["content"])
    elif tool == "edit":
        text = path.read_text()
        assert text.count(arguments["oldString"]) == 1
        path.write_text(text.replace(arguments["oldString"], arguments["newString"]))


def test_the_demo_goal_is_carried_out_by_reads_and_edits_then_reported(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "calc")
    plan = answers.plan_output(0, repo, f"Intent: {GOAL}")
    prompt = apply_prompt(GOAL, plan_brief(plan), 1, [])
    made: list[tuple[str, str]] = []
    for _ in range(10):
        reply = decide(0, _request(repo, prompt, made))
        assert reply.tool is not None
        if reply.tool == STRUCTURED_TOOL:
            break
        arguments = json.loads(reply.arguments)
        _carry_out(reply.tool, arguments)
        made.append((reply.tool, reply.arguments))
    assert [(tool, Path(json.loads(a)["filePath"]).name) for tool, a in made] == [
        ("read", "calc.py"),
        ("edit", "calc.py"),
        ("read", "test_calc.py"),
        ("edit", "test_calc.py"),
    ]
    report = json.loads(reply.arguments)
    assert report["files"] == ["calc.py", "test_calc.py"]
    assert "def multiply(a: int, b: int) -> int:" in (repo / "calc.py").read_text()
    assert "from calc import add, multiply" in (repo / "test_calc.py").read_text()


def test_a_denied_edit_is_not_retried_in_a_loop(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "calc")
    plan = answers.plan_output(0, repo, f"Intent: {GOAL}")
    prompt = apply_prompt(GOAL, plan_brief(plan), 1, [])
    made: list[tuple[str, str]] = []
    for _ in range(10):  # the daemon carries nothing out: every edit is denied
        reply = decide(0, _request(repo, prompt, made))
        assert reply.tool is not None
        if reply.tool == STRUCTURED_TOOL:
            break
        made.append((reply.tool, reply.arguments))
    assert len(made) == 4
    assert json.loads(reply.arguments)["files"] == ["calc.py", "test_calc.py"]


def test_a_slow_edit_turn_holds_its_first_request_only(tmp_path: Path) -> None:
    """``[oc:slow=MS]`` holds the build agent's turn as it holds any other: the think
    time is spent once, on the turn's first model request, not on each tool call."""
    repo = create_sample_repo(tmp_path / "calc")
    plan = answers.plan_output(0, repo, f"Intent: {GOAL}")
    prompt = apply_prompt(f"{GOAL} [oc:slow=1500]", plan_brief(plan), 1, [])
    made: list[tuple[str, str]] = []
    held = []
    for _ in range(10):
        reply = decide(0, _request(repo, prompt, made))
        held.append(reply.slow_ms)
        assert reply.tool is not None
        if reply.tool == STRUCTURED_TOOL:
            break
        _carry_out(reply.tool, json.loads(reply.arguments))
        made.append((reply.tool, reply.arguments))
    assert held == [1500, 0, 0, 0, 0]
