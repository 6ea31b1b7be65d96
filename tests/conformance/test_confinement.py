"""The daemon cannot write outside the session's worktree, and kodo fails such a turn closed.

``opencode serve`` 1.18.33 (in its sandbox) against the scripted LLM, which aims
``write``/``edit`` at paths inside and outside the worktree (``[oc:tool=NAME@PATH]``);
the compat server shows the same tool parts without running them, so the wrapper's rule
is checked on both. What the daemon honours is in ``docs/opencode-confinement.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devstack.oc_daemon.daemon import DaemonState
from devstack.sample_repo import create_sample_repo
from shared.clock import SystemClock
from shared.db.models import OpenCodeCall
from shared.domain.contracts import EDIT_REPORT_SCHEMA
from shared.opencode.cache import LruCache
from shared.opencode.call_ledger import PostgresCallLedger
from shared.opencode.calls import CallFailed, StructuredCall, StructuredResult
from shared.opencode.exactly_once import ExactlyOnceCalls
from standins.scripted_llm import script
from tests.conformance.conftest import MODEL, Backend, SandboxDirs
from tests.conformance.lexical import lexical_to
from tests.factories import RunFactory

pytestmark = pytest.mark.conformance

README_FIRST = "# calc"


@dataclass(frozen=True)
class Runs:
    """Two runs' worktrees of one source repository; run1 holds a symlink to run2."""

    source: Path
    run1: Path
    run2: Path


def _runs(workspaces: Path, repos: Path) -> Runs:
    source = create_sample_repo(repos / "calc-src")
    made = []
    for name in ("run1", "run2"):
        where = workspaces / f"confine-{name}"
        if not where.exists():
            subprocess.run(
                ["git", "worktree", "add", "-q", "-b", f"confine-{name}", str(where)],
                cwd=source,
                check=True,
                capture_output=True,
                timeout=30,
            )
        made.append(where)
    link = made[0] / "link2"
    if not link.is_symlink():
        os.symlink(made[1], link)
    return Runs(source, made[0], made[1])


CallIn = Callable[[Runs, str], StructuredResult]


@pytest.fixture(scope="session")
def runs_by_backend() -> dict[str, Runs]:
    return {}


@pytest.fixture
def runs(
    backend: Backend,
    runs_by_backend: dict[str, Runs],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Runs:
    if backend.name not in runs_by_backend:
        if backend.name == "real":
            dirs: SandboxDirs = request.getfixturevalue("sandbox_dirs")
            found = _runs(dirs.workspaces, dirs.repos)
        else:
            found = _runs(tmp_path_factory.mktemp("ws-compat"), tmp_path_factory.mktemp("src"))
        runs_by_backend[backend.name] = found
    return runs_by_backend[backend.name]


@pytest.fixture
def call_in(db: Session, sessions: sessionmaker[Session], backend: Backend) -> Iterator[CallIn]:
    clients = []

    def call(runs: Runs, directive: str) -> StructuredResult:
        run = RunFactory()
        db.commit()
        plan = {"files": [{"path": "calc.py", "change": "modify", "why": "asked"}]}
        prompt = (
            f"Apply the approved plan. {directive}\n"
            f"--- plan.json ---\n{json.dumps(plan)}\n--- end plan.json ---"
        )
        asked = StructuredCall(
            str(run.id), "ApplyPatchST", 1, "build", prompt, EDIT_REPORT_SCHEMA, str(runs.run1)
        )
        client = backend.client(30.0)
        clients.append(client)
        wrapper = ExactlyOnceCalls(
            client,
            PostgresCallLedger(sessions),
            SystemClock(),
            model=MODEL,
            timeout_s=30.0,
            l1=LruCache(),
        )
        return wrapper.prompt_structured(asked)

    yield call
    for client in clients:
        client.close()


def _failed(call_in: CallIn, runs: Runs, directive: str) -> CallFailed:
    with pytest.raises(CallFailed) as failure:
        call_in(runs, directive)
    return failure.value


def _recorded(sessions: sessionmaker[Session], op_key: str) -> OpenCodeCall:
    with sessions() as s:
        return s.execute(select(OpenCodeCall).where(OpenCodeCall.op_key == op_key)).scalar_one()


def test_an_edit_inside_the_worktree_is_allowed_and_lands(
    backend: Backend, runs: Runs, call_in: CallIn, sessions: sessionmaker[Session]
) -> None:
    result = call_in(runs, "[oc:tool=edit@README.md] [oc:tool=write@notes/inside.txt]")
    assert _recorded(sessions, result.op_key).status == "succeeded"
    if backend.name == "real":
        assert (runs.run1 / "README.md").read_text().startswith(f"{README_FIRST} (edited)")
        assert (runs.run1 / "notes" / "inside.txt").read_text() == "written by the scripted model\n"


@pytest.mark.parametrize(
    ("aimed", "effect"),
    [
        ("write@../confine-run2/escape.txt", "confine-run2/escape.txt"),
        ("edit@../confine-run2/README.md", "confine-run2/README.md"),
        ("write@{source}/escape.txt", "{source}/escape.txt"),
        ("edit@{source}/README.md", "{source}/README.md"),
    ],
    ids=["write-another-run", "edit-another-run", "write-the-source-repo", "edit-the-source"],
)
def test_a_write_or_edit_outside_is_denied_and_fails_the_call_closed(
    backend: Backend,
    runs: Runs,
    call_in: CallIn,
    sessions: sessionmaker[Session],
    aimed: str,
    effect: str,
) -> None:
    target = runs.run1.parent / effect.format(source=runs.source)
    before = target.read_text() if target.exists() else None
    failure = _failed(call_in, runs, f"[oc:tool={aimed.format(source=runs.source)}]")
    assert (failure.kind, failure.error_name) == ("refused", "PathOutsideWorktree")
    assert not failure.retryable, "an escape attempt gets no other try"
    assert _recorded(sessions, failure.op_key).error_name == "PathOutsideWorktree"
    after = target.read_text() if target.exists() else None
    assert after == before, f"the daemon's external_directory deny must hold for {effect}"


def test_a_write_through_a_symlink_lands_outside_on_the_daemon_but_the_call_fails_closed(
    backend: Backend, runs: Runs, call_in: CallIn
) -> None:
    """1.18.33 judges the path as written (inside), then follows the link: kodo resolves it."""
    failure = _failed(call_in, runs, "[oc:tool=write@link2/via-link.txt]")
    assert failure.error_name == "PathOutsideWorktree"
    assert "link2/via-link.txt" in failure.error
    if backend.name == "real":
        assert (runs.run2 / "via-link.txt").exists(), "the daemon's own rule does not stop it"


def test_a_write_into_dot_git_fails_the_call_closed(
    backend: Backend, runs: Runs, call_in: CallIn
) -> None:
    failure = _failed(call_in, runs, "[oc:tool=write@.git/hooks-planted]")
    assert failure.error_name == "GitMetadataForbidden"


@pytest.mark.parametrize("backend", ["real"], indirect=True)  # the daemon's own HOME
def test_the_build_agent_may_write_the_daemons_tool_output_folder_but_the_call_fails_closed(
    request: pytest.FixtureRequest, backend: Backend, runs: Runs, call_in: CallIn
) -> None:
    """1.18.33 appends an ``external_directory`` allow for its own ``tool-output`` folder
    after every configured rule: a config cannot deny it; kodo's rule does."""
    state: DaemonState = request.getfixturevalue("real_daemon")
    planted = Path(state.home) / ".local/share/opencode/tool-output/planted.txt"
    failure = _failed(call_in, runs, f"[oc:tool=write@{planted}]")
    assert failure.error_name == "PathOutsideWorktree"
    assert planted.exists(), "the daemon allowed it: only kodo's rule catches this write"


def test_a_refused_turns_record_keeps_its_trail_and_none_of_what_the_model_said(
    backend: Backend, runs: Runs, call_in: CallIn, sessions: sessionmaker[Session]
) -> None:
    """A turn that reached outside may repeat what it read there in its answer: the
    ledger keeps the answer's ids, cost and usage and the paths its tools named."""
    failure = _failed(call_in, runs, "[oc:tool=read@../confine-run2/README.md]")
    assert failure.error_name == "PathOutsideWorktree"
    row = _recorded(sessions, failure.op_key)
    assert row.response is not None
    assert set(row.response) == {"info", "usage", "tools", "withheld"}
    assert {"structured", "parts", "error"}.isdisjoint(row.response["info"])
    named = [p for t in row.response["tools"] for p in t["paths"]]
    assert any(p.endswith("confine-run2/README.md") for p in named), named
    assert row.usage is not None


# -- paths through a link and dots, read as the daemon reads them (helper-114) --------


@pytest.fixture
def relative_aim(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scripted model sends ``[oc:tool=NAME@hop/...]`` as written, relative (a model
    names a path as it likes; the script otherwise prefixes the session directory)."""
    original = script.tool_arguments

    def arguments(name: str, directory: Path, target: str | None = None) -> dict[str, Any]:
        found = original(name, directory, target)
        if target is not None and target.startswith("hop/") and "filePath" in found:
            found = {**found, "filePath": target}
        return found

    monkeypatch.setattr(script, "tool_arguments", arguments)


@pytest.mark.parametrize("backend", ["real"], indirect=True)
@pytest.mark.usefixtures("relative_aim")
def test_a_write_into_tool_output_spelled_through_a_link_and_dots_fails_closed(
    request: pytest.FixtureRequest, runs: Runs, call_in: CallIn
) -> None:
    """Rule confinement (PathOutsideWorktree): kodo's reading of the path must be the
    daemon's. The daemon writes ``planted``; the call must fail closed."""
    state: DaemonState = request.getfixturevalue("real_daemon")
    planted = Path(state.home) / ".local/share/opencode/tool-output/lexical-planted.txt"
    raw = lexical_to(runs.run1, planted)
    assert os.path.normpath(os.path.join(runs.run1, raw)) == str(planted)  # Node's reading
    assert os.path.realpath(os.path.join(runs.run1, raw)).startswith(str(runs.run1))  # kodo's
    with pytest.raises(CallFailed) as failure:
        call_in(runs, f"[oc:tool=write@{raw}]")
    assert failure.value.error_name == "PathOutsideWorktree"


@pytest.mark.parametrize("backend", ["real"], indirect=True)
@pytest.mark.usefixtures("relative_aim")
def test_a_read_of_another_sessions_saved_output_through_a_link_and_dots_fails_closed(
    request: pytest.FixtureRequest, runs: Runs, call_in: CallIn
) -> None:
    """Another session's long tool output (another run's repository) read by this turn:
    kodo must refuse the turn, so nothing it read is kept."""
    state: DaemonState = request.getfixturevalue("real_daemon")
    saved = Path(state.home) / ".local/share/opencode/tool-output/tool_lexical_other_session"
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text("run B's repository: API_KEY=hunter2-of-run-b\n")
    raw = lexical_to(runs.run1, saved)
    with pytest.raises(CallFailed) as failure:
        call_in(runs, f"[oc:tool=read@{raw}]")
    assert failure.value.error_name == "PathOutsideWorktree"
