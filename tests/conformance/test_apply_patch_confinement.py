"""kodo reads an ``apply_patch`` text as the daemon does (red-team helper-110).

``opencode serve`` 1.18.33 splits the patch text on ``\\n`` only and trims each header's
path with JavaScript's ``String.prototype.trim`` (which strips ``\\r``, ``\\v``, ``\\f``,
``\\u2028``, ``\\u2029`` and ``\\ufeff``). kodo's rule (``shared.opencode.confinement.
patch_paths``) had split with Python's ``str.splitlines`` and stripped with ``str.strip``,
so ``*** Add File: \\r<path>`` was, to the daemon, a header naming ``<path>`` and, to
kodo, one naming ``""`` (the worktree itself): kodo never saw where the patch wrote.

The scripted LLM is driven in-process: ``tool_arguments`` is patched for
``apply_patch`` so the real daemon receives exactly the patch text below.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from devstack.oc_daemon import daemon
from devstack.oc_daemon.config import scripted_provider
from devstack.oc_daemon.daemon import Confinement, DaemonState
from devstack.sample_repo import create_sample_repo
from devstack.supervisor import free_port
from shared.clock import SystemClock
from shared.domain.contracts import EDIT_REPORT_SCHEMA
from shared.opencode.cache import LruCache
from shared.opencode.call_ledger import PostgresCallLedger
from shared.opencode.calls import CallFailed, StructuredCall, StructuredResult
from shared.opencode.client import ModelRef
from shared.opencode.exactly_once import ExactlyOnceCalls
from standins.oc_compat import answers
from standins.scripted_llm import script
from tests.conformance.conftest import PASSWORD, Backend, SandboxDirs, warm
from tests.conformance.lexical import lexical_to
from tests.factories import RunFactory

pytestmark = pytest.mark.conformance


@dataclass(frozen=True)
class Pair:
    run1: Path  # the hostile run's worktree (the session directory)
    run2: Path  # another run's worktree in the same workspaces folder


def _worktrees(workspaces: Path, repos: Path, tag: str) -> Pair:
    source = create_sample_repo(repos / f"rt110-src-{tag}")
    made = []
    for name in ("a", "b"):
        where = workspaces / f"rt110-{tag}-{name}"
        subprocess.run(
            ["git", "worktree", "add", "-q", "-b", f"rt110-{tag}-{name}", str(where)],
            cwd=source,
            check=True,
            capture_output=True,
            timeout=30,
        )
        made.append(where)
    return Pair(made[0], made[1])


PatchFor = Callable[[Path], str]

GPT = ModelRef("kodo", "gpt-5-kodo-scripted")
"""1.18.33 offers ``apply_patch`` (and neither ``edit`` nor ``write``) to a model whose id
holds ``gpt-`` (not ``oss``, not ``gpt-4``): the scripted LLM under such a name, as an
operator running kodo on a GPT-5 model would have it."""


@pytest.fixture(scope="module")
def gpt_daemon(
    opencode_binary: Path,
    scripted_llm: str,
    tmp_path_factory: pytest.TempPathFactory,
    sandbox_dirs: SandboxDirs,
) -> Iterator[tuple[DaemonState, Backend]]:
    state_dir = tmp_path_factory.mktemp("opencode-gpt")
    spec = dataclasses.replace(scripted_provider(scripted_llm), model_id=GPT.model_id)
    state = daemon.start(
        opencode_binary,
        state_dir=state_dir,
        port=free_port(),
        provider=spec,
        password=PASSWORD,
        confinement=Confinement(sandbox_dirs.workspaces),
    )
    try:
        repo = create_sample_repo(sandbox_dirs.workspaces / "rt110-gpt-warm" / "calc")
        warm(state.url, PASSWORD, repo, GPT)
        yield state, Backend("real-gpt", state.url, PASSWORD, repo)
    finally:
        daemon.stop(state_dir)


@pytest.fixture
def aim_patch(monkeypatch: pytest.MonkeyPatch) -> Callable[[PatchFor], None]:
    """Make the scripted model's ``apply_patch`` call send ``patch_for(directory)``."""

    def aim(patch_for: PatchFor) -> None:
        original = script.tool_arguments

        def arguments(name: str, directory: Path, target: str | None = None) -> dict[str, Any]:
            if name == "apply_patch":
                return {"patchText": patch_for(directory)}
            return original(name, directory, target)

        monkeypatch.setattr(script, "tool_arguments", arguments)
        # no edit/write for a gpt- model: after the patch the model only reports
        monkeypatch.setattr(answers, "scripted_changes", lambda *_a, **_k: [])

    return aim


@pytest.fixture
def call_in(
    db: Session, sessions: sessionmaker[Session], gpt_daemon: tuple[DaemonState, Backend]
) -> Iterator[Callable[[Path], StructuredResult]]:
    backend = gpt_daemon[1]
    clients = []

    def call(directory: Path) -> StructuredResult:
        run = RunFactory()
        db.commit()
        plan = {"files": [{"path": "calc.py", "change": "modify", "why": "asked"}]}
        prompt = (
            "Apply the approved plan. [oc:tool=apply_patch]\n"
            f"--- plan.json ---\n{json.dumps(plan)}\n--- end plan.json ---"
        )
        asked = StructuredCall(
            str(run.id), "ApplyPatchST", 1, "build", prompt, EDIT_REPORT_SCHEMA, str(directory)
        )
        client = backend.client(30.0)
        clients.append(client)
        wrapper = ExactlyOnceCalls(
            client,
            PostgresCallLedger(sessions),
            SystemClock(),
            model=GPT,
            timeout_s=30.0,
            l1=LruCache(),
        )
        return wrapper.prompt_structured(asked)

    yield call
    for client in clients:
        client.close()


def _patch(*headers: str) -> str:
    return "\n".join(["*** Begin Patch", *headers, "*** End Patch"]) + "\n"


def test_a_patch_header_hidden_behind_a_carriage_return_is_refused(
    gpt_daemon: tuple[DaemonState, Backend],
    sandbox_dirs: SandboxDirs,
    aim_patch: Callable[[PatchFor], None],
    call_in: Callable[[Path], StructuredResult],
) -> None:
    """The daemon always allows its own ``tool-output`` folder (docs/opencode-confinement.md:
    only kodo's rule catches that write). Spelled ``*** Add File: \\r<path>``, the write
    had landed in the daemon's HOME with the build turn recorded as succeeded."""
    state = gpt_daemon[0]
    pair = _worktrees(sandbox_dirs.workspaces, sandbox_dirs.repos, "home")
    planted = Path(state.home) / ".local/share/opencode/tool-output/rt110-planted.txt"
    aim_patch(lambda _d: _patch(f"*** Add File: \r{planted}", "+planted by run A"))
    with pytest.raises(CallFailed) as failure:
        call_in(pair.run1)
    assert failure.value.error_name == "PathOutsideWorktree"


@pytest.mark.parametrize(
    "spelling", ["\r", "\ufeff", "\u2028"], ids=["carriage-return", "bom", "line-separator"]
)
def test_a_denied_patch_into_another_run_with_a_hidden_header_fails_the_call_closed(
    sandbox_dirs: SandboxDirs,
    aim_patch: Callable[[PatchFor], None],
    call_in: Callable[[Path], StructuredResult],
    spelling: str,
) -> None:
    """A denied escape is still an attempt (docs/opencode-confinement.md, item 1): the
    daemon refuses this patch into run B's worktree, and kodo fails the call closed."""
    tag = {"\r": "cr", "\ufeff": "bom", "\u2028": "ls"}[spelling]
    pair = _worktrees(sandbox_dirs.workspaces, sandbox_dirs.repos, f"deny-{tag}")
    target = pair.run2 / "from-run-a.txt"
    aim_patch(lambda _d: _patch(f"*** Add File: {spelling}{target}", "+run A was here"))
    with pytest.raises(CallFailed) as failure:
        call_in(pair.run1)
    assert failure.value.error_name == "PathOutsideWorktree"
    assert not target.exists()


def test_a_patch_that_replaces_the_worktrees_git_file_with_a_git_folder_is_refused(
    sandbox_dirs: SandboxDirs,
    aim_patch: Callable[[PatchFor], None],
    call_in: Callable[[Path], StructuredResult],
) -> None:
    """Inside the worktree the daemon has no rule against ``.git``: a patch deleting the
    ``.git`` file (kodo's link to the run's git dir) and adding a ``.git/config`` of the
    model's (``core.fsmonitor`` runs a command in a git that refreshes the index there)
    fails the call closed (and kodo's worktree guard refuses the folder before any git)."""
    pair = _worktrees(sandbox_dirs.workspaces, sandbox_dirs.repos, "git")
    aim_patch(
        lambda _d: _patch(
            "*** Delete File: \r.git",
            "*** Add File: \r.git/config",
            "+[core]",
            "+\tfsmonitor = touch /tmp/rt110-fsmonitor-ran; echo",
        )
    )
    with pytest.raises(CallFailed) as failure:
        call_in(pair.run1)
    assert failure.value.error_name == "GitMetadataForbidden"


def test_a_patch_moving_another_sessions_saved_tool_output_into_the_worktree_is_refused(
    gpt_daemon: tuple[DaemonState, Backend],
    sandbox_dirs: SandboxDirs,
    aim_patch: Callable[[PatchFor], None],
    call_in: Callable[[Path], StructuredResult],
) -> None:
    """The daemon keeps every session's long tool outputs in its ``tool-output`` folder
    and lets every session reach it: ``*** Update File: \\r<saved output>`` with ``*** Move
    to: \\rstolen.txt`` moved another run's text into run A's change, the turn recorded as
    succeeded."""
    state = gpt_daemon[0]
    pair = _worktrees(sandbox_dirs.workspaces, sandbox_dirs.repos, "steal")
    saved = Path(state.home) / ".local/share/opencode/tool-output/tool_rt110_other_session"
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text("run B's repository: API_KEY=hunter2-of-run-b\n")
    aim_patch(
        lambda _d: _patch(
            f"*** Update File: \r{saved}",
            "*** Move to: \rstolen.txt",
            "@@",
            "+(moved by run A)",
        )
    )
    with pytest.raises(CallFailed) as failure:
        call_in(pair.run1)
    assert failure.value.error_name == "PathOutsideWorktree"


def test_the_same_patch_spelled_plainly_is_refused(
    sandbox_dirs: SandboxDirs,
    aim_patch: Callable[[PatchFor], None],
    call_in: Callable[[Path], StructuredResult],
) -> None:
    """The control: without the hidden character kodo refuses the turn as well."""
    pair = _worktrees(sandbox_dirs.workspaces, sandbox_dirs.repos, "plain")
    target = pair.run2 / "from-run-a.txt"
    aim_patch(lambda _d: _patch(f"*** Add File: {target}", "+run A was here"))
    with pytest.raises(CallFailed) as failure:
        call_in(pair.run1)
    assert failure.value.error_name == "PathOutsideWorktree"
    assert not target.exists()


def test_a_patch_failing_after_its_first_write_is_refused_for_that_write(
    gpt_daemon: tuple[DaemonState, Backend],
    sandbox_dirs: SandboxDirs,
    aim_patch: Callable[[PatchFor], None],
    call_in: Callable[[Path], StructuredResult],
) -> None:
    state = gpt_daemon[0]
    pair = _worktrees(sandbox_dirs.workspaces, sandbox_dirs.repos, "partial")
    planted = Path(state.home) / ".local/share/opencode/tool-output/partial-planted.txt"
    raw = lexical_to(pair.run1, planted)  # also makes pair.run1/deep/...
    aim_patch(
        lambda _d: _patch(f"*** Add File: {raw}", "+planted by run A", "*** Add File: deep", "+x")
    )
    with pytest.raises(CallFailed) as failure:
        call_in(pair.run1)
    assert failure.value.error_name == "PathOutsideWorktree"


def test_control_the_same_write_alone_is_refused_by_the_daemon_s_metadata(
    gpt_daemon: tuple[DaemonState, Backend],
    sandbox_dirs: SandboxDirs,
    aim_patch: Callable[[PatchFor], None],
    call_in: Callable[[Path], StructuredResult],
) -> None:
    """The control: a patch that completes reports the lexical path in metadata.files."""
    state = gpt_daemon[0]
    pair = _worktrees(sandbox_dirs.workspaces, sandbox_dirs.repos, "whole")
    planted = Path(state.home) / ".local/share/opencode/tool-output/whole-planted.txt"
    raw = lexical_to(pair.run1, planted)
    aim_patch(lambda _d: _patch(f"*** Add File: {raw}", "+planted by run A"))
    with pytest.raises(CallFailed) as failure:
        call_in(pair.run1)
    assert failure.value.error_name == "PathOutsideWorktree"
    assert planted.exists()
