"""``[oc:huge=N]`` scripts a hostile model's oversize, off-schema answer."""

from __future__ import annotations

from pathlib import Path

from devstack.sample_repo import create_sample_repo
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA
from standins.oc_compat import answers
from standins.oc_compat.directives import parse


def test_huge_grows_the_plan_s_design_to_the_asked_size(tmp_path: Path) -> None:
    repo = create_sample_repo(tmp_path / "repo")
    prompt = "Add a docstring to calc.py [oc:huge=50000]"
    fmt = {"type": "json_schema", "schema": PLAN_OUTPUT_SCHEMA}
    reply = answers.answer(1, repo, prompt, fmt, parse(prompt))

    assert parse(prompt).huge == 50_000
    assert len(reply.structured["design"]) == 50_000
    assert set(reply.structured) == {"design", "files", "risks", "tests"}


def test_a_prompt_without_huge_answers_at_its_natural_size() -> None:
    assert parse("Add a docstring").huge == 0
