"""Run state changes from Postgres LISTEN/NOTIFY, fanned out to waiters by run id.

The ``runs_notify_event`` trigger (migration 0002) announces every change of a run's
status or step on ``kodo_run_events``. A process keeps ONE dedicated autocommit
connection listening there and hands each notification to the subscribers of that
run: a connection per waiting client would run Postgres out of connections long
before a few hundred clients wait at once.

Notifications are a wake-up signal, not the record: a notification sent while the
listener was reconnecting is lost, so after every (re)connect each subscriber is told
to re-read (``Wakeup.resync``). Readers re-read the row; Postgres stays the truth.

A hub started with ``sweep_s`` also checks, that often, every subscribed run's
``event_seq`` against the last one its subscribers have (one statement for all of
them, on the listening connection): a subscriber behind the row is told to re-read.
That is the safety net for a notification lost some other way, which each event
stream used to cast alone with a read of its own per quiet keepalive: a thousand
watchers were a thousand reads a beat, now one.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Self

import psycopg
from psycopg.rows import TupleRow

from shared.db.engine import bounded_url

CHANNEL = "kodo_run_events"
CONNECT_TIMEOUT_S = 5
SWEEP = "SELECT id, event_seq FROM app.runs WHERE id = ANY(%s)"

log = logging.getLogger(__name__)


class ListenerUnavailable(RuntimeError):
    """The listening connection could not be opened in time."""


@dataclass(frozen=True)
class RunEvent:
    """One notification: the run's public state at the moment it committed.

    The trigger builds it from the committed row inside the committing transaction,
    and notifications arrive in commit order, so an event is as good as a read.
    ``next_action`` and ``seq`` are None only in a payload from an older trigger (then
    re-read). ``seq`` numbers the run's state changes (migration 0019).
    """

    run_id: str
    status: str
    last_step: str | None
    next_action: str | None = None
    seq: int | None = None


@dataclass(frozen=True)
class Wakeup:
    """What arrived for one subscriber while it waited (nothing, on a timeout)."""

    events: tuple[RunEvent, ...] = ()
    resync: bool = False  # the listener reconnected: changes may have been missed
    closing: bool = False  # the process is shutting down: end the wait for good

    @property
    def changed(self) -> bool:
        return bool(self.events) or self.resync


def parse_payload(payload: str) -> RunEvent | None:
    """The trigger's JSON, or None if it is not that shape (ignored, never guessed at)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    run_id, status, step = data.get("run_id"), data.get("status"), data.get("last_step")
    if not isinstance(run_id, str) or not isinstance(status, str):
        return None
    action, seq = data.get("next_action"), data.get("seq")
    return RunEvent(
        run_id,
        status,
        step if isinstance(step, str) else None,
        action if isinstance(action, str) else None,
        seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
    )


def conninfo_of(database_url: str) -> str:
    """A libpq URL from a SQLAlchemy one (``postgresql+psycopg://`` -> ``postgresql://``),
    with the bounds every kodo connection has (``CONNECTION_BOUNDS``): an idle LISTEN
    connection whose server is gone would otherwise show no notification, and its next
    sweep would wait some fifteen minutes, every stream of the process frozen meanwhile."""
    url = bounded_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class Mark(Enum):
    """What a subscriber is told besides events."""

    RESYNC = "resync"  # queued to every subscriber after a (re)connect
    CLOSING = "closing"  # queued to every subscriber once the hub drains


class Subscription:
    """The notifications of one run, from :meth:`RunEventHub.subscribe` until closed."""

    def __init__(self, hub: RunEventHub, run_id: str) -> None:
        self.hub = hub
        self.run_id = run_id
        self._inbox: queue.SimpleQueue[RunEvent | Mark] = queue.SimpleQueue()
        # The newest state (event_seq) in the subscriber's hands: what it read, and every
        # numbered event handed to it. None until it says (the hub's sweep then asks it
        # to re-read).
        self.latest: int | None = None

    def saw(self, seq: int) -> None:
        """The subscriber has the run's state numbered ``seq`` (it read it)."""
        if self.latest is None or seq > self.latest:
            self.latest = seq

    def deliver(self, item: RunEvent | Mark) -> None:
        if isinstance(item, RunEvent) and item.seq is not None:
            self.saw(item.seq)
        self._inbox.put(item)

    def wait(self, timeout_s: float) -> Wakeup:
        """Block until something arrives (or ``timeout_s``); return everything pending."""
        try:
            items = [self._inbox.get(timeout=timeout_s)]
        except queue.Empty:
            return Wakeup()
        while True:  # coalesce a burst into one wake-up: the reader re-reads once
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        events = tuple(i for i in items if isinstance(i, RunEvent))
        return Wakeup(events=events, resync=Mark.RESYNC in items, closing=Mark.CLOSING in items)

    def close(self) -> None:
        self.hub.unsubscribe(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()


class RunEventHub:
    """One listening connection per process, on a daemon thread; many subscribers.

    ``start`` returns once ``LISTEN`` is in effect, so a caller that subscribes and
    then reads the run's row cannot miss a change committed after that read.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        poll_s: float = 0.5,
        reconnect_s: float = 1.0,
        sweep_s: float | None = None,
    ) -> None:
        """``sweep_s``: how often subscribers are checked against their runs' rows (None:
        never; every notification is then trusted to arrive while connected)."""
        self.conninfo = conninfo
        self.poll_s = poll_s
        self.reconnect_s = reconnect_s
        self.sweep_s = sweep_s
        self._subs: dict[str, set[Subscription]] = {}
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._stopping = threading.Event()
        self._draining = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kodo-run-events", daemon=True)
            self._thread.start()
        if not self._listening.wait(timeout_s):
            raise ListenerUnavailable(f"no LISTEN {CHANNEL} connection after {timeout_s}s")

    def subscribe(self, run_id: str) -> Subscription:
        """A subscription to ``run_id``'s events; once draining, one told so at once."""
        sub = Subscription(self, run_id)
        with self._lock:
            self._subs.setdefault(run_id, set()).add(sub)
            draining = self._draining.is_set()
        if draining:
            sub.deliver(Mark.CLOSING)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.run_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.run_id]

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subs.values())

    def drain(self) -> None:
        """Tell every subscriber, and every later one, that this process is shutting
        down: a waiter ends at once instead of holding its connection (and the process)
        until a deadline. The hub keeps listening for anything still running."""
        with self._lock:
            self._draining.set()
            targets = [sub for subs in self._subs.values() for sub in subs]
        for sub in targets:
            sub.deliver(Mark.CLOSING)

    def close(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- the listening thread ------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                log.warning("run events: listener connection lost (%s); reconnecting", exc)
            except Exception:  # a bug must not leave a dead hub that looks alive
                log.exception("run events: listener failed; reconnecting")
            finally:
                self._listening.clear()
            self._stopping.wait(self.reconnect_s)

    def _listen(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            # told before ``start`` returns: a subscriber that comes after LISTEN is in
            # effect missed nothing, and is not sent to re-read for nothing
            self._broadcast_resync()
            self._listening.set()
            swept = time.monotonic()
            while not self._stopping.is_set():
                for note in conn.notifies(timeout=self.poll_s):
                    event = parse_payload(note.payload)
                    if event is not None:
                        self._dispatch(event)
                if self.sweep_s is not None and time.monotonic() - swept >= self.sweep_s:
                    self._sweep(conn)
                    swept = time.monotonic()

    def _sweep(self, conn: psycopg.Connection[TupleRow]) -> None:
        """Tell every subscriber behind its run's row (a notification it never got), or
        whose run is gone, to re-read. Notifications that arrive meanwhile are kept by
        the connection and dispatched next: a subscriber told to re-read a state that
        was on its way re-reads once for nothing."""
        with self._lock:
            subscribed = {run_id: list(subs) for run_id, subs in self._subs.items()}
        if not subscribed:
            return
        rows = conn.execute(SWEEP, (list(subscribed),)).fetchall()
        seqs: dict[str, int] = {run_id: seq for run_id, seq in rows}
        for run_id, subs in subscribed.items():
            current = seqs.get(run_id)
            for sub in subs:
                if current is None or sub.latest is None or current > sub.latest:
                    sub.deliver(Mark.RESYNC)

    def _dispatch(self, event: RunEvent) -> None:
        with self._lock:
            targets = list(self._subs.get(event.run_id, ()))
        for sub in targets:
            sub.deliver(event)

    def _broadcast_resync(self) -> None:
        with self._lock:
            targets = [sub for subs in self._subs.values() for sub in subs]
        for sub in targets:
            sub.deliver(Mark.RESYNC)
