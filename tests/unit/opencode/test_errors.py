"""How daemon failures map onto retry-or-not errors."""

from __future__ import annotations

import pytest

from shared.opencode.errors import (
    OpenCodeAborted,
    OpenCodeConfigError,
    OpenCodeError,
    OpenCodePermanentError,
    OpenCodeServerError,
    OpenCodeTransientError,
    StructuredOutputMissing,
    classify_http_error,
    classify_info_error,
)
from tests.unit.opencode.captures import capture


def test_a_successful_structured_reply_has_no_error() -> None:
    assert classify_info_error(capture("prompt.structured.response.json")["info"]) is None


def test_an_aborted_turn_is_a_transient_abort() -> None:
    error = classify_info_error(capture("prompt.aborted.response.json")["info"])
    assert isinstance(error, OpenCodeAborted)
    assert isinstance(error, OpenCodeTransientError)
    assert error.code == "opencode_aborted"
    assert error.name == "MessageAbortedError"


def test_a_prose_answer_to_a_schema_is_structured_output_missing() -> None:
    error = classify_info_error(capture("prompt.structured.no-tool-call.response.json")["info"])
    assert isinstance(error, StructuredOutputMissing)
    assert isinstance(error, OpenCodePermanentError)
    assert error.code == "structured_output_missing"


def test_a_non_retryable_llm_http_400_is_permanent_and_keeps_its_status() -> None:
    error = classify_info_error(capture("prompt.llm-http400.response.json")["info"])
    assert type(error) is OpenCodePermanentError
    assert error.status == 400
    assert "fake bad request" in str(error)


def test_a_retryable_api_error_is_transient() -> None:
    info = {"error": {"name": "APIError", "data": {"message": "busy", "isRetryable": True}}}
    assert type(classify_info_error(info)) is OpenCodeTransientError


@pytest.mark.parametrize(
    "name",
    [
        "ProviderAuthError",
        "ContextOverflowError",
        "MessageOutputLengthError",
        "ContentFilterError",
        "UnknownError",
        "SomethingNewError",
    ],
)
def test_model_failures_that_retrying_cannot_fix_are_permanent(name: str) -> None:
    error = classify_info_error({"error": {"name": name, "data": {"message": "no"}}})
    assert type(error) is OpenCodePermanentError
    assert error.name == name


@pytest.mark.parametrize("raw", ["boom", {"data": {}}, {"name": 3}, []])
def test_a_malformed_error_object_fails_closed_as_permanent(raw: object) -> None:
    assert type(classify_info_error({"error": raw})) is OpenCodePermanentError


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, OpenCodeTransientError),
        (502, OpenCodeTransientError),
        (503, OpenCodeTransientError),
        (504, OpenCodeTransientError),
        (400, OpenCodePermanentError),
        (404, OpenCodePermanentError),
        (401, OpenCodeConfigError),
        (500, OpenCodeServerError),
    ],
)
def test_http_statuses_map_to_retry_or_not(status: int, expected: type[OpenCodeError]) -> None:
    assert type(classify_http_error(status, {"name": "X", "data": {}})) is expected


def test_an_http_500_is_a_transient_server_error_whatever_it_answered() -> None:
    """The daemon answers an unknown model with the same 500 as any internal failure
    (captured): the status alone never makes a configuration error."""
    body = capture("prompt.unknown-model.http500.response.json")
    error = classify_http_error(500, body)
    assert type(error) is OpenCodeServerError
    assert isinstance(error, OpenCodeTransientError)
    assert (error.status, error.name) == (500, "UnknownError")
    assert (
        str(error)
        == "HTTP 500 UnknownError: Unexpected server error. Check server logs for details."
    )


def test_a_non_json_error_body_still_maps_by_status() -> None:
    error = classify_http_error(503, "<html>bad gateway</html>")
    assert type(error) is OpenCodeTransientError
    assert "bad gateway" in str(error)


def test_every_error_class_has_its_own_stable_code() -> None:
    classes = [
        OpenCodeError,
        OpenCodeTransientError,
        OpenCodeAborted,
        OpenCodePermanentError,
        OpenCodeConfigError,
        OpenCodeServerError,
        StructuredOutputMissing,
    ]
    assert len({cls.code for cls in classes}) == len(classes)
