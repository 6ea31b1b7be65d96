"""Driving kodo through its public HTTP API, waiting on SSE instead of polling.

One run: ``POST /intents`` with ``run: true`` (the intent and its run in one request;
the clock starts when it is sent, so submit->waiting includes pinning the repository),
one ``GET /runs/{id}/events`` stream read until a terminal status;
on ``waiting_input`` the plan card is read (``GET /runs/{id}/plan``) and its digest
approved at once (auto-approval) while the stream stays open, so approve->done is timed
from the approve request to the terminal event.

A well-behaved client: a request the API refuses with 503 or 429 and ``Retry-After``
(busy, over a limit; nothing was done) is sent again after that wait, at most
``MAX_RETRIES`` times; every retry is counted, and a request still refused is the
run's failure.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from services.cli.client import retry_after_s
from shared.service.runs import approve_plan
from shared.service.uow import UnitOfWork

from .sse import MAX_RETRIES, StreamError, back_off, refusal, run_events

TERMINAL = frozenset({"succeeded", "failed", "rejected", "cancelled"})
GOAL = "Add a multiply function to calc.py with a test"


@dataclass
class Timing:
    run_id: str
    submitted: float
    accepted: float | None = None  # the submit's answer came back (201)
    status: str = ""
    waiting: float | None = None
    approved: float | None = None
    applying: float | None = None
    done: float | None = None

    @staticmethod
    def span_ms(start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else (end - start) * 1000

    @property
    def submit_to_waiting_ms(self) -> float | None:
        return self.span_ms(self.submitted, self.waiting)

    @property
    def submit_request_ms(self) -> float | None:
        """The submit request itself: auth, pinning the repository, the transaction."""
        return self.span_ms(self.submitted, self.accepted)

    @property
    def approve_to_done_ms(self) -> float | None:
        return self.span_ms(self.approved, self.done)

    @property
    def approve_to_applying_ms(self) -> float | None:
        return self.span_ms(self.approved, self.applying)


class SubmitError(RuntimeError):
    """The API did not accept a run: ``POST /intents`` or its ``/run`` failed."""


Approver = str  # "api": POST approve-plan (dispatches at once); "silent": beat's watcher only


RUNS_PER_CLIENT = 16
"""httpcore scans every pooled connection on each request (O(n)): one client holding 800
connections for 400 runs in flight made this driver, not kodo, the bottleneck (about
three quarters of its CPU in the pool scan, per py-spy). Runs are spread over clients
of a few dozen connections each instead."""


class Driver:
    """Asyncio HTTP clients with room for one stream and one request per run in flight."""

    def __init__(
        self,
        api_url: str,
        repos: Iterable[Path],
        *,
        runs: int,
        sessions: sessionmaker[Session],
        token: str,
        goal: str = GOAL,
        submit_limit: int = 0,
    ) -> None:
        shards = max(1, -(-runs // RUNS_PER_CLIENT))
        per_client = 2 * -(-runs // shards) + 4
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        self.clients = [
            httpx.AsyncClient(
                base_url=api_url,
                timeout=60.0,
                limits=limits,
                headers={"Authorization": f"Bearer {token}"},
                event_hooks={"request": [self._count_request]},
            )
            for _ in range(shards)
        ]
        self._shard = itertools.cycle(self.clients)
        self.repos = itertools.cycle(list(repos))
        self.requests = 0  # every request sent to the API (event streams and retries too)
        self.resets = 0  # connections the server closed under a request (then retried)
        self.retried: Counter[str] = Counter()  # requests sent again after Retry-After, by kind
        self.sessions = sessions
        self.goal = goal  # the think-time phase adds ``[oc:slow=T]``: every call held T ms
        # At most this many runs being submitted at once (0: no bound, every run at once).
        self.submit_gate = asyncio.Semaphore(submit_limit) if submit_limit > 0 else None

    async def _count_request(self, _request: httpx.Request) -> None:
        self.requests += 1

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def submit(self, http: httpx.AsyncClient) -> tuple[str, float, float]:
        """``POST /intents`` with ``run: true``: the run id, when it was asked for and
        when the API answered."""
        if self.submit_gate is None:
            return await self._submit(http)
        async with self.submit_gate:
            return await self._submit(http)

    async def post(
        self,
        http: httpx.AsyncClient,
        url: str,
        kind: str,
        json: Any = None,
        headers: dict[str, str] | None = None,
        method: str = "POST",
    ) -> httpx.Response:
        """POST (or ``method``), sent again after ``Retry-After`` while the API refuses it
        with 503 or 429 (each retry counted under ``kind``); the last answer otherwise."""
        retries = 0
        while True:
            reply = await http.request(method, url, json=json, headers=headers)
            wait_s = retry_after_s(reply)
            if wait_s is None or retries == MAX_RETRIES:
                return reply
            retries += 1
            self.retried[f"{kind} {refusal(reply)}"] += 1
            await back_off(wait_s)

    async def _submit(self, http: httpx.AsyncClient) -> tuple[str, float, float]:
        body = {"repo": str(next(self.repos)), "goal": self.goal, "run": True}
        began = time.perf_counter()
        try:
            # a key per submit: sent again after a 503, it can never make a second intent
            # (nor start a second run: a replay returns the run the first one started)
            key = {"Idempotency-Key": f"bench-{uuid.uuid4().hex}"}
            intent = await self.post(http, "/intents", "POST /intents", json=body, headers=key)
        except httpx.HTTPError as exc:
            raise SubmitError(f"POST /intents: {exc!r}") from exc
        if intent.status_code != 201:
            raise SubmitError(f"POST /intents: {intent.status_code} {intent.text[:300]}")
        made = intent.json()
        if made.get("run") is None:
            raise SubmitError(f"POST /intents: no run started: {intent.text[:300]}")
        run_id: str = made["intentId"]
        return run_id, began, time.perf_counter()

    async def _approve_api(self, http: httpx.AsyncClient, timing: Timing) -> None:
        """Read the plan card, as an approver does, then approve its digest (the clock of
        approve->done starts at the approval); a repeated identical decision is accepted,
        so a reset connection is retried."""
        run_id = timing.run_id
        card_url = f"/runs/{run_id}/plan"
        card = await self.post(http, card_url, "GET /runs/<id>/plan", method="GET")
        if card.status_code != 200:
            raise RuntimeError(f"plan of {run_id}: {card.status_code} {card.text}")
        body = {"approver": "bench", "planSha256": card.json()["planSha256"]}
        url, kind = f"/runs/{run_id}/approve-plan", "POST /runs/<id>/approve-plan"
        timing.approved = time.perf_counter()
        try:
            reply = await self.post(http, url, kind, json=body)
        except httpx.TransportError:
            self.resets += 1
            reply = await self.post(http, url, kind, json=body)
        if reply.status_code != 200:
            raise RuntimeError(f"approve {run_id}: {reply.status_code} {reply.text}")

    def _approve_silently(self, run_id: str) -> None:
        """The same decision the endpoint records, minus its dispatch: only beat will notice."""
        with UnitOfWork(self.sessions) as uow:
            approve_plan(uow, run_id, approver="bench-beat", now=datetime.now(UTC), dispatch=False)

    async def run_once(self, approver: Approver = "api") -> Timing:
        http = next(self._shard)
        run_id, began, accepted = await self.submit(http)
        timing = Timing(run_id, submitted=began, accepted=accepted)
        approvals: list[asyncio.Task[None]] = []
        follow = asyncio.create_task(self._follow(http, timing, approver, approvals))
        try:
            await follow
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is None or me.cancelling():
                raise  # this run was cancelled (the deadline), not stopped by its approval
        for approval in approvals:
            await approval  # a failed approval is this run's failure
        return timing

    async def _follow(
        self,
        http: httpx.AsyncClient,
        timing: Timing,
        approver: Approver,
        approvals: list[asyncio.Task[None]],
    ) -> None:
        """Read the run's events to a terminal one, approving at ``waiting_input``. A failed
        approval stops the reading: the run would wait for it until the deadline."""
        me = asyncio.current_task()

        def stop_if_failed(task: asyncio.Task[None]) -> None:
            if me is not None and not task.cancelled() and task.exception() is not None:
                me.cancel()

        async with aclosing(run_events(http, timing.run_id, retried=self.retried)) as events:
            async for event in events:
                now = time.perf_counter()
                timing.status = event["status"]
                if timing.status == "waiting_input" and timing.waiting is None:
                    timing.waiting = now
                    if approver == "api":  # the approval's own time is taken there
                        approval = asyncio.create_task(self._approve_api(http, timing))
                    else:
                        timing.approved = time.perf_counter()
                        approval = asyncio.create_task(
                            asyncio.to_thread(self._approve_silently, timing.run_id)
                        )
                    approval.add_done_callback(stop_if_failed)
                    approvals.append(approval)
                elif timing.status == "applying" and timing.applying is None:
                    timing.applying = now
                if timing.status in TERMINAL:
                    timing.done = now
                    break
        if timing.done is None:  # the server closed it (a broken stream): say so
            raise StreamError(f"events of {timing.run_id} ended at {timing.status!r}, not terminal")

    async def many(self, n: int, approver: Approver = "api") -> list[Timing | BaseException]:
        runs = (self.run_once(approver) for _ in range(n))
        return await asyncio.gather(*runs, return_exceptions=True)

    async def many_within(
        self, n: int, deadline_s: float
    ) -> tuple[list[Timing | BaseException], float]:
        """``n`` runs at once; those unfinished at the deadline are abandoned (and counted)."""
        began = time.perf_counter()
        tasks = [asyncio.create_task(self.run_once()) for _ in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=deadline_s)
        finished = [t.result() if t.exception() is None else t.exception() for t in done]
        last = max((t.done for t in finished if isinstance(t, Timing) and t.done), default=None)
        elapsed = (last if last is not None and not pending else time.perf_counter()) - began
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        late: list[Timing | BaseException] = [TimeoutError("unfinished at the deadline")] * len(
            pending
        )
        return [*(f for f in finished if f is not None), *late], elapsed

    async def sequential(self, n: int, approver: Approver = "api") -> list[Timing]:
        return [await self.run_once(approver) for _ in range(n)]


FINISHED_STEPS = text("SELECT count(*) FROM app.step_runs WHERE finished_at IS NOT NULL")


def finished_steps(sessions: sessionmaker[Session]) -> int:
    """Steps recorded so far: progress of runs the deadline cut short counts too."""
    with sessions() as s:
        return int(s.execute(FINISHED_STEPS).scalar_one())


STEP_TIMES = text(
    """
    SELECT s.run_id, s.step_id, s.duration_ms,
           coalesce((s.output->>'git_ms')::int, 0)
             + coalesce((s.output->>'command_ms')::int, 0) AS work_ms,
           extract(epoch FROM s.started_at - a.approved_at) * 1000 AS after_approval_ms,
           extract(epoch FROM a.dispatched_at - a.approved_at) * 1000 AS to_dispatch_ms
    FROM app.step_runs s
    LEFT JOIN app.plan_approvals a ON a.run_id = s.run_id AND a.decision = 'approved'
    WHERE s.run_id = ANY(:ids)
    """
)


@dataclass(frozen=True)
class StepTimes:
    """Per run, from the database: step body durations, the part of each spent in git or
    the verification command, and approve -> ApplyPatchST start."""

    body_ms: dict[str, dict[str, float]]
    work_ms: dict[str, dict[str, float]]
    apply_started_ms: dict[str, float]
    dispatched_ms: dict[str, float]


def step_times(sessions: sessionmaker[Session], run_ids: list[str]) -> StepTimes:
    body: dict[str, dict[str, float]] = {}
    work: dict[str, dict[str, float]] = {}
    started: dict[str, float] = {}
    dispatched: dict[str, float] = {}
    with sessions() as s:
        rows: list[Any] = list(s.execute(STEP_TIMES, {"ids": run_ids}))
    for row in rows:
        body.setdefault(row.run_id, {})[row.step_id] = float(row.duration_ms or 0)
        work.setdefault(row.run_id, {})[row.step_id] = float(row.work_ms or 0)
        if row.step_id == "ApplyPatchST" and row.after_approval_ms is not None:
            started[row.run_id] = float(row.after_approval_ms)
        if row.to_dispatch_ms is not None:
            dispatched[row.run_id] = float(row.to_dispatch_ms)
    return StepTimes(body, work, started, dispatched)
