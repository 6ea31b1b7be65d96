"""The JSON API as the CLI sees it: one httpx client, errors turned into exit code 1.

The CLI never reads the database for run commands: what it shows is what any other
API client would see, so the API stays the only door (and auth, when it arrives,
covers the CLI too: ``--token`` is already sent as a Bearer header).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from services.cli.context import api_url_for, home_option, token_for
from shared.domain.display import visible

TIMEOUT_S = 10.0

F = TypeVar("F", bound=Callable[..., Any])


class ApiError(click.ClickException):
    """The API answered with an error (or not at all); exit code 1 with its message."""

    exit_code = 1

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(visible(message))  # an API error may quote agent-written text
        self.status = status
        self.code = code


def api_options(func: F) -> F:
    """``--api-url``, ``--token`` and ``--home`` on every command that talks to the API."""
    func = click.option(
        "--token",
        envvar="KODO_API_TOKEN",
        default=None,
        help="Bearer token sent with every request (env KODO_API_TOKEN).",
    )(func)
    func = click.option(
        "--api-url",
        envvar="KODO_API_URL",
        default=None,
        help="API base URL (env KODO_API_URL; else the one `kodo up` recorded; "
        "else http://127.0.0.1:8000).",
    )(func)
    return home_option(func)


class ApiClient:
    """Thin typed calls; each returns the decoded JSON object or raises ApiError."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=TIMEOUT_S, headers=headers)

    @classmethod
    def from_options(cls, api_url: str | None, token: str | None, home: Path | None) -> ApiClient:
        return cls(api_url_for(api_url, home), token_for(token, home))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send the request; an unreachable API is an ApiError naming the URL.

        A 503 or 429 with ``Retry-After`` (the API is busy, or the database restarting)
        is sent again after the wait asked for, at most :data:`RETRIES` times, when
        sending it twice is harmless: a read, a request carrying an Idempotency-Key, or
        one the API documents as idempotent (starting a run, deciding, cancelling).
        """
        for attempt in range(RETRIES + 1):
            try:
                reply = self.http.request(method, path, json=json, headers=headers, params=params)
            except httpx.HTTPError as exc:
                raise ApiError(
                    f"cannot reach the API at {self.base_url} ({type(exc).__name__}: {exc}); "
                    "is it running (`kodo up`), or pass --api-url / KODO_API_URL"
                ) from exc
            wait_s = retry_after_s(reply)
            if wait_s is None or attempt == RETRIES or not _repeatable(method, path, headers):
                return reply
            time.sleep(wait_s)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns

    def call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """The decoded body of a 2xx answer; anything else raises with the API's own message."""
        reply = self.request(method, path, json=json, headers=headers, params=params)
        if reply.is_success:
            return decode(reply)
        raise error_of(method, path, reply)

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return as_object(self.call("GET", path, params=params), path)

    def get_list(self, path: str) -> list[dict[str, Any]]:
        """A JSON array of objects (``GET /runs/{id}/artifacts``); anything else raises."""
        body = self.call("GET", path)
        if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
            raise ApiError(f"{path}: expected a JSON array of objects")
        return body

    def download(self, path: str, params: dict[str, str] | None = None) -> bytes:
        """The raw bytes of a 2xx answer (an artifact); anything else raises."""
        reply = self.request("GET", path, params=params)
        if reply.is_success:
            return reply.content
        raise error_of("GET", path, reply)

    def post(
        self, path: str, body: dict[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return as_object(self.call("POST", path, json=body, headers=headers), path)


RETRIES = 3
MAX_RETRY_AFTER_S = 30.0
_IDEMPOTENT_POSTS = re.compile(
    r"^/(?:intents/[^/]+/run|runs/[^/]+/(?:approve-plan|reject-plan|request-changes|cancel))$"
)
"""POSTs the API documents as safe to repeat (an identical repeat changes nothing)."""


def retry_after_s(reply: httpx.Response) -> float | None:
    """How long a 503 or 429 asked the client to wait (``Retry-After`` in seconds, at
    most MAX_RETRY_AFTER_S) before sending the same request again, or None: not such an
    answer, or one without a wait in seconds (final)."""
    if reply.status_code not in (429, 503):
        return None
    raw = reply.headers.get("Retry-After", "").strip()
    return min(float(raw), MAX_RETRY_AFTER_S) if raw.isdigit() else None


def _repeatable(method: str, path: str, headers: dict[str, str] | None) -> bool:
    if method in ("GET", "HEAD"):
        return True
    if headers and headers.get("Idempotency-Key"):
        return True
    return method == "POST" and _IDEMPOTENT_POSTS.match(path) is not None


def decode(reply: httpx.Response) -> Any:
    try:
        return reply.json()
    except ValueError as exc:
        raise ApiError(
            f"{reply.request.method} {reply.request.url.path}: answered {reply.status_code} "
            "with a body that is not JSON",
            status=reply.status_code,
        ) from exc


def as_object(body: Any, path: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(f"{path}: expected a JSON object, got {type(body).__name__}")
    return body


def error_of(method: str, path: str, reply: httpx.Response) -> ApiError:
    """The API's ``{"error": {"code", "message", "details"}}`` as one readable line."""
    code = None
    message = reply.text.strip()[:500] or reply.reason_phrase
    try:
        body = reply.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = err.get("code") if isinstance(err.get("code"), str) else None
        message = str(err.get("message", message))
        details = err.get("details")
        if details:
            message += f" {details}"
    label = f"{code}: " if code else ""
    return ApiError(
        f"{method} {path} -> {reply.status_code} {label}{message}",
        status=reply.status_code,
        code=code,
    )
