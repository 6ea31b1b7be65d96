"""Red-team helper-129: the collector's token bound, on real Postgres, with a scripted
daemon (a tiny fake client: busy sessions, session totals, abort, one event stream).

Each test sets up one ``sent`` call of run R on daemon ``d``, session ``ses_1`` in
``/w``, reserving 200,000 tokens / $3.00 (KODO_CALL_TOKEN_BOUND at $15 per million),
and asserts the turn is stopped (its abort asked) once it passed what it reserved.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from services.worker.collector import Collector
from shared.opencode.events import OcEvent
from shared.service.messages import InMemorySender
from tests.factories import RunFactory

pytestmark = pytest.mark.integration

BOUND = 200_000
RESERVED_USD_MICRO = 3_000_000  # 200,000 tokens at $15 per million


class _Stream:
    def __init__(self, events: list[OcEvent]) -> None:
        self.events = events

    def __iter__(self) -> Iterator[OcEvent]:
        yield from self.events

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass

    def close(self) -> None:
        pass


class _Daemon:
    """The few calls the collector makes, scripted."""

    def __init__(self, totals: dict[str, Any], events: list[OcEvent] | None = None) -> None:
        self.totals = totals
        self.events_list = events or []
        self.busy = {"ses_1"}
        self.aborted: list[str] = []

    def busy_sessions(self, *, directory: str, timeout_s: float | None = None) -> dict[str, Any]:
        return {sid: {"type": "busy"} for sid in self.busy}

    def get_session(
        self, session_id: str, *, directory: str, timeout_s: float | None = None
    ) -> dict[str, Any]:
        return {"id": session_id, **self.totals}

    def abort(self, session_id: str, *, directory: str, timeout_s: float | None = None) -> bool:
        self.aborted.append(session_id)
        self.busy.discard(session_id)
        return True

    def events(
        self, *, directory: str | None = None, timeout_s: float, only: frozenset[str] | None = None
    ) -> _Stream:
        return _Stream([OcEvent("server.connected", {}, "e0"), *self.events_list])


def _sent_call(db: Session) -> str:
    run = RunFactory()
    db.commit()
    db.execute(
        text(
            "INSERT INTO app.opencode_calls (op_key, run_id, step_id, attempt, agent,"
            " session_id, daemon, request, status, reserved_usd_micro, reserved_tokens)"
            " VALUES (md5(:r), :r, 'CompileST', 1, 'plan', 'ses_1', 'd',"
            " '{\"directory\": \"/w\"}'::jsonb, 'sent', :usd, :tokens)"
        ),
        {"r": run.id, "usd": RESERVED_USD_MICRO, "tokens": BOUND},
    )
    db.commit()
    return str(run.id)


def _tokens(n: int) -> dict[str, Any]:
    return {"input": n, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}}


def _updated(message_id: str, tokens: dict[str, Any], cost: float = 0.0) -> OcEvent:
    info = {
        "id": message_id,
        "sessionID": "ses_1",
        "role": "assistant",
        "tokens": tokens,
        "cost": cost,
    }
    return OcEvent("message.updated", {"sessionID": "ses_1", "info": info}, "e")


def _collector(daemon: _Daemon, sessions: sessionmaker[Session]) -> Collector:
    return Collector(
        daemon,  # type: ignore[arg-type]
        sessions,
        InMemorySender(),
        daemon="d",
        token_bound=BOUND,
        usd_bound_micro=RESERVED_USD_MICRO,  # as the collector's main() gives it
    )


def test_rt129_a_reconnect_forgets_what_the_running_turn_already_spent(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    """The stream broke (a proxy's idle cut, a collector restart) while the turn had used
    190,000 tokens: the connect's reconcile reads 190,000 (under the bound: not stopped)
    and a fresh TurnSpend starts from 0. The next step's 150,000 tokens are counted
    alone, so the turn reaches 340,000 unstopped; each reconnect gives it a whole bound
    more (services/worker/collector.py _follow_once: ``spend = TurnSpend(...)``)."""
    _sent_call(db)
    daemon = _Daemon(
        {"tokens": _tokens(190_000), "cost": 2.85},
        events=[_updated("msg_after_reconnect", _tokens(150_000))],
    )
    collector = _collector(daemon, sessions)
    collector._follow_once(threading.Event())  # connect, reconcile, read the stream
    assert daemon.aborted == ["ses_1"], "340,000 tokens used against a bound of 200,000"


def test_rt129_a_turn_past_its_usd_reservation_under_the_token_bound_is_not_stopped(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    """The bound watches tokens only. A turn of 150,000 tokens, mostly output (5x the
    input price on the usual models) and cache writes, costs $11.25 while its call
    reserved $3.00 of the run's USD budget: the run's settled spend passes budget_usd
    with no call over the bound (the README's "while a call uses no more tokens than
    the bound, the settled costs of a run never pass its budget" does not hold in USD)."""
    _sent_call(db)
    output_heavy = {
        "input": 10_000,
        "output": 140_000,
        "reasoning": 0,
        "cache": {"read": 0, "write": 0},
    }
    nothing_yet = {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}}
    for at_connect, said in (
        ({"tokens": output_heavy, "cost": 11.25}, []),  # read by the connect's reconcile
        ({"tokens": nothing_yet, "cost": 0}, [_updated("msg_1", output_heavy, cost=11.25)]),
    ):
        db.execute(text("UPDATE app.opencode_calls SET error = NULL"))
        db.commit()
        daemon = _Daemon(at_connect, events=said)
        collector = _collector(daemon, sessions)
        collector._follow_once(threading.Event())
        assert daemon.aborted == ["ses_1"], "$11.25 spent of a $3.00 reservation, unstopped"


def test_rt129_a_session_error_said_mid_turn_disarms_the_bound(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    """A daemon that says ``session.error`` for a turn that goes on (a provider error it
    then retries, a plugin's error): ``wake_with_error`` writes the error and ``idle_at``
    on the row, and forgets the turn's count (``spend.end``). From then on
    ``mark_over_bound`` (``error IS NULL``, ``idle_at IS NULL``) matches nothing: the
    turn is never aborted however much it spends; its woken step finds it busy and
    parks until its deadline."""
    _sent_call(db)
    error = {"name": "APIError", "data": {"message": "overloaded", "isRetryable": True}}
    daemon = _Daemon(
        {"tokens": _tokens(50_000), "cost": 0.75},
        events=[
            _updated("msg_1", _tokens(50_000)),
            OcEvent("session.error", {"sessionID": "ses_1", "error": error}, "e"),
        ],
    )
    collector = _collector(daemon, sessions)
    collector._follow_once(threading.Event())  # the error wakes the step (still busy)
    daemon.events_list = [  # the turn goes on
        _updated("msg_2", _tokens(300_000)),
        _updated("msg_3", _tokens(300_000)),
        _updated("msg_4", _tokens(300_000)),
    ]
    collector._follow_once(threading.Event())
    assert daemon.aborted == ["ses_1"], "950,000 tokens used against a bound of 200,000"
