"""Every failure leaves as ``{"error": {"code", "message", "details"}}``, or as an HTML
page on the browser's routes (``/ui/...``, ``/docs``).

Expected outcomes are KodoErrors (one handler renders them all); HTTP errors raised by
routing or Werkzeug (404, 405, 413) get the same shape; a request that found no free
database connection in time is a 503 with ``Retry-After`` (the API is busy, nothing was
done); anything else is a logged 500.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, Response, has_request_context, jsonify, render_template, request
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared.domain.display import visible, visible_data
from shared.errors import InvalidInput, KodoError

log = logging.getLogger(__name__)

DB_BUSY_RETRY_AFTER_S = 5
"""What a refused request is told to wait: a burst drains in seconds, not minutes."""


class UnsupportedMediaType(KodoError):
    code = "unsupported_media_type"
    http_status = 415


class MalformedJson(InvalidInput):
    code = "malformed_json"


class Unreadable(KodoError):
    """Stored data the API cannot render: a server fault, not the caller's."""

    code = "unreadable"
    http_status = 500


BROWSER_PREFIXES = ("/ui/", "/docs")
TITLES = {
    400: "That request was not valid",
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "That conflicts with the run's state",
    413: "Too large",
    429: "Too many requests",
    500: "Something went wrong on our side",
    503: "Busy, or a dependency is unreachable",
}


def for_browser() -> bool:
    """A page a person opened (the UI, the docs): errors are pages, not JSON."""
    return has_request_context() and request.path.startswith(BROWSER_PREFIXES)


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    if for_browser():
        return _error_page(status, code, message, details or {})
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    return response


def _error_page(status: int, code: str, message: str, details: dict[str, Any]) -> Response:
    """The same error as a page; its text may quote what an agent wrote, so every
    string is shown with its escapes visible (and Jinja escapes the markup)."""
    shown = visible_data(details)
    page = render_template(
        "error.html",
        status=status,
        code=visible(code),
        title=TITLES.get(status, "Error"),
        message=visible(message, multiline=True),
        details="\n".join(f"{k}: {v}" for k, v in shown.items()) if shown else "",
    )
    return Response(page, status=status, mimetype="text/html")


def _kodo_error(exc: KodoError) -> Response:
    return error_response(exc.http_status, exc.code, exc.message, exc.details)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")
    message = exc.description or code
    if isinstance(exc, RequestEntityTooLarge):
        message = "the request body is too large"
    response = error_response(status, code, message)
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _retry_later(code: str, message: str, rule: str) -> Response:
    """A 503 the client should send again after ``Retry-After``."""
    response = error_response(503, code, message, {"rule": [rule]})
    response.headers["Retry-After"] = str(DB_BUSY_RETRY_AFTER_S)
    return response


def _database_busy(exc: PoolTimeout) -> Response:
    """No pooled connection came free within KODO_API_DB_WAIT_S: refused, nothing done.

    Raised at a checkout, before any statement of the request's transaction ran (the
    one that failed to start rolls back), so the client may simply send it again."""
    log.warning("database pool exhausted: %s", exc)
    return _retry_later(
        "database_busy",
        "no database connection came free in time (KODO_API_DB_WAIT_S): the API is busy;"
        f" nothing was done, retry after {DB_BUSY_RETRY_AFTER_S} seconds",
        "db_pool_wait",
    )


def _database_unavailable(exc: OperationalError) -> Response:
    """The database refused a connection or dropped one mid-request (a restart, a
    failover): a 503 with ``Retry-After``, never a 500. The request's transaction did
    not commit unless the connection was lost during its COMMIT; repeating an approval,
    rejection or cancel is safe (an identical repeat is accepted), so is a read."""
    log.warning("database unavailable: %s", exc)
    return _retry_later(
        "database_unavailable",
        "the database connection failed (restarting or unreachable); retry after"
        f" {DB_BUSY_RETRY_AFTER_S} seconds",
        "database_reachable",
    )


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(KodoError, _kodo_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(PoolTimeout, _database_busy)
    app.register_error_handler(OperationalError, _database_unavailable)
    app.register_error_handler(Exception, _unexpected)
