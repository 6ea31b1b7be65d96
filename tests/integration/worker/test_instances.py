"""A daemon lets go of a run's worktree once the run rests, and only then.

Against oc-compat over HTTP, which keeps the daemon's books on what it holds open (any
request naming a directory opens it; ``POST /instance/dispose`` closes it; a dispose of
a directory not open would have cost opencode serve a boot for nothing, and is counted).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from structlog.testing import capture_logs

from services.worker.instances import release_instances
from services.worker.runtime import Runtime
from services.worker.steps.apply_patch import apply_patch_step
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from services.worker.steps.decide import decide_step
from services.worker.steps.execute import execute_step
from shared.db.models import OpenCodeCall
from shared.domain.run_machine import StepId
from shared.opencode.client import ModelRef, OpenCodeClient
from shared.opencode.tools import tools_map
from shared.service.instances import Window, claim_release, due_releases
from shared.service.runs import cancel_run
from tests.integration.worker.conftest import RuntimeFactory, approve, new_run, read_run, uow
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _books(rt: Runtime) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{rt.settings.oc_base_url}/__kodo/stats").json()
    return stats


def _directories(rt: Runtime, run_id: str) -> set[str]:
    """The directories the run's calls named (its worktree)."""
    with rt.sessions() as s:
        rows = s.execute(
            select(OpenCodeCall.request["directory"].as_string()).where(
                OpenCodeCall.run_id == run_id
            )
        ).scalars()
        return {str(Path(d).resolve()) for d in rows if d}


def _waiting(rt: Runtime, repo: Path) -> str:
    run_id = new_run(rt, repo, goal="Add a note to README.md")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    return run_id


def test_a_run_waiting_for_its_approver_has_its_worktree_let_go_once(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(instance_release_s=0)
    run_id = _waiting(rt, repo)
    worktree = _directories(rt, run_id)
    assert len(worktree) == 1
    assert read_run(rt, run_id).instances_opened_at is not None, "the claim stamped it"
    assert worktree <= set(_books(rt)["instances_open"])
    before = _books(rt)

    assert release_instances(rt) == [run_id]

    after = _books(rt)
    assert not worktree & set(after["instances_open"]), "the daemon let go of the worktree"
    assert after["instances_disposed"] == before["instances_disposed"] + 1
    assert after["disposes_unopened"] == before["disposes_unopened"] == 0
    assert read_run(rt, run_id).instances_opened_at is None
    assert release_instances(rt) == [], "released once: nothing is disposed twice"
    assert _books(rt)["instances_disposed"] == after["instances_disposed"]


def test_a_run_resting_less_than_the_release_time_keeps_its_worktree_open(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(instance_release_s=3600)
    run_id = _waiting(rt, repo)
    assert release_instances(rt) == []
    assert _directories(rt, run_id) <= set(_books(rt)["instances_open"])
    assert read_run(rt, run_id).instances_opened_at is not None


def test_a_run_being_moved_is_left_for_the_next_pass(make_rt: RuntimeFactory, repo: Path) -> None:
    """The release locks the run's row (SKIP LOCKED): an approval holding it is never
    raced by a dispose; the next pass finds the run again."""
    rt = make_rt(instance_release_s=0)
    run_id = _waiting(rt, repo)
    with rt.engine.connect() as other:
        other.execute(text("SELECT 1 FROM app.runs WHERE id = :id FOR UPDATE"), {"id": run_id})
        assert release_instances(rt) == []
        assert _directories(rt, run_id) <= set(_books(rt)["instances_open"])
        other.rollback()
    assert release_instances(rt) == [run_id]


def test_an_approved_run_opens_its_worktree_again_and_is_let_go_when_it_ends(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    rt = make_rt(instance_release_s=0)
    run_id = _waiting(rt, repo)
    assert release_instances(rt) == [run_id]
    approve(rt, run_id)
    assert release_instances(rt) == [], "an applying run is not resting"
    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "deciding"
    assert read_run(rt, run_id).instances_opened_at is not None, "its next claim stamped it"
    assert release_instances(rt) == [], "a deciding run is not resting"
    assert run_step(rt, StepId.DECIDE, run_id, decide_step) == "executing"
    assert run_step(rt, StepId.EXECUTE, run_id, execute_step) == "succeeded"
    before = _books(rt)

    assert release_instances(rt) == [run_id]

    after = _books(rt)
    assert not _directories(rt, run_id) & set(after["instances_open"])
    assert after["instances_disposed"] == before["instances_disposed"] + 1
    assert after["disposes_unopened"] == 0


def test_a_daemon_no_longer_configured_is_given_up_and_the_run_not_retried_forever(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    """A leftover instance costs its daemon memory until it restarts, never a run its
    correctness: the failure is logged with the rule's event and the run released (a
    run that can never be told must not hold a place in every pass)."""
    rt = make_rt(instance_release_s=0)
    run_id = _waiting(rt, repo)
    with rt.sessions.begin() as s:  # the call's daemon was removed from OC_BASE_URL since
        s.execute(
            text("UPDATE app.opencode_calls SET daemon = 'http://127.0.0.1:9' WHERE run_id = :r"),
            {"r": run_id},
        )
    before = _books(rt)

    with capture_logs() as lines:
        assert release_instances(rt) == [run_id]

    assert _books(rt)["instances_disposed"] == before["instances_disposed"]
    assert "instances.release_failed" in [line["event"] for line in lines]
    assert read_run(rt, run_id).instances_opened_at is None
    assert release_instances(rt) == []


def _failed_ago(rt: Runtime, run_id: str, seconds: float) -> None:
    """Date the run's last failed release ``seconds`` back (time passed)."""
    with rt.sessions.begin() as s:
        s.execute(
            text("UPDATE app.runs SET instances_release_failed_at = :t WHERE id = :r"),
            {"t": rt.clock.now() - timedelta(seconds=seconds), "r": run_id},
        )


def _window(rt: Runtime) -> Window:
    now = rt.clock.now()
    return Window(now=now, rested_before=now, call_horizon_s=3600, retry_s=600)


def test_a_run_approved_between_the_pass_reading_it_and_locking_it_is_not_released(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    """The pass reads the due runs, then locks each and checks again: an approval that
    committed in between moved the run, and its next call must not be ended by a
    dispose."""
    rt = make_rt(instance_release_s=0)
    run_id = _waiting(rt, repo)
    with rt.sessions() as s:
        assert due_releases(s, _window(rt)) == [run_id]
    approve(rt, run_id)
    with rt.sessions.begin() as s:
        assert claim_release(s, run_id, _window(rt)) is None
    assert release_instances(rt) == []
    assert _directories(rt, run_id) <= set(_books(rt)["instances_open"])


def test_a_run_with_a_call_still_open_is_not_released_until_the_call_ended(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    """A cancelled run rests at once, but its call in flight is aborted afterwards by
    AbortCalls (a request naming the worktree): releasing first would end the turn and
    then open the worktree again for good."""
    rt = make_rt(instance_release_s=0)
    run_id = _waiting(rt, repo)
    approve(rt, run_id)
    with rt.sessions.begin() as s:  # ApplyPatchST's call, claimed and sent, still running
        s.execute(
            text(
                "INSERT INTO app.opencode_calls (op_key, run_id, step_id, attempt, agent,"
                " request, status, session_id, daemon, started_at)"
                " SELECT 'open-call', run_id, 'ApplyPatchST', 1, 'build', request, 'sent',"
                " 'ses_open', daemon, now() FROM app.opencode_calls WHERE run_id = :r"
            ),
            {"r": run_id},
        )
    with uow(rt) as work:
        cancel_run(work, run_id, now=rt.clock.now())
    assert release_instances(rt) == [], "its call is still open"
    with rt.sessions.begin() as s:
        s.execute(
            text("UPDATE app.opencode_calls SET status = 'aborted' WHERE op_key = 'open-call'")
        )
    assert release_instances(rt) == [run_id]
    assert not _directories(rt, run_id) & set(_books(rt)["instances_open"])


def test_only_the_calls_since_the_stamp_are_disposed(make_rt: RuntimeFactory, repo: Path) -> None:
    """A worktree released, then opened again on another daemon, is disposed there
    alone: the first daemon let go of it already (asking again would open it anew)."""
    rt = make_rt(instance_release_s=0)
    run_id = _waiting(rt, repo)
    assert release_instances(rt) == [run_id]
    with rt.sessions.begin() as s:  # an earlier call, on a daemon since removed
        s.execute(
            text(
                "UPDATE app.opencode_calls SET daemon = 'http://127.0.0.1:9',"
                " created_at = created_at - interval '1 hour' WHERE run_id = :r"
            ),
            {"r": run_id},
        )
    approve(rt, run_id)
    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "deciding"
    with uow(rt) as work:
        cancel_run(work, run_id, now=rt.clock.now())
    with rt.sessions.begin() as s:
        opened = claim_release(s, run_id, _window(rt))
    assert opened is not None
    assert {o.daemon for o in opened} == {rt.settings.oc_base_url}


@dataclass
class SilentDaemon:
    """A daemon that takes connections and never answers (a hung process): its URL,
    and how many connections it took."""

    url: str
    taken: list[socket.socket] = field(default_factory=list)


@pytest.fixture
def silent_daemon() -> Iterator[SilentDaemon]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.2)
        silent = SilentDaemon(f"http://127.0.0.1:{listener.getsockname()[1]}")
        stop = threading.Event()

        def take() -> None:
            while not stop.is_set():
                try:
                    silent.taken.append(listener.accept()[0])
                except TimeoutError:
                    continue

        taker = threading.Thread(target=take, daemon=True)
        taker.start()
        yield silent
        stop.set()
        taker.join(5)
        for conn in silent.taken:
            conn.close()


def _on_daemon(rt: Runtime, run_id: str, url: str) -> None:
    """Record the run's calls as made on the daemon at ``url``."""
    with rt.sessions.begin() as s:
        s.execute(
            text("UPDATE app.opencode_calls SET daemon = :d WHERE run_id = :r"),
            {"d": url, "r": run_id},
        )


def test_a_daemon_that_does_not_answer_keeps_its_runs_for_a_later_pass(
    make_rt: RuntimeFactory, repo: Path, silent_daemon: SilentDaemon
) -> None:
    """The disposes are sent holding the run's row lock: a hung daemon is asked once
    per pass (an approval of its run waits meanwhile, under the database's 10 s lock
    timeout), then its runs keep their stamps and wait KODO_INSTANCE_RETRY_S, after the runs never
    tried."""
    made = make_rt(instance_release_s=0)  # the runs' calls go to oc-compat alone
    run_ids = [_waiting(made, repo), _waiting(made, repo)]
    rt = make_rt(instance_release_s=0, oc_more_daemons=(silent_daemon.url,))
    for run_id in run_ids:
        _on_daemon(rt, run_id, silent_daemon.url)

    assert release_instances(rt) == []

    assert len(silent_daemon.taken) == 1, "asked once in the pass, not once per run"
    failed = {}
    for run_id in run_ids:
        run = read_run(rt, run_id)
        assert run.instances_opened_at is not None, "kept: tried again later"
        assert run.instances_release_failed_at is not None
        failed[run_id] = run.instances_release_failed_at
    assert release_instances(rt) == []
    assert {r: read_run(rt, r).instances_release_failed_at for r in run_ids} == failed, (
        f"not tried again before {rt.settings.instance_retry_s:g} s"
    )
    assert len(silent_daemon.taken) == 1
    first = run_ids[0]
    _failed_ago(rt, first, rt.settings.instance_retry_s + 1)  # and the daemon is back
    _on_daemon(rt, first, rt.settings.oc_base_url)
    assert release_instances(rt) == [first]
    assert read_run(rt, first).instances_release_failed_at is None


def test_a_worktree_is_disposed_once_per_daemon_whatever_its_rows_say(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    """A call whose session was never made records no daemon; with one daemon it is
    that one, and the worktree is disposed there once (a second dispose would open it
    again for nothing)."""
    rt = make_rt(instance_release_s=0)
    run_id = _waiting(rt, repo)
    with rt.sessions.begin() as s:
        s.execute(
            text(
                "INSERT INTO app.opencode_calls (op_key, run_id, step_id, attempt, agent,"
                " request, status) SELECT 'no-session', run_id, step_id, 2, agent, request,"
                " 'failed' FROM app.opencode_calls WHERE run_id = :r"
            ),
            {"r": run_id},
        )
    before = _books(rt)
    assert release_instances(rt) == [run_id]
    after = _books(rt)
    assert after["instances_disposed"] == before["instances_disposed"] + 1
    assert after["disposes_unopened"] == before["disposes_unopened"]


def test_a_claim_clears_a_failed_release_of_an_earlier_rest(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    """A release that failed while the run waited for its approver says nothing about
    its next rest: the next call's claim clears it, so that rest is released in time."""
    rt = make_rt(instance_release_s=0)
    run_id = _waiting(rt, repo)
    with rt.sessions.begin() as s:
        s.execute(
            text("UPDATE app.runs SET instances_release_failed_at = now() WHERE id = :r"),
            {"r": run_id},
        )
    approve(rt, run_id)
    assert run_step(rt, StepId.APPLY_PATCH, run_id, apply_patch_step) == "deciding"
    assert read_run(rt, run_id).instances_release_failed_at is None
    with uow(rt) as work:
        cancel_run(work, run_id, now=rt.clock.now())
    assert release_instances(rt) == [run_id]


def test_a_worktree_with_a_turn_still_running_is_not_disposed_until_the_turn_is_aborted(
    make_rt: RuntimeFactory, repo: Path
) -> None:
    """The rows say nothing of the run can still run (a cancel recorded its call
    aborted though the daemon never got the abort, say), but the daemon has a turn
    busy in the worktree: disposing would cut it, and leaves opencode serve 1.18.33
    unwell on every directory. The turn is aborted instead, and the worktree let go
    KODO_INSTANCE_RETRY_S later, once the daemon says it is quiet (a turn no abort
    stops never puts its run ahead of the others in every pass)."""
    rt = make_rt(instance_release_s=0, instance_retry_s=30)
    run_id = _waiting(rt, repo)
    with rt.sessions() as s:
        directory = s.execute(
            select(OpenCodeCall.request["directory"].as_string()).where(
                OpenCodeCall.run_id == run_id
            )
        ).scalar_one()
    with OpenCodeClient(rt.settings.oc_base_url, timeout_s=10.0) as client:
        stray = str(client.create_session(directory=directory, title="stray")["id"])
        client.prompt_async(
            stray,
            directory=directory,
            agent="plan",
            model=ModelRef("kodo", "kodo-scripted"),
            text="Plan a change to README.md [oc:slow=60000]",
            tools=tools_map("plan"),
            format=None,
        )
        wait_until(
            lambda: stray in client.busy_sessions(directory=directory), 10, "the stray turn busy"
        )
        before = _books(rt)

        with capture_logs() as logs:
            assert release_instances(rt) == []

        deferred = [e for e in logs if e["event"] == "instances.release_deferred"]
        assert [e["busy_sessions"] for e in deferred] == [[stray]]
        assert _books(rt)["instances_disposed"] == before["instances_disposed"], "not disposed"
        run = read_run(rt, run_id)
        assert run.instances_opened_at is not None, "still held open: released later"
        assert run.instances_release_failed_at is not None, (
            "tried again KODO_INSTANCE_RETRY_S later"
        )
        wait_until(
            lambda: stray not in client.busy_sessions(directory=directory),
            10,
            "the stray turn aborted",
        )
        reply = client.last_message(stray, directory=directory)
        assert reply is not None
        assert reply.error_name == "MessageAbortedError"

    assert release_instances(rt) == [], "not before KODO_INSTANCE_RETRY_S"
    _failed_ago(rt, run_id, 29)
    assert release_instances(rt) == [], "29 s: not before KODO_INSTANCE_RETRY_S (30 s)"
    _failed_ago(rt, run_id, 31)
    assert release_instances(rt) == [run_id]
    assert _books(rt)["instances_disposed"] == before["instances_disposed"] + 1
