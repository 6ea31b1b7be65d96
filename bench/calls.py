"""Provider-call overhead: the ledger's claim and record around one stubbed call.

Measured in the bench process against the same oc-compat server and database the
workers use: the raw client (session + prompt) against ``ExactlyOnceCalls.prompt_structured``
(claim, session, prompt, record) for distinct op_keys, then the same keys again from
the L1 memory cache and, through a second runtime with an empty L1, from the ledger (L2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from services.worker.runtime import build_runtime
from shared.config import Settings
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA
from shared.domain.prompts import compile_prompt
from shared.opencode.calls import StructuredCall
from shared.opencode.messages import ModelRef
from shared.opencode.tools import permission_rules, tools_map
from shared.queue import make_celery

from .stats import percentile

FIRST_ATTEMPT = 1000  # far above any real attempt number, so keys never collide with runs


@dataclass(frozen=True)
class CallFigures:
    raw_ms: float
    wrapped_ms: float
    l1_us: float
    l2_ms: float

    @property
    def overhead_ms(self) -> float:
        return self.wrapped_ms - self.raw_ms


def _median_ms(samples: list[float]) -> float:
    found = percentile(samples, 50)
    return (found or 0.0) * 1000


def measure_calls(settings: Settings, run_id: str, directory: Path, n: int = 40) -> CallFigures:
    # The protocol's overhead is timed around a blocking call: a parked one (OC_ASYNC=1)
    # has no round trip of its own to compare with.
    settings = replace(settings, oc_async=False)
    celery = make_celery(settings)
    rt = build_runtime(settings, celery)
    cold = build_runtime(settings, celery)
    try:
        prompt = compile_prompt("bench: measure the provider-call overhead", 1, [])
        calls = [
            StructuredCall(
                run_id=run_id,
                step_id="CompileST",
                attempt=FIRST_ATTEMPT + i,
                agent="plan",
                prompt=prompt,
                schema=PLAN_OUTPUT_SCHEMA,
                directory=str(directory),
            )
            for i in range(n)
        ]
        raw, wrapped, l1, l2 = [], [], [], []
        for i, call in enumerate(calls):
            began = time.perf_counter()
            session = rt.daemons.first.client.create_session(
                directory=call.directory, title=f"bench {i}", permission=permission_rules("plan")
            )
            rt.daemons.first.client.prompt(
                str(session["id"]),
                directory=call.directory,
                agent="plan",
                model=ModelRef(settings.oc_provider_id, settings.oc_model_id),
                text=call.prompt,
                tools=tools_map("plan"),
                format={"type": "json_schema", "schema": call.schema, "retryCount": 1},
                timeout_s=30,
            )
            raw.append(time.perf_counter() - began)
            began = time.perf_counter()
            first = rt.oc.prompt_structured(call)
            wrapped.append(time.perf_counter() - began)
            if first.cache != "miss":
                raise RuntimeError(f"expected a miss for a fresh op_key, got {first.cache}")
        for call in calls:
            began = time.perf_counter()
            hit = rt.oc.prompt_structured(call)
            l1.append(time.perf_counter() - began)
            if hit.cache != "l1":
                raise RuntimeError(f"expected an L1 hit, got {hit.cache}")
        for call in calls:
            began = time.perf_counter()
            hit = cold.oc.prompt_structured(call)
            l2.append(time.perf_counter() - began)
            if hit.cache != "l2":
                raise RuntimeError(f"expected an L2 hit, got {hit.cache}")
        return CallFigures(
            raw_ms=_median_ms(raw),
            wrapped_ms=_median_ms(wrapped),
            l1_us=_median_ms(l1) * 1000,
            l2_ms=_median_ms(l2),
        )
    finally:
        rt.close()
        cold.close()
        celery.close()
