"""``GET /runs/<id>/events``: wait for a run's state changes without polling (SSE).

Each frame's ``id:`` is the run's ``event_seq`` (one more per state change, counted by
the database: migration 0019). A client that reconnects with ``Last-Event-ID`` (as
``EventSource`` does) is sent the run's current state only if it changed since that
id: the stream carries states, not a log, so states passed while it was away are not
replayed (``GET /runs/{id}`` has every step).

The stream subscribes to the process's LISTEN hub *before* reading the run, so no
change can fall between the first event and the next. A notification is built by the
trigger from the committed row (migration 0006), in commit order, so it is forwarded
as is; the row is re-read only after the listener reconnects (notifications may have
been lost) and when the hub's sweep, one statement a keepalive interval for every
stream of the process, finds the run past the stream's last state (a notification lost
some other way). The stream ends after a terminal status,
or after any status named in ``?until=``. A re-read that finds the database pool
exhausted does not end the stream: it is owed, and made on the next wake-up.

A process shutting down ends its streams at once (:func:`drain_streams`): the client
resumes with ``Last-Event-ID`` against a process that is not, and loses nothing, since
the stream carries states. Held to the end, streams kept every stop (``kodo down``, a
deploy) waiting out the graceful timeout.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request, stream_with_context
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared.db import direct
from shared.db.events import RunEvent, RunEventHub, Subscription, Wakeup, conninfo_of
from shared.db.repos.runs import event_fields
from shared.domain.run_machine import RunStatus
from shared.errors import InvalidInput, NotFound

from .auth import credential_still_live, current_principal
from .errors import error_response
from .hang_up import end_on_hang_up
from .state import api, state_of
from .stream_slots import RETRY_AFTER_S, Slot, StreamSlots, TooManyStreams

events_bp = Blueprint("events", __name__)
log = logging.getLogger(__name__)

HUB_EXTENSION = "kodo.run_events"
SLOTS_EXTENSION = "kodo.stream_slots"
KEEPALIVE_S = 15.0
RENEW = "event: reconnect\ndata: {}\n\n"
"""A stream's last frame when it reached KODO_SSE_MAX_S: resume with Last-Event-ID."""
OWED_READ_S = 1.0  # how soon a re-read the pool could not serve is tried again
TERMINAL = frozenset(s.value for s in RunStatus if s.is_terminal)
_hub_lock = threading.Lock()

Snapshot = dict[str, Any]


def hub_of(app: Flask) -> RunEventHub:
    """This process's hub, started on first use (after a fork, a new one: threads don't fork)."""
    with _hub_lock:
        found = app.extensions.get(HUB_EXTENSION)
        if isinstance(found, tuple) and found[0] == os.getpid():
            hub: RunEventHub = found[1]
            return hub
        state = state_of(app)
        hub = RunEventHub(conninfo_of(state.settings.database_url), sweep_s=KEEPALIVE_S)
        app.extensions[HUB_EXTENSION] = (os.getpid(), hub)
        _hubs.add(hub)
        # A test builds and closes many apps in one process: each one's listening thread
        # stops with it, not at the session's end against a database already dropped.
        state.on_close(partial(_close_hub, app.extensions, hub))
        if _draining.is_set():
            hub.drain()
    hub.start()
    return hub


_hubs: weakref.WeakSet[RunEventHub] = weakref.WeakSet()  # this process's, for draining
_draining = threading.Event()  # set once: this process is shutting down


def drain_streams() -> None:
    """End every event stream of this process, now and from now on: it is shutting
    down (:mod:`services.api.serving`)."""
    with _hub_lock:
        _draining.set()
        hubs = list(_hubs)
    for hub in hubs:
        hub.drain()


def _close_hub(extensions: dict[str, Any], hub: RunEventHub) -> None:
    """Stop ``hub``, and forget it if the app still names it (not a later fork's)."""
    with _hub_lock:
        found = extensions.get(HUB_EXTENSION)
        if isinstance(found, tuple) and found[1] is hub:
            del extensions[HUB_EXTENSION]
    hub.close()


def parse_until(raw: str | None) -> frozenset[str]:
    names = [part.strip() for part in (raw or "").split(",") if part.strip()]
    known = {s.value for s in RunStatus}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidInput(
            "until names unknown statuses",
            details={"until": [f"unknown status {n!r}" for n in unknown]},
        )
    return frozenset(names)


def read_snapshot(
    connect: Callable[[], AbstractContextManager[direct.Lone]], run_id: str
) -> Snapshot | None:
    """The run as its events show it; ``connect``: the API's single-read connection."""
    with connect() as conn:
        run = event_fields(conn, run_id)
        if run is None:
            return None
        return {
            "runId": run.id,
            "status": run.status,
            "lastStep": run.last_step,
            "nextAction": run.next_action,
            "seq": run.event_seq,
        }


RETRY_MS = 2000
"""How long an ``EventSource`` waits before it reconnects (sent once per stream)."""


def frame(snapshot: Snapshot) -> str:
    return f"id: {snapshot['seq']}\nevent: run\ndata: {json.dumps(snapshot)}\n\n"


_EVENT_ID = re.compile(r"[0-9]{1,18}")


def last_event_id(raw: str | None) -> int | None:
    """The ``Last-Event-ID`` a reconnecting client sent: a seq this stream gave out."""
    if raw is None or raw == "":
        return None
    if _EVENT_ID.fullmatch(raw) is None:  # not isdigit(): "²" is a digit int() refuses
        raise InvalidInput(
            "Last-Event-ID must be the id of an event this stream sent (a number)",
            details={"Last-Event-ID": ["not an event id"]},
        )
    return int(raw)


def snapshot_of(event: RunEvent) -> Snapshot | None:
    """The snapshot a full event describes, or None if it lacks a field (re-read then)."""
    if event.next_action is None or event.seq is None:
        return None
    return {
        "runId": event.run_id,
        "status": event.status,
        "lastStep": event.last_step,
        "nextAction": event.next_action,
        "seq": event.seq,
    }


def _changes(
    woke: Wakeup, read: Callable[[], Snapshot | None], *, owed: bool = False
) -> list[Snapshot] | None:
    """What happened, in commit order: the events themselves when they are complete;
    one fresh read after a reconnect or the hub's sweep (``resync``: a notification may
    have been lost), a partial payload, or when an earlier read is ``owed``; nothing
    after a quiet interval. None if the run is gone."""
    if not owed and not woke.changed:
        return []
    snapshots = [snapshot_of(e) for e in woke.events]
    if not owed and woke.events and not woke.resync and all(s is not None for s in snapshots):
        return [s for s in snapshots if s is not None]
    current = read()
    return None if current is None else [current]


def _saw(sub: Subscription, snapshot: Snapshot) -> None:
    """Tell the hub which state the stream has (its sweep asks a stream behind to re-read)."""
    seq = snapshot.get("seq")
    if isinstance(seq, int):
        sub.saw(seq)


def stream(
    sub: Subscription,
    first: Snapshot,
    read: Callable[[], Snapshot | None],
    until: frozenset[str],
    keepalive_s: float,
    slot: Slot | None = None,
    resumed_from: int | None = None,
    still_live: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    max_s: float | None = None,
) -> Iterator[str]:
    """The SSE body; the subscription and the stream's slot are released however it ends.

    Every committed change is forwarded in order (a fast run's ``deciding`` is seen
    even if ``executing`` follows a millisecond later); the stream ends at a terminal
    status or one named in ``until``. A re-read the exhausted pool refused is owed: the
    next wake-up (at most ``OWED_READ_S`` later) reads the row, whatever it brings.
    A client resuming at ``resumed_from`` is not sent the state it already has. The
    stream ends, too, once ``still_live`` says its credential was revoked (asked at most
    every ``keepalive_s``; a check the database cannot answer is made at the next one).

    And it is renewed after ``max_s`` (KODO_SSE_MAX_S): an ``event: reconnect`` says so,
    and the client resumes with ``Last-Event-ID``, losing nothing. A client that stopped
    reading without closing (a suspended process) otherwise held its token's stream slot
    for hours: a keepalive is 13 bytes, and the kernels' buffers take hours of them
    before a write can block and meet the send timeout.
    """
    try:
        last = first
        _saw(sub, first)
        checked = began = clock()
        yield f"retry: {RETRY_MS}\n\n"
        if first["seq"] != resumed_from:
            yield frame(first)
        stop = TERMINAL | until
        if first["status"] in stop:
            return
        owed = False
        passed_until = False
        while True:
            if max_s is not None and clock() - began >= max_s:
                yield RENEW
                return
            if slot is not None:
                slot.refresh()
            wait_s = min(keepalive_s, OWED_READ_S) if owed else keepalive_s
            if max_s is not None:  # renewed at its time, not at the keepalive after it
                wait_s = min(wait_s, max(0.0, began + max_s - clock()))
            woke = sub.wait(wait_s)
            if woke.closing:  # the process is shutting down (the client resumes elsewhere),
                return  # or the client hung up (hang_up.end_on_hang_up)
            if still_live is not None and clock() - checked >= keepalive_s:
                try:
                    if not still_live():
                        yield 'event: error\ndata: {"error": "credential_revoked"}\n\n'
                        return
                    checked = clock()
                except (PoolTimeout, OperationalError) as exc:
                    log.warning("event stream credential check owed (%s)", exc)
            if not woke.changed:
                yield ": keepalive\n\n"
            # A fast run can pass an ``until`` status between two reads: the payload proves it.
            passed_until = passed_until or any(e.status in until for e in woke.events)
            try:
                changes = _changes(woke, read, owed=owed)
            except PoolTimeout as exc:
                log.warning("event stream re-read owed: the database pool is exhausted (%s)", exc)
                owed = True
                continue
            owed = False
            if changes is None:  # the run was deleted
                return
            for current in changes:
                _saw(sub, current)
                if current != last:
                    yield frame(current)
                    last = current
                if current["status"] in stop:
                    return
            if passed_until:
                return
    finally:
        sub.close()
        if slot is not None:
            slot.release()


def slots_of(app: Flask) -> StreamSlots:
    """The app's stream counter (Redis: the limits hold across every API process)."""
    found = app.extensions.get(SLOTS_EXTENSION)
    if isinstance(found, StreamSlots):
        return found
    ctx = api()
    slots = StreamSlots(
        ctx.redis,
        prefix=ctx.settings.redis_key_prefix,
        per_token=ctx.settings.sse_per_token,
        total=ctx.settings.sse_max_streams,
        stale_s=4 * KEEPALIVE_S,
        refresh_s=KEEPALIVE_S / 2,
    )
    app.extensions[SLOTS_EXTENSION] = slots
    return slots


def _then(body: Iterator[str], done: Callable[[], None]) -> Iterator[str]:
    """``body``, then ``done()`` however it ends (a client gone, the server stopping)."""
    try:
        yield from body
    finally:
        done()


def _refused(exc: TooManyStreams) -> Response:
    response = error_response(exc.http_status, exc.code, exc.message, exc.details)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


@events_bp.get("/runs/<kid:run_id>/events")
def run_events(run_id: str) -> ResponseReturnValue:
    until = parse_until(request.args.get("until"))
    resumed_from = last_event_id(request.headers.get("Last-Event-ID"))
    connect = api().single_read
    if request.method == "HEAD":
        # No body is ever written for HEAD, so a client that hung up is never noticed:
        # a stream would hold its slot (and a greenlet) until the run ended.
        if read_snapshot(connect, run_id) is None:
            raise NotFound(f"run {run_id} not found")
        return Response(mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})
    still_live = credential_still_live(ttl_s=KEEPALIVE_S)
    try:
        slot = slots_of(current_app).take(current_principal().name)
    except TooManyStreams as exc:
        return _refused(exc)
    try:
        sub = hub_of(current_app).subscribe(run_id)  # before the first read: nothing is missed
    except BaseException:
        slot.release()
        raise
    try:
        first = read_snapshot(connect, run_id)
    except BaseException:
        sub.close()
        slot.release()
        raise
    if first is None:
        sub.close()
        slot.release()
        raise NotFound(f"run {run_id} not found")
    body = stream(
        sub,
        first,
        lambda: read_snapshot(connect, run_id),
        until,
        KEEPALIVE_S,
        slot,
        resumed_from=resumed_from,
        still_live=still_live,
        max_s=api().settings.sse_max_s,
    )
    stop_watching = end_on_hang_up(request.environ.get("gunicorn.socket"), sub)
    return Response(
        stream_with_context(_then(body, stop_watching)),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
