"""One error tree: a stable code and an HTTP status per expected failure."""

from __future__ import annotations

from typing import Any


class KodoError(Exception):
    code = "kodo_error"
    http_status = 400

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidInput(KodoError):
    code = "invalid_input"
    http_status = 400


class NotFound(KodoError):
    code = "not_found"
    http_status = 404


class Conflict(KodoError):
    code = "conflict"
    http_status = 409


class RepoNotAllowed(KodoError):
    code = "repo_not_allowed"
    http_status = 422


class InvalidPolicy(KodoError):
    """A repository's ``.kodo/policy.toml`` (at the trusted ref or base_ref) is unusable."""

    code = "invalid_policy"
    http_status = 422


class Unauthorized(KodoError):
    code = "unauthorized"
    http_status = 401


class Forbidden(KodoError):
    code = "forbidden"
    http_status = 403
