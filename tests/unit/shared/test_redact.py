"""Secrets are redacted before anything is stored or logged; token counts are not."""

from __future__ import annotations

from shared.redact import REDACTED, redact, redact_text


def test_credential_keys_are_blanked_whatever_their_value() -> None:
    record = {"apiKey": "abc", "headers": {"Authorization": "Basic x"}, "db_password": "p"}
    assert redact(record) == {
        "apiKey": REDACTED,
        "headers": {"Authorization": REDACTED},
        "db_password": REDACTED,
    }


def test_token_counts_are_not_secrets() -> None:
    info = {"tokens": {"total": 10, "input": 5}, "usage": {"total_tokens": 10}}
    assert redact(info) == info


def test_credential_shaped_values_are_blanked_inside_text() -> None:
    prompt = "use sk-abcdefghijklmnopqrstuvwx and ghp_abcdefghijklmnopqrstuvwxyz0123 please"
    assert redact_text(prompt) == f"use {REDACTED} and {REDACTED} please"
    assert redact(["Bearer abcdefghijklmnopqrstu"]) == [REDACTED]
    assert "AKIA" not in redact_text("key AKIAABCDEFGHIJKLMNOP")


def test_ordinary_text_is_left_alone() -> None:
    text = "Add a multiply function to calc.py; skip the risky bits"
    assert redact_text(text) == text
