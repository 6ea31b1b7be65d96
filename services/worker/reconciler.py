"""The reconciler: re-dispatch stalled steps, decided from Postgres rows alone.

It also resumes runs parked at ``waiting_upgrade`` for this worker's step contract
(``shared.service.contract``): after an upgrade, the new workers' reconciler picks up
the runs the old workers could not run.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from redis import Redis
from redis.exceptions import RedisError

from services.worker.cancel import abort_missed_calls
from services.worker.delivery import clean, deliver
from services.worker.forget import forget_sessions
from services.worker.instances import release_instances
from services.worker.runtime import Runtime
from services.worker.watcher import watch_approvals
from services.worker.webhooks import sweep_webhooks
from shared.domain.step_contract import step_contract_version
from shared.queue import QUEUE
from shared.service.contract import resume_parked
from shared.service.recovery import Redispatch, redispatch_stalled

log = structlog.get_logger("kodo.reconciler")


def broker_backlog(redis_url: str) -> int:
    """Messages waiting in the ``kodo`` queue; 0 if Redis cannot say (it may be down)."""
    client = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return int(client.llen(QUEUE))
    except RedisError:
        return 0
    finally:
        client.close()


def reconcile(rt: Runtime) -> list[Redispatch]:
    """One pass: stalled steps are re-sent, parked runs of this contract resumed, and
    approved-but-undispatched runs sent; each unit of work sends after its commit."""
    backlog = broker_backlog(rt.settings.redis_url)
    with rt.uow() as uow:
        stalled = redispatch_stalled(
            uow,
            now=rt.clock.now(),
            redispatch_after_s=rt.settings.redispatch_after_s,
            broker_backlog=backlog,
        )
    for item in stalled:
        log.warning(
            "reconciler.redispatched",
            run_id=item.run_id,
            step_id=item.step.value,
            reason=item.reason,
        )
    failures: list[Exception] = []
    for name, sub_pass in _passes(rt):
        try:
            sub_pass()
        except Exception as exc:  # one pass's failure must not starve the others
            log.exception("reconciler.pass_failed", sub_pass=name)
            failures.append(exc)
    if failures:
        raise failures[0]  # the task fails visibly (and retries a database outage)
    return stalled


def _resume(rt: Runtime) -> None:
    with rt.uow() as uow:
        resumed = resume_parked(uow, worker_contract=step_contract_version(), now=rt.clock.now())
    for parked in resumed:
        log.info("reconciler.resumed", run_id=parked.run_id, step_id=parked.step.value)


def _passes(rt: Runtime) -> list[tuple[str, Callable[[], object]]]:
    """The pass's parts after the stalled steps, each run whatever the others did: a
    part that fails every time (a bug, a row it cannot handle) would otherwise keep
    every later part from ever running (worktrees piling up, webhooks never retried)."""
    return [
        ("resume_parked", lambda: _resume(rt)),
        ("watch_approvals", lambda: watch_approvals(rt)),
        # a cancel's abort that missed a call (or was lost)
        ("abort_missed_calls", lambda: abort_missed_calls(rt)),
        # a push that failed (or whose message was lost) is tried again
        ("deliver", lambda: deliver(rt)),
        ("clean", lambda: clean(rt)),
        # due webhook deliveries: a retry, a lost send, a crash
        ("sweep_webhooks", lambda: sweep_webhooks(rt, rt.celery)),
        # daemons let go of the worktrees of runs that rest
        ("release_instances", lambda: release_instances(rt)),
        # sessions whose delete a daemon did not answer
        ("forget_sessions", lambda: forget_sessions(rt)),
    ]
