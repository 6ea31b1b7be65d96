"""Letting go of what daemons hold open for resting runs' worktrees (the rows side, and
why, is shared/service/instances.py). Runs from the reconciler's pass."""

from __future__ import annotations

from datetime import timedelta

import structlog

from services.worker.runtime import Runtime
from shared.db.engine import unit_of_work
from shared.opencode.daemons import UnknownDaemon
from shared.opencode.errors import OpenCodeError
from shared.service.instances import Opened, claim_release, due_releases, record_release

log = structlog.get_logger("kodo.instances")

DISPOSE_TIMEOUT_S = 30.0
"""How long one dispose may take (the run's row is locked meanwhile: an approval of it
waits). A daemon that does not answer keeps the instance; the log says so."""


def release_instances(rt: Runtime, *, limit: int = 50) -> list[str]:
    """Dispose the worktree instances of runs resting KODO_INSTANCE_RELEASE_S or longer;
    return the runs released. A dispose that fails is logged, not retried: a leftover
    instance costs the daemon memory until it restarts, never a run its correctness."""
    rested_before = rt.clock.now() - timedelta(seconds=rt.settings.instance_release_s)
    with unit_of_work(rt.sessions) as s:
        due = due_releases(s, rested_before=rested_before, limit=limit)
    released = []
    for run_id in due:
        with rt.uow() as uow:
            opened = claim_release(uow.session, run_id, rested_before=rested_before)
            if opened is None:
                continue
            for each in opened:
                _dispose(rt, run_id, each)
            record_release(uow.session, run_id)
        released.append(run_id)
        log.info(
            "instances.released",
            run_id=run_id,
            daemons=sorted({o.daemon or rt.daemons.first.url for o in opened}),
        )
    return released


def _dispose(rt: Runtime, run_id: str, opened: Opened) -> None:
    try:
        daemon = rt.daemons.of(opened.daemon)
        daemon.client.dispose_instance(directory=opened.directory, timeout_s=DISPOSE_TIMEOUT_S)
    except (OpenCodeError, UnknownDaemon) as exc:
        log.warning(
            "instances.release_failed",
            run_id=run_id,
            daemon=opened.daemon,
            directory=opened.directory,
            error=str(exc)[:300],
        )
