"""The reconciler: re-dispatch stalled steps, decided from Postgres rows alone.

It also resumes runs parked at ``waiting_upgrade`` for this worker's step contract
(``shared.service.contract``): after an upgrade, the new workers' reconciler picks up
the runs the old workers could not run.
"""

from __future__ import annotations

import structlog
from redis import Redis
from redis.exceptions import RedisError

from services.worker.cancel import abort_missed_calls
from services.worker.delivery import clean, deliver
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
    with rt.uow() as uow:
        resumed = resume_parked(uow, worker_contract=step_contract_version(), now=rt.clock.now())
    for parked in resumed:
        log.info("reconciler.resumed", run_id=parked.run_id, step_id=parked.step.value)
    watch_approvals(rt)
    abort_missed_calls(rt)  # a cancel's abort that missed a call (or was lost)
    deliver(rt)  # a push that failed (or whose message was lost) is tried again
    clean(rt)
    sweep_webhooks(rt, rt.celery)  # due webhook deliveries: a retry, a lost send, a crash
    release_instances(rt)  # daemons let go of the worktrees of runs that rest
    return stalled
