"""A step waiting in a busy broker is not lost, so the reconciler must not re-send it."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import redis

from shared.queue import QUEUE
from tests.chaos.conftest import Scenario
from tests.chaos.harness import Chaos

pytestmark = pytest.mark.chaos

RUNS = 30


def _queued_copies(client: redis.Redis) -> Counter[tuple[str, str]]:
    """Messages waiting in the broker per (task, run id)."""
    copies: Counter[tuple[str, str]] = Counter()
    for raw in client.lrange(QUEUE, 0, -1):
        headers = json.loads(raw).get("headers", {})
        if str(headers.get("task", "")).endswith("ST"):
            copies[(headers["task"], headers.get("argsrepr", ""))] += 1
    return copies


def test_a_backlog_longer_than_the_redispatch_delay_is_not_re_sent_again_and_again(
    chaos: Chaos, scenario: Scenario
) -> None:
    scenario.name = "backlog > KODO_REDISPATCH_AFTER_S"
    run_ids = [chaos.submit(f"Add a note, number {n} [oc:slow=500]") for n in range(RUNS)]
    scenario.track(*run_ids)
    client = redis.Redis.from_url(chaos.services.redis.url)
    worst: Counter[tuple[str, str]] = Counter()
    end = time.monotonic() + 15
    try:
        while time.monotonic() < end:
            worst |= _queued_copies(client)
            time.sleep(0.2)
    finally:
        client.close()
    final = chaos.drive(run_ids, 60)
    assert all(final.get(r) == "succeeded" for r in run_ids), chaos.explain(run_ids)
    chaos.assert_exactly_once(run_ids)
    piled = {key: n for key, n in worst.items() if n > 1}
    scenario.note = f"max {max(worst.values(), default=0)} queued copies of one step"
    assert piled == {}, (
        f"the reconciler re-sent steps still waiting in the broker ({len(piled)} piled up): "
        f"{sorted(piled.items(), key=lambda kv: -kv[1])[:5]}"
    )
