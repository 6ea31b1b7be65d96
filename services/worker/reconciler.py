"""The reconciler: re-dispatch stalled steps, decided from Postgres rows alone."""

from __future__ import annotations

import structlog
from redis import Redis
from redis.exceptions import RedisError

from services.worker.runtime import Runtime
from services.worker.watcher import watch_approvals
from shared.queue import QUEUE
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
    """One pass: stalled steps are re-sent; approved-but-undispatched runs are sent too."""
    backlog = broker_backlog(rt.settings.redis_url)
    with rt.uow() as uow:  # the steps are re-sent after commit
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
    watch_approvals(rt)
    return stalled
