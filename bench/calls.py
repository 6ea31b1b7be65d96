"""Provider-call overhead: the ledger's claim and record around one stubbed call.

Measured in the bench process against the same oc-compat server and database the
workers use: the raw client (session + prompt) against ``ExactlyOnceCalls.prompt_structured``
(claim, session, prompt, record) for distinct op_keys, then the same keys again from
the L1 memory cache and, through a second runtime with an empty L1, from the ledger (L2).

With async calls (``OC_ASYNC=1``, the default) a call is two deliveries: one sends the
prompt and parks (claim, session, ``prompt_async``, mark sent), one collects the answer
once the session is idle (read the row, session status, last message, record). Both
are timed, the wait between them is not (here the collector is not what wakes it: the
bench polls the session's status); the raw client is timed the same way (session,
``prompt_async``; then the last message). Blocking calls are timed as one request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from services.worker.runtime import Runtime, build_runtime
from shared.config import Settings
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA
from shared.domain.prompts import compile_prompt
from shared.opencode.call_ledger import PostgresCallLedger
from shared.opencode.calls import CallPending, StructuredCall, StructuredResult
from shared.opencode.messages import ModelRef
from shared.opencode.ports import AgentClient
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


SETTLE_S = 30.0  # an instant stub answer idles in milliseconds: past this, something broke


def _until_idle(client: AgentClient, session_id: str, directory: str) -> None:
    """Until the session's turn ended (not timed: the model's share, not the wrapper's)."""
    end = time.monotonic() + SETTLE_S
    while session_id in client.busy_sessions(directory=directory):
        if time.monotonic() > end:
            raise RuntimeError(f"session {session_id} still busy after {SETTLE_S:g}s")
        time.sleep(0.002)


def _raw_call(settings: Settings, client: AgentClient, call: StructuredCall, title: str) -> float:
    """One call through the bare client, as the wrapper makes it; seconds spent in requests."""
    began = time.perf_counter()
    session = client.create_session(
        directory=call.directory, title=title, permission=permission_rules("plan")
    )
    session_id = str(session["id"])
    model = ModelRef(settings.oc_provider_id, settings.oc_model_id)
    answer_format = {"type": "json_schema", "schema": call.schema, "retryCount": 1}
    if not settings.oc_async:
        client.prompt(
            session_id,
            directory=call.directory,
            agent="plan",
            model=model,
            text=call.prompt,
            tools=tools_map("plan"),
            format=answer_format,
            timeout_s=30,
        )
        return time.perf_counter() - began
    client.prompt_async(
        session_id,
        directory=call.directory,
        agent="plan",
        model=model,
        text=call.prompt,
        tools=tools_map("plan"),
        format=answer_format,
    )
    spent = time.perf_counter() - began
    _until_idle(client, session_id, call.directory)
    began = time.perf_counter()
    if client.last_message(session_id, directory=call.directory) is None:
        raise RuntimeError(f"session {session_id} ended without an answer")
    return spent + time.perf_counter() - began


def _wrapped_call(rt: Runtime, call: StructuredCall) -> tuple[StructuredResult, float]:
    """One call through the ledger wrapper; seconds spent in its deliveries."""
    began = time.perf_counter()
    try:
        return rt.oc.prompt_structured(call), time.perf_counter() - began
    except CallPending as pending:
        if pending.unrecorded:
            PostgresCallLedger(rt.sessions).mark_sent(pending.op_key)  # as the runner does
        spent = time.perf_counter() - began
        session_id = pending.session_id
    _until_idle(rt.daemons.first.client, session_id, call.directory)
    began = time.perf_counter()
    result = rt.oc.prompt_structured(call)
    return result, spent + time.perf_counter() - began


def measure_calls(settings: Settings, run_id: str, directory: Path, n: int = 40) -> CallFigures:
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
            raw.append(_raw_call(settings, rt.daemons.first.client, call, f"bench {i}"))
            first, spent = _wrapped_call(rt, call)
            wrapped.append(spent)
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
