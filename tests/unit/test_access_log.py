"""gunicorn's access log never writes a query string or a credential header."""

from __future__ import annotations

import logging

from services.api.access_log import NoSecretsInAccessLog, clean_atom
from shared.redact import REDACTED

TOKEN = "kodo_" + "x" * 43


def test_the_request_line_keeps_method_path_and_protocol_but_not_the_query() -> None:
    line = f"GET /runs/1/events?token={TOKEN}&until=done HTTP/1.1"
    assert clean_atom("r", line) == "GET /runs/1/events?[omitted] HTTP/1.1"
    assert clean_atom("q", f"token={TOKEN}") == "[omitted]"
    assert clean_atom("q", "") == ""


def test_a_referer_loses_its_query_and_credential_headers_are_blanked() -> None:
    assert clean_atom("f", "http://x/ui/login?next=/ui/a&pwd=1") == "http://x/ui/login?[omitted]"
    assert clean_atom("{authorization}i", f"Bearer {TOKEN}") == REDACTED
    assert clean_atom("{cookie}i", "kodo_session=abc") == REDACTED


def test_a_token_anywhere_else_is_redacted() -> None:
    assert clean_atom("a", f"curl/8 {TOKEN}") == f"curl/8 {REDACTED}"


def test_the_filter_rewrites_a_records_atoms_in_place() -> None:
    atoms = {"r": f"GET /x?token={TOKEN} HTTP/1.1", "s": 200}
    record = logging.LogRecord("gunicorn.access", logging.INFO, "", 0, '"%(r)s" %(s)s', (), None)
    record.args = atoms
    assert NoSecretsInAccessLog().filter(record)
    assert record.getMessage() == '"GET /x?[omitted] HTTP/1.1" 200'
