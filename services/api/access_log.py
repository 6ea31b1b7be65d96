"""Access log lines never carry a secret: no query string, no credential header.

gunicorn's access log (``--access-logfile``) is written by its own logger, not through
kodo's redacting formatter, and its request line (``%(r)s``) includes the query
string, where a careless client may put a token (``/runs/x/events?token=...``). This
filter, on the ``gunicorn.access`` logger, rewrites the atoms of each line before it
is formatted: query strings are omitted (request line, referer, ``%(q)s``), credential
headers blanked, and every other value passed through :func:`redact_text`.
"""

from __future__ import annotations

import logging
import re

from shared.redact import REDACTED, redact_text

ACCESS_LOGGER = "gunicorn.access"
OMITTED = "[omitted]"
_QUERY = re.compile(r"\?[^\s\"]*")
_QUERY_ONLY = frozenset({"q", "{query_string}e"})
_CARRY_A_URL = frozenset({"r", "f", "{raw_uri}e", "{request_uri}e", "{referer}i", "{location}o"})
_CREDENTIALS = frozenset(
    {"{authorization}i", "{cookie}i", "{set-cookie}o", "{http_authorization}e", "{http_cookie}e"}
)


def clean_atom(key: str, value: str) -> str:
    """One access-log atom as it may be written."""
    if key in _QUERY_ONLY:
        return OMITTED if value else value
    if key in _CREDENTIALS:
        return REDACTED
    if key in _CARRY_A_URL or key.startswith("{http_referer"):
        value = _QUERY.sub(f"?{OMITTED}", value)
    return redact_text(value)


class NoSecretsInAccessLog(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if isinstance(atoms, dict):
            for key, value in list(dict.items(atoms)):
                if isinstance(key, str) and isinstance(value, str):
                    dict.__setitem__(atoms, key, clean_atom(key, value))
        return True


def install_access_log_filter() -> None:
    """Idempotent: one filter on gunicorn's access logger, whoever starts the app."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, NoSecretsInAccessLog) for f in logger.filters):
        logger.addFilter(NoSecretsInAccessLog())
