"""Telling the daemon's configuration errors from its internal failures.

``opencode serve`` 1.18.33 answers an unknown model, an unknown provider and an
unknown agent with the very same HTTP 500 as any internal failure (captured: name
``UnknownError``, message "Unexpected server error. Check server logs for details.",
only the ``ref`` differs). So a 500 is terminal only when it matches that name and
message AND the daemon's own lists (``GET /agent``, ``GET /config/providers``) lack
the agent or model we asked for; every other 500 is transient.
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.opencode.diagnosis import (
    DAEMON_UNEXPECTED,
    DaemonCatalogue,
    diagnose_server_error,
    may_be_configuration,
)
from shared.opencode.errors import (
    CONFIG_HINT,
    OpenCodeConfigError,
    OpenCodeServerError,
    classify_http_error,
)
from tests.unit.opencode.captures import capture


def _error(body: object) -> OpenCodeServerError:
    error = classify_http_error(500, body)
    assert isinstance(error, OpenCodeServerError)
    return error


def _catalogue() -> DaemonCatalogue:
    catalogue = DaemonCatalogue.from_json(
        capture("agent.list.response.json"), capture("config.providers.response.json")
    )
    assert catalogue is not None
    return catalogue


def test_the_real_daemons_lists_read_as_agents_and_models() -> None:
    catalogue = _catalogue()
    assert {"plan", "build"} <= catalogue.agents
    assert catalogue.models == frozenset({("kodo", "kodo-scripted")})


@pytest.mark.parametrize(
    "name",
    ["prompt.unknown-model.http500.response.json", "prompt.unknown-agent.http500.response.json"],
)
def test_the_captured_unknown_model_and_agent_answers_match_by_name_and_message(name: str) -> None:
    body = capture(name)
    assert body["data"]["message"] == DAEMON_UNEXPECTED
    assert may_be_configuration(_error(body))


@pytest.mark.parametrize(
    "body",
    [
        {"name": "UnknownError", "data": {"message": "database is locked", "ref": "err_1"}},
        {"name": "InternalError", "data": {"message": DAEMON_UNEXPECTED}},
        "<html>500 Internal Server Error</html>",
    ],
)
def test_a_500_with_another_name_or_message_is_never_a_configuration_error(body: object) -> None:
    error = _error(body)
    assert not may_be_configuration(error)
    assert diagnose_server_error(error, "no-such-agent", ("x", "y"), _catalogue()) is error


def test_an_unknown_model_is_a_configuration_error_that_names_the_model() -> None:
    error = _error(capture("prompt.unknown-model.http500.response.json"))
    diagnosed = diagnose_server_error(error, "plan", ("kodo", "no-such-model"), _catalogue())
    assert isinstance(diagnosed, OpenCodeConfigError)
    assert (diagnosed.status, diagnosed.name) == (500, "UnknownError")
    assert "no model 'kodo/no-such-model'" in str(diagnosed)
    assert "kodo/kodo-scripted" in str(diagnosed)
    assert CONFIG_HINT in str(diagnosed)


def test_an_unknown_agent_is_a_configuration_error_that_names_the_agent() -> None:
    error = _error(capture("prompt.unknown-agent.http500.response.json"))
    diagnosed = diagnose_server_error(
        error, "no-such-agent", ("kodo", "kodo-scripted"), _catalogue()
    )
    assert isinstance(diagnosed, OpenCodeConfigError)
    assert "no agent 'no-such-agent'" in str(diagnosed)
    assert "no model" not in str(diagnosed)


def test_a_500_while_the_agent_and_model_exist_stays_transient() -> None:
    error = _error(capture("prompt.unknown-model.http500.response.json"))
    assert diagnose_server_error(error, "plan", ("kodo", "kodo-scripted"), _catalogue()) is error


@pytest.mark.parametrize(
    ("agents", "providers"),
    [
        ({"not": "a list"}, {"providers": []}),
        ([{"name": "plan"}], {"providers": "nope"}),
        ([{"name": 3}], {"providers": []}),
        ([], {"providers": [{"id": "kodo", "models": []}]}),
    ],
)
def test_lists_of_an_unexpected_shape_diagnose_nothing(agents: Any, providers: Any) -> None:
    """Fail towards retrying: a daemon we cannot read is not proof of a wrong setting."""
    assert DaemonCatalogue.from_json(agents, providers) is None


def test_a_long_list_is_cut_in_the_message() -> None:
    catalogue = DaemonCatalogue(
        agents=frozenset(f"agent-{i:03}" for i in range(500)), models=frozenset()
    )
    error = _error(capture("prompt.unknown-agent.http500.response.json"))
    diagnosed = diagnose_server_error(error, "plan", ("kodo", "kodo-scripted"), catalogue)
    assert len(str(diagnosed)) < 1500
    assert "agent-000" in str(diagnosed)
    assert "agent-499" not in str(diagnosed)
