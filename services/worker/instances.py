"""Letting go of what daemons hold open for resting runs' worktrees (the rows side, and
why, is shared/service/instances.py). Runs from the reconciler's pass.

Each run's disposes are sent holding its row lock, so they are bounded well under the
database's ``lock_timeout`` (10 s; an approval of the run waits meanwhile): DISPOSE_S
per wait of a dispose, RUN_BUDGET_S per run. A daemon that did not answer is not asked again in
the same pass (its other runs wait for the next one), and the pass stops after
PASS_BUDGET_S: one hung daemon never holds up the reconciler.

A directory is disposed only once the daemon says no session in it is busy: the rows
say no call of a resting run can still be running, but a turn an abort did not reach
(a cancel's abort the daemon never answered) runs on regardless, and opencode serve
1.18.33, disposing a directory with a turn in flight, is left unwell on every
directory it serves (aborts that tell no error, prompts answered 500). Such a turn
belongs to no call kodo waits for: it is aborted, and the run is tried again
``KODO_INSTANCE_RETRY_S`` later, as one whose daemon did not answer (so a turn an abort
does not stop either never has its run first in every pass, ahead of the runs never
tried).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import structlog

from services.worker.runtime import Runtime
from shared.db.engine import unit_of_work
from shared.opencode.daemons import Daemon, UnknownDaemon
from shared.opencode.errors import OpenCodeError, OpenCodeTransientError
from shared.opencode.exactly_once import ABORT_WINDOW_S
from shared.service.instances import (
    Opened,
    Window,
    claim_release,
    due_releases,
    record_release,
    record_release_failure,
)

log = structlog.get_logger("kodo.instances")

DISPOSE_S = 2.0
"""How long one dispose may wait to connect, and again for its answer."""
RUN_BUDGET_S = 5.0
"""How long one run's disposes may take together (its row is locked meanwhile)."""
PASS_BUDGET_S = 20.0
"""How long one pass may spend releasing; the next pass goes on."""
CALL_GRACE_S = ABORT_WINDOW_S + 60.0
"""A claimed or sent call younger than the call deadline plus this may still be running
on its daemon (an overdue call whose abort is unconfirmed stays sent ABORT_WINDOW_S):
its run is not released (a dispose would end the turn)."""


def release_instances(rt: Runtime, *, limit: int = 50) -> list[str]:
    """Dispose the worktree instances of runs resting KODO_INSTANCE_RELEASE_S or longer;
    return the runs released. A daemon no longer configured can never be told: its part
    is given up (logged). One that did not answer keeps the run for a later pass."""
    now = rt.clock.now()
    window = Window(
        now=now,
        rested_before=now - timedelta(seconds=rt.settings.instance_release_s),
        call_horizon_s=rt.settings.oc_timeout_ms / 1000 + CALL_GRACE_S,
        retry_s=rt.settings.instance_retry_s,
    )
    with unit_of_work(rt.sessions) as s:
        due = due_releases(s, window, limit=limit)
    silent: set[str] = set()  # daemons that did not answer in this pass
    started = time.monotonic()
    released = []
    for run_id in due:
        if time.monotonic() - started > PASS_BUDGET_S - RUN_BUDGET_S:
            break  # the next run could take its whole budget
        with rt.uow() as uow:
            opened = claim_release(uow.session, run_id, window)
            if opened is None:
                continue
            if _dispose_all(rt, run_id, opened, silent):
                record_release(uow.session, run_id)
                released.append(run_id)
            else:
                record_release_failure(uow.session, run_id, now=rt.clock.now())
    if released:
        log.info("instances.released", runs=len(released))
    return released


def _targets(rt: Runtime, run_id: str, opened: list[Opened]) -> list[tuple[Daemon, str]]:
    """Each (daemon, directory) once. A row without a daemon (its session was never
    made) names none: the run's first daemon by the pool's order is the one its boot
    went to. A daemon no longer configured can never be told: given up, logged."""
    found: dict[tuple[str, str], tuple[Daemon, str]] = {}
    for each in opened:
        try:
            daemon = (
                rt.daemons.of(each.daemon)
                if each.daemon is not None or len(rt.daemons.daemons) == 1
                else rt.daemons.order(run_id)[0]
            )
        except UnknownDaemon as exc:
            log.warning("instances.release_failed", run_id=run_id, error=str(exc)[:300])
            continue
        found.setdefault((daemon.url, each.directory), (daemon, each.directory))
    return list(found.values())


def _dispose_all(rt: Runtime, run_id: str, opened: list[Opened], silent: set[str]) -> bool:
    """Dispose each directory its daemon says is quiet, abort the turns of one that is
    not; False if a directory is still held (the run is tried again later).

    A daemon that timed out or refused is silent for the rest of the pass; one that
    answered with an error (a directory it cannot open) is given up for this worktree,
    logged: asking again would fail again. Each request gets half of what is left of
    the run's budget at most, since its connect and read waits are bounded apart."""
    deadline = time.monotonic() + RUN_BUDGET_S
    done = True

    def wait_s() -> float:
        return min(DISPOSE_S, (deadline - time.monotonic()) / 2)

    for daemon, directory in _targets(rt, run_id, opened):
        if daemon.url in silent or wait_s() <= 0:
            done = False
            continue
        try:
            busy = daemon.client.busy_sessions(directory=directory, timeout_s=wait_s())
            if busy:
                done = False
                _abort_strays(daemon, run_id, directory, sorted(busy), wait_s)
                continue
            daemon.client.dispose_instance(directory=directory, timeout_s=wait_s())
        except OpenCodeError as exc:
            if isinstance(exc, OpenCodeTransientError):
                silent.add(daemon.url)
                done = False
            log.warning(
                "instances.release_failed",
                run_id=run_id,
                daemon=daemon.url,
                directory=directory,
                error=str(exc)[:300],
            )
    return done


def _abort_strays(
    daemon: Daemon, run_id: str, directory: str, sessions: list[str], wait_s: Callable[[], float]
) -> None:
    """Abort the turns running in a resting run's worktree (none is a call kodo waits
    for); the run stays held open until a pass finds the directory quiet."""
    log.warning(
        "instances.release_deferred",
        run_id=run_id,
        daemon=daemon.url,
        directory=directory,
        busy_sessions=sessions,
    )
    for session_id in sessions:
        if wait_s() <= 0:
            return
        daemon.client.abort(session_id, directory=directory, timeout_s=wait_s())
