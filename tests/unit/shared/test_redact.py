"""Secrets are redacted before anything is stored or logged; token counts are not."""

from __future__ import annotations

import importlib
import random
import re
import time

from shared.redact import (
    _SECRET_VALUE,
    _URL_PASSWORD,
    REDACTED,
    SHORTEST_SECRET_VALUE,
    redact,
    redact_text,
)


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


def test_kodo_api_tokens_are_blanked_wherever_they_appear() -> None:
    token = "kodo_" + "Ab3-_x" * 7 + "z"  # PREFIX + token_urlsafe(32): 43 characters
    assert (
        redact_text(f"auth failed for {token} at 12:00") == f"auth failed for {REDACTED} at 12:00"
    )
    assert redact({"note": f"GET /runs/1?x={token}"}) == {"note": f"GET /runs/1?x={REDACTED}"}
    assert redact_text("kodo_test_ui") == "kodo_test_ui", "a database name is not a token"


def test_the_password_of_a_url_is_blanked_and_the_rest_kept() -> None:
    assert redact_text("postgresql+psycopg://kodo:s3cr3t@db:5432/kodo") == (
        f"postgresql+psycopg://kodo:{REDACTED}@db:5432/kodo"
    )
    assert redact_text("redis://:hunter2@127.0.0.1:6379/0") == (
        f"redis://:{REDACTED}@127.0.0.1:6379/0"
    )
    assert redact_text("see https://user:p%40ss@example.com/x and more") == (
        f"see https://user:{REDACTED}@example.com/x and more"
    )


def test_urls_without_a_password_are_left_alone() -> None:
    for url in (
        "postgresql+psycopg://postgres@127.0.0.1:5432/kodo",
        "http://127.0.0.1:8000/runs/1?until=waiting_input",
        "http://host:8080/path@x",
    ):
        assert redact_text(url) == url


def test_password_pairs_are_blanked_whatever_the_spelling() -> None:
    line = "connect host=db password=hunter2 PASSWD='two words' pwd=\"x y\" DB_PASSWORD=abc"
    assert redact_text(line) == (
        f"connect host=db password={REDACTED} PASSWD={REDACTED} pwd={REDACTED}"
        f" DB_PASSWORD={REDACTED}"
    )


def test_tokens_in_query_strings_are_blanked() -> None:
    assert redact_text("GET /runs/1/events?token=abc123&until=done") == (
        f"GET /runs/1/events?token={REDACTED}&until=done"
    )
    assert redact_text("/cb?access_token=xyz") == f"/cb?access_token={REDACTED}"
    assert redact_text("total_tokens=120 tokens=5") == "total_tokens=120 tokens=5"


def test_credential_keys_include_pwd_and_csrf_tokens() -> None:
    assert redact({"pwd": "x", "csrf_token": "y", "total_tokens": 3}) == {
        "pwd": REDACTED,
        "csrf_token": REDACTED,
        "total_tokens": 3,
    }


def test_no_text_shorter_than_the_skip_threshold_can_hold_a_secret_value() -> None:
    """Short strings skip the value scan: that is exact only while the pattern's
    shortest possible match is at least the threshold (the regex parser's own width)."""
    parser = importlib.import_module("re._parser")  # the stdlib's own regex parser
    shortest, _ = parser.parse(_SECRET_VALUE.pattern).getwidth()
    assert shortest >= SHORTEST_SECRET_VALUE
    slack = "xoxb-0123456789"  # the shortest credential the scan knows: 15 characters
    assert len(slack) == SHORTEST_SECRET_VALUE
    assert redact_text(slack) == REDACTED
    assert redact({"note": slack, "type": "string"}) == {"note": REDACTED, "type": "string"}


def test_a_key_is_judged_the_same_each_time_it_is_seen() -> None:
    """Keys are judged once per process (cached): a secret key stays blanked on reuse."""
    for _ in range(3):
        assert redact({"api_key": "k", "Authorization": "Bearer x", "type": "t"}) == {
            "api_key": REDACTED,
            "Authorization": REDACTED,
            "type": "t",
        }


def test_bearer_tokens_are_blanked_in_any_case_and_anthropic_keys_too() -> None:
    for word in ("Bearer", "bearer", "BEARER", "bEaReR"):
        assert redact_text(f"{word}  abcdefghijklmnopqrstu!") == f"{REDACTED}!"
    assert redact_text("key=sk-ant-api03-abcdefghijklmnop") == f"key={REDACTED}"


_PLAIN_SECRET_VALUE = re.compile(
    r"(sk-[A-Za-z0-9_\-]{16,}"
    r"|sk-ant-[A-Za-z0-9_\-]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|xox[abpr]-[A-Za-z0-9\-]{10,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|kodo_[A-Za-z0-9_\-]{40,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-+/=]{16,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"(?:[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----|[\s\S]*))"
)
"""The value pattern written plainly, each alternative as its vendor documents it (a
private key without its END line taken to the text's end): the pattern in use is
rearranged for speed, and must find exactly what this one finds."""


def test_the_fast_value_pattern_finds_exactly_what_the_plain_one_does() -> None:
    pieces = [
        *("sk-", "sk-ant-", "ghp_", "gho_", "ghx_", "xoxb-", "xoxz-", "AKIA", "kodo_"),
        *("Bearer ", "bearer\t", "BEARER  ", "-----BEGIN RSA PRIVATE KEY-----"),
        *("-----END RSA PRIVATE KEY-----", "abcdEFGH1234", "_", "-", " ", "\n", "x", "="),
        *("/", "+", ".", "\u212a", "\u00e9", "\u017f"),  # Kelvin sign, e acute, long s
    ]
    rng = random.Random(11)  # noqa: S311 - a reproducible corpus, not a secret
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        assert _SECRET_VALUE.sub("#", text) == _PLAIN_SECRET_VALUE.sub("#", text), text


def test_a_credential_used_as_a_key_is_blanked_too() -> None:
    """A model's answer chooses its keys: one may be the secret itself."""
    leaked = "sk-live0123456789abcdefghijkl"  # a fake key the record must not keep
    answer = {"files": {leaked: "added"}, "hosts": {"https://u:hunter2pass@db.example": 1}}
    assert redact(answer) == {
        "files": {REDACTED: "added"},
        "hosts": {f"https://u:{REDACTED}@db.example": 1},
    }
    assert redact({"summary": {"type": "string"}}) == {"summary": {"type": "string"}}


_WORD_BOUNDARY_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s/?#@:]*:)[^\s/?#@]+(@)")
"""The URL pattern as it was, from a word boundary (quadratic: red-team helper-126)."""


def test_the_url_pattern_finds_what_the_word_boundary_one_did() -> None:
    """Starting where a run of scheme characters starts finds every password the
    word-boundary pattern found, in the same place (and ones after ``_`` or a digit,
    which it did not)."""
    pieces = [
        *("http", "git+ssh", "s3", "x.y", "://", ":", "@", "u", "pw", "a.", ".", "-", "+"),
        *("1", " ", "/", "?", "#", "\n", "\u212a", "\u017f"),
    ]
    rng = random.Random(7)  # noqa: S311 - a reproducible corpus, not a secret
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 24)))
        before = {(m.end(1), m.start(2)) for m in _WORD_BOUNDARY_URL.finditer(text)}
        now = {(m.end(1), m.start(2)) for m in _URL_PASSWORD.finditer(text)}
        assert before <= now, text
    assert redact_text("_ftp://c:secretpw@e") == f"_ftp://c:{REDACTED}@e"
    assert redact_text("1http://c:secretpw@e") == f"1http://c:{REDACTED}@e"
    assert redact_text("x.-pw://c:secretpw@e") == f"x.-pw://c:{REDACTED}@e"


def test_a_private_key_without_its_end_is_blanked_to_the_end_of_the_text() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    assert redact_text(f"said: {key}and more") == f"said: {REDACTED}"


ANSWER_CAP = 8 * 1024 * 1024
"""KODO_MAX_ANSWER_BYTES: the longest string an answer (and so a record) can hold."""


def test_agent_text_at_the_answer_cap_is_redacted_in_linear_time() -> None:
    """Every answer kodo records is redacted whole, before a contract's maxima cut it,
    and ``re`` holds the GIL: a pattern quadratic in a string an agent chose froze the
    worker's every thread (100 kB of ``a.`` and one URL: minutes; red-team helper-126).
    Each shape here, 8 MiB long, is scanned in well under the seconds a quadratic scan
    of a hundredth of it took."""
    shapes = {
        "dotted words, one URL": "a." * (ANSWER_CAP // 2) + " https://example.invalid/",
        "BEGIN lines, no END": "-----BEGIN PRIVATE KEY-----\n" * (ANSWER_CAP // 28),
        "END lines after a BEGIN": "-----BEGIN PRIVATE KEY-----\n"
        + "-----END AAAA " * (ANSWER_CAP // 14),
        "schemes back to back": "a://" * (ANSWER_CAP // 4),
        "a password with no host": "http://u:" + "p" * ANSWER_CAP,
        "names with blanks, one =": ("token" + " " * 1000) * (ANSWER_CAP // 1005) + "=",
    }
    for shape, text in shapes.items():
        start = time.process_time()
        redact({"structured": {"design": text}})
        spent = time.process_time() - start
        assert spent < 5.0, f"{shape}: {spent:.1f} s of CPU for {len(text)} characters"
