"""The API admits KODO_API_ACTIVE requests at once; the rest queue, then get a 503."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from services.api.admission import RETRY_AFTER_S, Admission


class Held:
    """A WSGI app whose requests to ``/hold`` wait until released (a busy view)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.served: list[str] = []

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/hold":
            self.entered.set()
            assert self.release.wait(10)
        self.served.append(path)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def call(app: Admission, path: str) -> tuple[str, dict[str, str], bytes]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response))
    return answer["status"], answer["headers"], body


def test_a_request_that_waits_past_its_turn_is_refused_503_naming_the_rule() -> None:
    inner = Held()
    app = Admission(inner, active=1, wait_s=0.2)
    holder = threading.Thread(target=call, args=(app, "/hold"))
    holder.start()
    assert inner.entered.wait(10)

    status, headers, body = call(app, "/runs/r1")
    health = call(app, "/healthz")

    inner.release.set()
    holder.join(10)
    after = call(app, "/runs/r1")
    assert status.startswith("503")
    assert headers["Retry-After"] == str(RETRY_AFTER_S)
    assert headers["X-Content-Type-Options"] == "nosniff", "the API's headers, as every answer"
    assert headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    error = json.loads(body)["error"]
    assert error["code"] == "api_busy"
    assert error["details"] == {"rule": ["api_queue_wait"]}
    assert "KODO_API_ACTIVE" in error["message"]
    assert health[0] == "200 OK", "a health check never queues"
    assert after[0] == "200 OK", "the turn came back when the held request ended"
    assert inner.served == ["/healthz", "/hold", "/runs/r1"], "the refused one never ran"


def test_a_queued_request_runs_when_a_turn_frees_within_its_wait() -> None:
    inner = Held()
    app = Admission(inner, active=1, wait_s=10)
    holder = threading.Thread(target=call, args=(app, "/hold"))
    holder.start()
    assert inner.entered.wait(10)
    answers: list[str] = []
    waiter = threading.Thread(target=lambda: answers.append(call(app, "/runs/r1")[0]))
    waiter.start()

    inner.release.set()
    holder.join(10)
    waiter.join(10)

    assert answers == ["200 OK"]
    assert inner.served == ["/hold", "/runs/r1"]
