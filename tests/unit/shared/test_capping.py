"""diagnostic.json is capped: the largest agent-written parts are cut, and the cut is said."""

from __future__ import annotations

import json
import time

from shared.domain.capping import MAX_CUTS_LISTED, cap_json, encoded_size
from shared.domain.step_outcome import DIAGNOSTIC_MAX_BYTES, ERROR_MAX_CHARS, StepOutcome


def test_a_document_under_the_cap_is_returned_unchanged() -> None:
    doc = {"step": "CompileST", "output": "short"}
    assert cap_json(doc, 1000) == (doc, [])


def test_the_largest_string_is_cut_and_the_small_fields_stay_whole() -> None:
    doc = {"step": "ExecuteST", "exit_code": 3, "stdout": "x" * 50_000, "stderr": "y" * 2_000}
    capped, cuts = cap_json(doc, 10_000)

    assert encoded_size(capped) <= 10_000
    assert capped["step"] == "ExecuteST"
    assert capped["exit_code"] == 3
    assert capped["stdout"].endswith("characters]")
    assert cuts[0].to_json()["field"] == "stdout"
    assert cuts[0].original == 50_000


def test_a_long_list_of_small_items_loses_its_tail() -> None:
    doc = {"attempts": [{"attempt": i, "error": "e"} for i in range(5_000)]}
    capped, cuts = cap_json(doc, 4_000)

    assert encoded_size(capped) <= 4_000
    assert capped["attempts"][0] == {"attempt": 0, "error": "e"}
    assert cuts[0].kind == "list"


def test_a_failed_step_s_diagnostic_is_capped_and_names_what_was_cut() -> None:
    hostile = "\u202e" + "A" * 5_000_000  # a 5 MB agent error, bidi override included
    outcome = StepOutcome.failed(
        f"no plan: {hostile}", {"step": "CompileST", "attempts": [{"error": hostile}] * 3}
    )
    artifact = outcome.artifacts[0]
    body = json.loads(artifact.content)

    assert len(artifact.content) <= DIAGNOSTIC_MAX_BYTES + 1024
    assert outcome.error is not None
    assert len(outcome.error) < ERROR_MAX_CHARS + 100
    assert body["step"] == "CompileST"
    assert body["truncated"]["rule"] == f"diagnostic.json is capped at {DIAGNOSTIC_MAX_BYTES} bytes"
    assert {c["field"] for c in body["truncated"]["cuts"]} >= {"attempts/0/error"}


def test_a_small_diagnostic_carries_no_truncation_note() -> None:
    body = json.loads(StepOutcome.failed("boom", {"step": "DecideST"}).artifacts[0].content)
    assert body == {"error": "boom", "step": "DecideST"}


def test_thousands_of_long_strings_are_cut_in_a_few_rounds_and_the_rules_stay() -> None:
    """2,000 agent-written paths of 4 kB: cut one string a round, capping took two
    minutes and then gave up, keeping nothing of the rules it was to name."""
    paths = [("d/" + "a" * 250 + "/") * 15 + f"{i:08d}" for i in range(2000)]
    doc = {
        "rules": ["max_files", "outside_plan"],
        "violations": [{"rule": "max_files", "detail": ", ".join(paths), "paths": paths}],
        "changes": [{"path": p, "status": "A"} for p in paths],
    }
    began = time.process_time()
    capped, cuts = cap_json(doc, DIAGNOSTIC_MAX_BYTES)

    assert time.process_time() - began < 10
    assert encoded_size(capped) <= DIAGNOSTIC_MAX_BYTES
    assert capped["rules"] == ["max_files", "outside_plan"]
    assert capped["violations"][0]["rule"] == "max_files"
    assert len(cuts) > MAX_CUTS_LISTED


def test_a_document_that_cannot_fit_keeps_its_small_top_level_fields() -> None:
    """Only strings and lists are cut: a mapping of 10,000 keys cannot be, and the
    document kept none of its fields."""
    by_path = {f"p{i}": "x" * 300 for i in range(10_000)}
    doc = {"rule": "max_files", "step": "ApplyPatchST", "by_path": by_path}
    capped, cuts = cap_json(doc, 16_000)

    assert capped == {"rule": "max_files", "step": "ApplyPatchST"}
    assert cuts


def test_the_cap_is_measured_as_the_diagnostic_is_stored_indented() -> None:
    outcome = StepOutcome.failed("x", {"items": [{"n": i} for i in range(40_000)]})
    assert len(outcome.artifacts[0].content) <= DIAGNOSTIC_MAX_BYTES + 1
