"""The collector: follows a daemon's event stream and wakes the steps whose sent calls
ended, so no worker thread waits while a model thinks.

One thread per daemon reads ``GET /global/event``. On ``session.idle`` or
``session.error`` of a session holding a ``sent`` call, it records the wake-up and
sends the call's step again (the step collects, judges and records the answer). On
every connect, after the stream is open (so nothing ends unseen in between), it
reconciles: each sent call of that daemon whose session ``GET /session/status`` no
longer lists as busy is woken too, so a completion missed while the stream was down
is still collected. A call nothing wakes is swept at its deadline by the reconciler
(the parked step's lease expires then). A daemon that refuses connections for
OC_DAEMON_LOST_S is lost: its sent calls are recorded failed (``DaemonLost``) and their
steps woken, so their next attempts go to the daemons that answer.

With a token bound (``KODO_CALL_TOKEN_BOUND``) it also adds up each running turn's
assistant messages (``message.updated``) and has a turn that passed the bound aborted,
its call's row saying why (shared.domain.turn_spend): the reservation a call made is
then what it may spend, within one model step.

Run it with ``python -m services.worker.collector`` (kodo up, the demo, compose and
the tests do); it reconnects on its own and never exits on a daemon or database error.
"""

from __future__ import annotations

import itertools
import signal
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.clock import Clock, SystemClock
from shared.db.repos.ledger import SentCall
from shared.domain.budget import usd_to_micro
from shared.domain.turn_spend import Spent, TurnSpend, over_bound_error
from shared.hashing import sha256_hex
from shared.opencode.calls import bounded_error
from shared.opencode.errors import OpenCodeError, OpenCodeTransientError, OpenCodeUnreachable
from shared.opencode.events import MESSAGE_UPDATED, SESSION_IDLE, OcEvent
from shared.opencode.exactly_once import abort_turn
from shared.opencode.ports import AgentClient, EventStream
from shared.opencode.turn_inspection import usage_of
from shared.service.collection import (
    fail_lost_daemon_calls,
    mark_over_bound,
    sent_calls,
    wake_errored_step,
    wake_steps,
)
from shared.service.messages import RunStep, Sender
from shared.service.uow import UnitOfWork

log = structlog.get_logger("kodo.collector")

ENDED = frozenset({"session.idle", "session.error"})
"""Events that end a turn. An unknown agent or model is a 204 to prompt_async and then
a ``session.error`` only (no idle): both wake the step."""

ID_CHARS_MAX = 128
"""The longest session or message id kept: the ledger's ``session_id`` column width, so
a longer one names no call of kodo's. Held ids stay small whatever the stream says (100
``session.idle`` events with 1 MB ids had held 95 MB; red-team helper-128)."""

STREAM_READ_TIMEOUT_S = 35.0
"""The daemon sends a heartbeat every 10 s: a silence this long is a dead stream."""


@dataclass
class Collector:
    """Wakes the steps of one daemon's ended sessions."""

    client: AgentClient
    sessions: sessionmaker[Session]
    sender: Sender
    daemon: str
    clock: Clock = field(default_factory=SystemClock)
    reconnect_s: float = 1.0
    lost_after_s: float = 60.0
    token_bound: int | None = None
    """Abort a turn once its assistant messages used more tokens (None: never)."""
    usd_bound_micro: int = 0
    """... or cost more micro-dollars than its call reserved (0: tokens only)."""
    woken: int = 0
    over_bound: int = 0
    connects: int = 0
    lost_calls: int = 0
    _ready: threading.Event = field(default_factory=threading.Event)
    _spend_kept: TurnSpend | None = None
    _down_since: float | None = None
    _declared_lost: bool = False

    def reconcile(self) -> list[RunStep]:
        """Wake every sent call of this daemon whose session is no longer busy; with a
        token bound, stop each busy one whose session already spent past it (its
        report may have come while the stream was down)."""
        bounded = self.token_bound is not None
        with self.sessions() as s:
            calls = sent_calls(s, self.daemon, claimed=bounded)
        by_directory: dict[str, list[SentCall]] = defaultdict(list)
        for call in calls:
            by_directory[call.directory].append(call)
        ended: list[str] = []
        running: list[tuple[str, str]] = []
        for directory, listed in sorted(by_directory.items()):
            busy = self.client.busy_sessions(directory=directory)
            for call in listed:
                if call.session_id in busy:
                    running.append((call.session_id, directory))
                elif call.sent:  # a claimed one is woken by its sender (LedgerRepo.wake)
                    ended.append(call.session_id)
        if self.token_bound is not None:
            for session_id, directory in running:
                self._stop_if_over(session_id, directory, self.token_bound)
        return self.wake(ended)

    def _stop_if_over(self, session_id: str, directory: str, bound: int) -> None:
        """Stop a running turn whose session's totals (one call a session) are past
        ``bound``, else count them as its spend so far; a daemon that cannot say now is
        asked at the next reconcile."""
        try:
            info = self.client.get_session(session_id, directory=directory)
        except OpenCodeError as exc:
            log.info("collector.spend_unread", session_id=session_id, error=str(exc)[:200])
            return
        used = _spent(usage_of(info))
        spend = self._spend
        if spend is not None and spend.past(used):
            self.stop_over_bound(session_id, used, bound)
        elif spend is not None:
            spend.seed(session_id, used)  # its next steps are added to what it spent

    def wake(self, session_ids: Iterable[str]) -> list[RunStep]:
        ids = sorted(set(session_ids))
        if not ids:
            return []
        with UnitOfWork(self.sessions, self.sender, alone=True) as uow:  # one statement
            woken = wake_steps(uow, ids, self.daemon)
        self.woken += len(woken)
        for message in woken:
            log.info("collector.woke", run_id=message.run_id, step_id=message.step.value)
        return woken

    def wake_errored(self, session_id: str, error: str) -> list[RunStep]:
        with UnitOfWork(self.sessions, self.sender) as uow:
            woken = wake_errored_step(uow, session_id, error, self.daemon)
        self.woken += len(woken)
        for message in woken:
            log.info("collector.woke", run_id=message.run_id, step_id=message.step.value)
        return woken

    def follow(self, stop: threading.Event) -> None:
        """Connect, reconcile, and wake on ended sessions until ``stop``; reconnect on
        any failure of the daemon or the database (logged), never return early."""
        while not stop.is_set():
            unreachable = False
            try:
                self._follow_once(stop)
            except OpenCodeUnreachable as exc:
                log.warning(
                    "collector.daemon_unreachable", daemon=self.daemon, error=str(exc)[:300]
                )
                unreachable = True
            except (OpenCodeError, SQLAlchemyError) as exc:
                log.warning("collector.stream_lost", daemon=self.daemon, error=str(exc)[:300])
            except Exception:  # a bug must not stop the wake-ups: log it, reconnect
                log.exception("collector.crashed", daemon=self.daemon)
            if unreachable:
                # Outside the handler above: the daemon and the database can be down
                # together (a host's restart), and a failure here raised inside an
                # ``except`` clause would escape its siblings and end this thread.
                try:
                    self._unreachable()
                except SQLAlchemyError as exc:
                    log.warning(
                        "collector.lost_unrecorded", daemon=self.daemon, error=str(exc)[:300]
                    )
                except Exception:
                    log.exception("collector.crashed", daemon=self.daemon)
            stop.wait(self.reconnect_s)

    def _unreachable(self) -> None:
        """Count how long the daemon refuses connections; past ``lost_after_s``, its sent
        calls are recorded failed (DaemonLost) once per outage and their steps woken."""
        now = self.clock.monotonic()
        if self._down_since is None:
            self._down_since = now
        down_s = now - self._down_since
        if down_s < self.lost_after_s or self._declared_lost:
            return
        with UnitOfWork(self.sessions, self.sender) as uow:
            woken = fail_lost_daemon_calls(uow, self.daemon, self.clock.now(), down_s)
        self._declared_lost = True
        self.lost_calls += len(woken)
        log.error(
            "collector.daemon_lost", daemon=self.daemon, down_s=round(down_s), calls=len(woken)
        )

    @property
    def _spend(self) -> TurnSpend | None:
        """The running turns' spend, kept across reconnects (a turn's count must not
        start again from nothing each time the stream breaks); None without a bound."""
        if self.token_bound is None:
            return None
        if self._spend_kept is None:
            self._spend_kept = TurnSpend(self.token_bound, self.usd_bound_micro)
        return self._spend_kept

    def stop_over_bound(self, session_id: str, used: Spent, bound: int) -> bool:
        """Mark the sent call of ``session_id`` over its token bound (once: the first
        total said stays) and abort its turn; False if no sent call of this daemon
        awaits it (not kodo's, or already ended)."""
        with UnitOfWork(self.sessions, self.sender) as uow:
            directories = mark_over_bound(
                uow, session_id, over_bound_error(used, bound, self.usd_bound_micro), self.daemon
            )
        for directory in directories:
            stopped = abort_turn(self.client, session_id, directory)
            self.over_bound += 1
            log.warning(
                "collector.call_over_bound",
                daemon=self.daemon,
                session_id=session_id,
                used=used.tokens,
                used_usd_micro=used.usd_micro,
                bound=bound,
                aborted=stopped,
            )
            if not stopped:  # its step asks again, and again until the turn stops
                said = over_bound_error(used, bound, self.usd_bound_micro)
                self.wake_errored(session_id, said)
        return bool(directories)

    def _follow_once(self, stop: threading.Event) -> None:
        # Only the ends of turns (and, with a bound, the messages' usage): every other
        # event of every turn goes by unparsed.
        wanted = ENDED if self.token_bound is None else ENDED | {MESSAGE_UPDATED}
        with self.client.events(
            directory=None, timeout_s=STREAM_READ_TIMEOUT_S, only=wanted
        ) as stream:
            self._down_since = None
            self._declared_lost = False
            self.connects += 1
            reconciled = self.reconcile()
            log.info(
                "collector.connected",
                daemon=self.daemon,
                connects=self.connects,
                reconciled=len(reconciled),
            )
            self._ready.set()
            ended = EndedSessions()
            spend = self._spend
            reader = threading.Thread(
                target=_read_ended,
                args=(stream, ended, spend),
                name="collector-read",
                daemon=True,
            )
            reader.start()
            while not stop.is_set():
                taken = ended.take(WAKE_BATCH, timeout_s=0.5)
                if taken is not None and not self._wake_taken(taken):
                    return  # the daemon ended the stream: reconnect (and reconcile)

    def _wake_taken(self, taken: Taken) -> bool:
        """Wake the sessions taken (errored ones first, keeping the daemon's error), and
        reconcile if some were dropped; False if the stream ended, raising what broke it."""
        for session_id, used in taken.over:  # stopped first: every step costs
            if self.token_bound is not None:
                self.stop_over_bound(session_id, used, self.token_bound)
        idle: list[str] = []
        for session_id, error in taken.sessions:
            if error is None:
                idle.append(session_id)
            else:
                self.wake_errored(session_id, error)
        self.wake(idle)
        if taken.overflowed:
            # Sessions ended past PENDING_MAX were dropped unread: every sent call of
            # this daemon whose session is not busy is woken instead.
            log.warning("collector.overflowed", daemon=self.daemon, held=PENDING_MAX)
            self.reconcile()
        if taken.failure is not None:
            raise taken.failure
        return not taken.ended

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the first connect reconciled (tests wait for it)."""
        return self._ready.wait(timeout_s)


def ended_session(event: OcEvent) -> str | None:
    """The session whose turn ``event`` ends, if it ends one."""
    if event.type not in ENDED:
        return None
    session_id = event.properties.get("sessionID")
    return session_id if _an_id(session_id) else None


def _an_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= ID_CHARS_MAX


def assistant_usage(event: OcEvent) -> tuple[str, str, Spent] | None:
    """(session, message, what it used) of a ``message.updated`` event of an assistant
    message, else None (a user message, or a shape that is not one)."""
    if event.type != MESSAGE_UPDATED:
        return None
    info = event.properties.get("info")
    if not isinstance(info, dict) or info.get("role") != "assistant":
        return None
    session_id, message_id = info.get("sessionID"), info.get("id")
    if not _an_id(session_id) or not isinstance(message_id, str):
        return None  # a session id longer than the ledger keeps is no call of kodo's
    if not _an_id(message_id):  # counted all the same, held by its digest
        message_id = sha256_hex(message_id)
    return session_id, message_id, _spent(usage_of(info))


def _spent(usage: dict[str, Any]) -> Spent:
    """Tokens and micro-dollars of a normalised usage (turn_inspection.usage_of)."""
    return Spent(int(usage["total_tokens"]), usd_to_micro(float(usage["cost_usd"])))


def session_error(event: OcEvent) -> str | None:
    """The daemon's error of a ``session.error`` event, bounded ("Name: message")."""
    if event.type != "session.error":
        return None
    raw = event.properties.get("error")
    if not isinstance(raw, dict):
        return bounded_error(f"session.error: {raw!r}")
    data = raw.get("data")
    message = data.get("message") if isinstance(data, dict) else None
    return bounded_error(f"{raw.get('name', 'Error')}: {message if message is not None else data}")


WAKE_BATCH = 500
"""Ended sessions woken in one transaction when many end at once."""

PENDING_MAX = 10_000
"""Ended sessions held for the follower at most. A daemon that ends turns faster than
they are woken, or floods ``session.idle`` events of sessions it never had, fills it:
what does not fit is dropped, and the follower reconciles instead (every sent call of
the daemon whose session is not busy is woken), so the collector's memory stays bounded
and no ended call is missed."""


@dataclass(frozen=True)
class Taken:
    """What the follower takes at once: ended sessions (with the daemon's error, if it
    said one), whether any were dropped, and whether the stream ended after them (and
    what broke it, if something did)."""

    sessions: list[tuple[str, str | None]]
    over: list[tuple[str, Spent]] = field(default_factory=list)
    """Sessions whose turn passed the token bound, with what it used."""
    overflowed: bool = False
    ended: bool = False
    failure: BaseException | None = None


class EndedSessions:
    """Handed from the stream's reader to the follower: each ended session once (an
    error said for it kept), at most ``limit`` of them, and how the stream ended. The
    reader never waits on it, so it never outlives the stream it reads."""

    def __init__(self, limit: int = PENDING_MAX) -> None:
        self.limit = limit
        self._sessions: dict[str, str | None] = {}  # in the order they ended
        self._over: dict[str, Spent] = {}  # turns past the token bound, still running
        self._overflowed = False
        self._ended = False
        self._failure: BaseException | None = None
        self._changed = threading.Condition()

    def add(self, session_id: str, error: str | None) -> None:
        with self._changed:
            if session_id in self._sessions:
                self._sessions[session_id] = self._sessions[session_id] or error
            elif len(self._sessions) < self.limit:
                self._sessions[session_id] = error
            else:
                self._overflowed = True
            self._changed.notify()

    def add_over(self, session_id: str, used: Spent) -> None:
        """A running turn passed the token bound (at most ``limit`` held, as ended ones)."""
        with self._changed:
            if len(self._over) < self.limit:
                self._over[session_id] = used
            else:
                self._overflowed = True  # its end is still seen; the deadline bounds it
            self._changed.notify()

    def end(self, failure: BaseException | None) -> None:
        """The stream ended: ``failure`` broke it (None: the daemon ended it)."""
        with self._changed:
            self._ended, self._failure = True, failure
            self._changed.notify()

    def take(self, most: int, timeout_s: float) -> Taken | None:
        """Up to ``most`` ended sessions, oldest first, and the stream's end once nothing
        before it is left; None if nothing came within ``timeout_s``."""
        with self._changed:
            ready = self._changed.wait_for(
                lambda: bool(self._sessions or self._over) or self._overflowed or self._ended,
                timeout_s,
            )
            if not ready:
                return None
            ids = list(itertools.islice(self._sessions, most))
            sessions = [(session_id, self._sessions.pop(session_id)) for session_id in ids]
            over, self._over = list(self._over.items()), {}
            overflowed, self._overflowed = self._overflowed, False
            ended = self._ended and not self._sessions
            return Taken(sessions, over, overflowed, ended, self._failure if ended else None)


def _read_ended(stream: EventStream, ended: EndedSessions, spend: TurnSpend | None = None) -> None:
    """Hand the ended sessions of ``stream`` to ``ended`` (its own thread: the follower
    takes what piled up and wakes it in one transaction), and, with ``spend``, the
    running turns that passed the token bound; then how the stream ended."""
    try:
        for event in stream:
            session_id = ended_session(event)
            if session_id is not None:
                if spend is not None and event.type == SESSION_IDLE:
                    spend.end(session_id)  # not at an error: a daemon may go on after one
                ended.add(session_id, session_error(event))
            elif spend is not None and (usage := assistant_usage(event)) is not None:
                used = spend.see(*usage)
                if used is not None:
                    ended.add_over(usage[0], used)
    except OpenCodeError as exc:
        ended.end(exc)
        return
    except OSError as exc:  # the socket, closed under us (a stop) or broken
        ended.end(OpenCodeTransientError(f"event stream broke: {type(exc).__name__}: {exc}"))
        return
    except Exception as exc:  # a bug: the follower raises it, logs it and reconnects
        ended.end(exc)  # (never waits on a reader that is gone)
        return
    ended.end(None)


def run_collectors(collectors: list[Collector], stop: threading.Event) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=c.follow, args=(stop,), name=f"collector-{i}", daemon=True)
        for i, c in enumerate(collectors)
    ]
    for thread in threads:
        thread.start()
    return threads


def main(install_signals: Callable[..., object] = signal.signal) -> int:
    """``python -m services.worker.collector``: one collector per configured daemon."""
    from shared.config import Settings
    from shared.db.engine import make_engine, make_session_factory
    from shared.logging import configure_logging
    from shared.opencode.client import OpenCodeClient
    from shared.queue import CelerySender, make_celery
    from shared.service.processes import register_process

    settings = Settings.from_env()
    configure_logging(json=settings.log_json)  # KODO_LOG_FORMAT, as the API and workers
    engine = make_engine(settings.database_url, ping_idle_s=settings.db_ping_idle_s)
    register_process(engine, "collector")  # refuses a database of another migration head
    sessions = make_session_factory(engine)
    sender = CelerySender(make_celery(settings))
    stop = threading.Event()
    install_signals(signal.SIGTERM, lambda *_: stop.set())
    install_signals(signal.SIGINT, lambda *_: stop.set())
    clients = [
        OpenCodeClient(
            url,
            timeout_s=settings.oc_timeout_ms / 1000,
            username=settings.oc_username,
            password=settings.oc_password,
            max_answer_bytes=settings.max_answer_bytes,
        )
        for url in settings.oc_base_urls
    ]
    collectors = [
        Collector(
            client,
            sessions,
            sender,
            daemon=client.base_url,
            lost_after_s=settings.oc_daemon_lost_s,
            token_bound=settings.call_token_bound,
            usd_bound_micro=settings.call_estimate().usd_micro,
        )
        for client in clients
    ]
    log.info("collector.started", daemons=[c.daemon for c in collectors])
    run_collectors(collectors, stop)
    stop.wait()
    log.info("collector.stopped", woken=sum(c.woken for c in collectors))
    for client in clients:
        client.close()
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
