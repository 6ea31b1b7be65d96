"""Secrets never reach the ledger or the logs: redact them on the way in.

Keys that name a credential are blanked whatever their value; values that look like
a credential (API keys, kodo's own bearer tokens, private keys) are blanked wherever
they sit; so are the password of a URL (``scheme://user:[REDACTED]@host``) and the
value of a ``password=``/``passwd=``/``pwd=``/``token=`` pair (a query string, a DSN,
a command line). Token *counts* (``tokens``, ``total_tokens``) are not secrets and are
kept.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

REDACTED = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"(^|[_\-.])(api[_\-]?key|apikey|secret|password|passwd|authorization|cookie|"
    r"auth[_\-]?token|access[_\-]?token|refresh[_\-]?token|session[_\-]?token|"
    r"private[_\-]?key|client[_\-]?secret|bearer|pwd|csrf[_\-]?token)$",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    # Every alternative starts with one of these: positions that cannot start one are
    # skipped by a character-set test, not tried against each alternative in turn (every
    # prompt and answer passes here; with the lookahead and ``bearer`` spelled out
    # rather than under ``(?i:)`` a 3 kB text took 54-66 us instead of 88-102).
    r"(?=[sgxAkBb-])"
    r"(sk-[A-Za-z0-9_\-]{16,}"  # OpenAI-style keys (sk-ant-... too: its tail is in the class)
    r"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens
    r"|xox[abpr]-[A-Za-z0-9\-]{10,}"  # Slack tokens
    r"|AKIA[0-9A-Z]{16}"  # AWS access key ids
    r"|kodo_[A-Za-z0-9_\-]{40,}"  # kodo's API tokens: PREFIX + token_urlsafe(32), 43 chars
    r"|[Bb][Ee][Aa][Rr][Ee][Rr]\s+[A-Za-z0-9._\-+/=]{16,}"
    # a BEGIN without its END takes the rest of the text: the safer reading, and the
    # lazy scan for an END runs once, not once per BEGIN (quadratic: red-team helper-126)
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"(?:[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----|[\s\S]*))"
)


# scheme://user:PASSWORD@host: the user stays (it says whose), the password goes. A match
# starts only where a run of scheme characters does (and passes the run's leading
# digits, dots and dashes): from a word boundary it was tried at every letter after a dot
# of ``a.a.a...``, each try running to the run's end, quadratic in a string an agent chose
# (100 kB froze a worker's every thread; red-team helper-126). What it redacts is what the
# word-boundary pattern did (the scheme ends where the run does), and a scheme after a
# digit or ``_`` too.
_URL_PASSWORD = re.compile(
    r"(?i)(?<![a-z0-9+.\-])([0-9+.\-]*+[a-z][a-z0-9+.\-]*://[^\s/?#@:]*:)[^\s/?#@]+(@)"
)
# password=..., passwd=..., pwd=..., token=... (also access_token=, api_key=, secret=).
_SECRET_PAIR = re.compile(
    r"(?i)(?<![a-z0-9])((?:password|passwd|pwd|secret|(?:access_|auth_|api_)?token|api_?key)\s*=\s*)"
    r"(\"[^\"]*\"|'[^']*'|[^\s&;,'\"]+)"
)


SHORTEST_SECRET_VALUE = 15
"""No text shorter than this can hold a match of ``_SECRET_VALUE`` (its shortest
alternative is ``xox?-`` and ten characters): most strings in a record (a schema's
``type``, a tool's name, a status) are shorter, and skip that scan."""


def redact_text(text: str) -> str:
    if len(text) >= SHORTEST_SECRET_VALUE:
        text = _SECRET_VALUE.sub(REDACTED, text)
    # Each pattern below needs its literal ("://", "="): a text without it is skipped
    # (a substring test is ~100x cheaper than the scan; every prompt passes here).
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1{REDACTED}\2", text)
    if "=" in text:
        text = _SECRET_PAIR.sub(rf"\1{REDACTED}", text)
    return text


MAX_DEPTH = 96
"""Deeper than this, a value is replaced whole: answers are refused past 64 levels
(shared.opencode.json_shape) and kodo's own records nest a few more around them, so
only something that slipped past that check is cut, never a stack overflow."""
TOO_DEEP = "[kodo: nested too deep to keep]"


@lru_cache(maxsize=4096)
def _names_a_secret(key: str) -> bool:
    """Whether a key names a credential. Records repeat a few hundred keys (a schema's,
    a tool map's), so each is judged once per process."""
    return _SECRET_KEY.search(key) is not None


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` (JSON-like) with credentials replaced by ``[REDACTED]``.

    Keys are scanned like values: a model's answer chooses its keys too, and one can be
    a credential (``{"sk-...": 1}``). A short key costs a length test."""
    if _depth > MAX_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {
            (redact_text(k) if isinstance(k, str) else k): (
                REDACTED if isinstance(k, str) and _names_a_secret(k) else redact(v, _depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
