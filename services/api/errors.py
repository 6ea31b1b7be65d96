"""Every failure leaves as ``{"error": {"code", "message", "details"}}``.

Expected outcomes are KodoErrors (one handler renders them all); HTTP errors raised by
routing or Werkzeug (404, 405, 413) get the same shape; anything else is a logged 500.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared.errors import InvalidInput, KodoError

log = logging.getLogger(__name__)


class UnsupportedMediaType(KodoError):
    code = "unsupported_media_type"
    http_status = 415


class MalformedJson(InvalidInput):
    code = "malformed_json"


class Unreadable(KodoError):
    """Stored data the API cannot render: a server fault, not the caller's."""

    code = "unreadable"
    http_status = 500


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    return response


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


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(KodoError, _kodo_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
