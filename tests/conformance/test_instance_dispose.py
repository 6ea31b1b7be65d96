"""``POST /instance/dispose``: the real daemon and oc-compat alike.

kodo releases what a daemon holds open for a worktree once its run rests (waits for a
person, or ended): opencode serve 1.18.33 keeps about 60 MB and thousands of memory
mappings per directory it has seen, after the sessions are deleted. What kodo relies on:
the answer is a bool, and a session's stored turn outlives the dispose (a delivery that
still has to read or delete it can, at the price of the directory opened again).

These cases dispose a directory with a turn in flight, which kodo never does, and which
leaves 1.18.33 unwell in a way no other case should inherit: for a while after it, on
every directory, an abort soon after a turn goes busy ends the turn with no error told
and no message written, and plan prompts have answered 500 (seen in CI; one turn
answered in between hides it). So the real daemon here is this module's own, in its
own sandbox folders, never the one the rest of the suite shares.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.oc_daemon.daemon import DaemonState
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA
from shared.opencode.client import OpenCodeClient
from shared.opencode.errors import OpenCodePermanentError
from shared.opencode.messages import PromptReply
from shared.opencode.tools import permission_rules, tools_map
from tests.conformance.conftest import (
    BACKENDS,
    MODEL,
    Backend,
    SandboxDirs,
    backend_of,
    scripted_daemon,
)

pytestmark = pytest.mark.conformance

HANG_GUARD_S = 60.0
"""A turn that never ends fails the case instead of hanging it (not a timing claim)."""

FORMAT = {"type": "json_schema", "schema": PLAN_OUTPUT_SCHEMA, "retryCount": 1}


@pytest.fixture(scope="module")
def own_sandbox(tmp_path_factory: pytest.TempPathFactory) -> SandboxDirs:
    return SandboxDirs(
        tmp_path_factory.mktemp("dispose-workspaces"), tmp_path_factory.mktemp("dispose-repos")
    )


@pytest.fixture(scope="module")
def own_daemon(
    opencode_binary: Path,
    scripted_llm: str,
    tmp_path_factory: pytest.TempPathFactory,
    own_sandbox: SandboxDirs,
) -> Iterator[DaemonState]:
    """A real daemon for this module alone (see the module's docstring)."""
    state_dir = tmp_path_factory.mktemp("opencode-dispose-state")
    with scripted_daemon(opencode_binary, scripted_llm, state_dir, own_sandbox) as state:
        yield state


@pytest.fixture(scope="module")
def own_backends() -> dict[str, Backend]:
    return {}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, own_backends: dict[str, Backend]) -> Backend:
    """The suite's backends, but the real one is this module's own daemon."""
    return backend_of(request, own_backends, "own_daemon", "own_sandbox")


@pytest.fixture
def client(backend: Backend) -> Iterator[OpenCodeClient]:
    with backend.client() as made:
        yield made


def _plan_turn(
    client: OpenCodeClient, backend: Backend, title: str, *, text: str, wait: bool
) -> str:
    """A fresh plan session in the backend's repository and its structured prompt:
    answered (``wait``) or sent with ``prompt_async``. Its session id."""
    directory = str(backend.repo)
    session_id = str(
        client.create_session(
            directory=directory, title=title, permission=permission_rules("plan")
        )["id"]
    )
    send = client.prompt if wait else client.prompt_async
    send(
        session_id,
        directory=directory,
        agent="plan",
        model=MODEL,
        text=text,
        tools=tools_map("plan"),
        format=FORMAT,
    )
    return session_id


def _answered_session(client: OpenCodeClient, backend: Backend, title: str) -> str:
    return _plan_turn(client, backend, title, text="Plan a change to README.md", wait=True)


def test_dispose_answers_true_and_the_stored_turn_outlives_it(
    backend: Backend, client: OpenCodeClient
) -> None:
    directory = str(backend.repo)
    session_id = _answered_session(client, backend, "kodo dispose keeps the turn")
    before = client.last_message(session_id, directory=directory)
    assert before is not None
    assert before.structured is not None

    assert client.dispose_instance(directory=directory) is True

    after = client.last_message(session_id, directory=directory)
    assert after is not None
    assert after.structured == before.structured
    assert client.get_session(session_id, directory=directory)["id"] == session_id
    assert client.delete_session(session_id, directory=directory) is True


def test_a_turn_in_flight_when_its_directory_is_disposed_ends_aborted(
    backend: Backend, client: OpenCodeClient
) -> None:
    """A dispose ends every turn in the directory without an answer: kodo never
    disposes a directory with a call in flight, and a turn ended so is never taken for
    an answer. Read from the state, not the stream: for a directory opened once,
    1.18.33 tells an abort on ``/global/event`` and writes the aborted message; for one
    opened again after an earlier dispose it was seen to do neither (the turn just
    stops; the collector's reconciliation reads the state the same way)."""
    directory = str(backend.repo)
    session_id = _plan_turn(
        client,
        backend,
        "kodo dispose mid-turn",
        text="Plan a change to README.md [oc:slow=30000]",
        wait=False,
    )
    deadline = time.monotonic() + HANG_GUARD_S
    while session_id not in client.busy_sessions(directory=directory):
        assert time.monotonic() < deadline, "the turn never went busy"
        time.sleep(0.05)
    assert client.dispose_instance(directory=directory) is True
    while session_id in client.busy_sessions(directory=directory):
        assert time.monotonic() < deadline, "the disposed directory's turn is still busy"
        time.sleep(0.05)
    time.sleep(1.0)  # the daemon writes an aborted turn's message just after its idle
    reply = _newest_answer(client, session_id, directory)
    if reply is not None:  # 1.18.33 wrote none for a directory opened again: only the prompt
        assert reply.error_name == "MessageAbortedError"
        assert reply.structured is None


def _newest_answer(client: OpenCodeClient, session_id: str, directory: str) -> PromptReply | None:
    """The turn's assistant message once written (the daemon writes the aborted message
    just after the session goes idle; until then the newest is the prompt, a 400)."""
    try:
        return client.last_message(session_id, directory=directory)
    except OpenCodePermanentError as exc:
        if exc.status == 400:
            return None
        raise


def test_a_directory_opened_again_after_a_dispose_is_told_on_the_global_stream(
    backend: Backend, client: OpenCodeClient
) -> None:
    """The collector follows ``/global/event``: a run released while it waited for its
    approver opens its worktree again for the next call, and that call's idle must
    still be told."""
    directory = str(backend.repo)
    _answered_session(client, backend, "kodo dispose then again")
    assert client.dispose_instance(directory=directory) is True
    with client.events(directory=None, timeout_s=30.0) as stream:
        events = iter(stream)
        assert next(events).type == "server.connected"
        session_id = _plan_turn(
            client, backend, "kodo after dispose", text="Plan a change to README.md", wait=False
        )
        deadline = time.monotonic() + HANG_GUARD_S
        story: list[str] = []
        for event in events:
            if event.session_id == session_id:
                story.append(event.type)
                if event.type == "session.idle":
                    break
            assert time.monotonic() < deadline, story
    reply = client.last_message(session_id, directory=directory)
    assert reply is not None
    assert reply.structured is not None
