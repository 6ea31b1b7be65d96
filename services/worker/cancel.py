"""Aborting a cancelled run's in-flight provider calls (the worker owns OpenCode).

A cancel sends AbortCalls; the reconciler's pass sweeps what that missed, from the rows
alone: a prompt sent after the abort ran (the cancel landed between the call's claim
and its send), an AbortCalls message Redis lost, or an abort the daemon did not confirm
(a 5xx, a timeout). Each leaves a ``sent`` call of a cancelled run that no step will
ever collect: its turn would run on, unbilled, its reservation never settled. So does a
claimant that died between sending its prompt and recording it sent: its call stays
``claimed``, which a cancel leaves to the claimant, until the step's lease lapses and
the sweep takes it (``LedgerRepo.take_orphaned_claims``).
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from services.worker.runtime import Runtime
from shared.db.repos.ledger import OPEN, LedgerRepo, OpenSession
from shared.db.repos.runs import RunRepo
from shared.db.repos.sessions_to_forget import ForgetRepo
from shared.domain.run_machine import RunStatus
from shared.opencode.daemons import Daemon, UnknownDaemon
from shared.opencode.errors import OpenCodeError
from shared.opencode.exactly_once import ABORT_WINDOW_S, BILLED_READ_S, abort_turn
from shared.opencode.ports import AgentClient
from shared.opencode.turn_inspection import usage_of

log = structlog.get_logger("kodo.cancel")


SWEEP_LIMIT = 20
"""Cancelled runs whose missed calls one reconciler pass aborts (the next takes the rest,
oldest first): each abort may wait ABORT_S on a hung daemon."""

SWEEP_BUDGET_S = 30.0
"""A pass starts no abort of another run after this long: the reconciler has other
work after the sweep, and a hung daemon would otherwise hold it SWEEP_LIMIT x ABORT_S."""


def abort_missed_calls(rt: Runtime) -> list[str]:
    """Abort and record the ``sent`` calls of cancelled runs (see the module's note),
    abort the sessions of their live claimants' calls (a blocking prompt may have left
    after the cancel's own abort) and give up their dead claimants' unsent ones; return
    the runs swept. A daemon whose abort was not confirmed is not asked again
    in the same pass (its other runs' calls wait for the next), so one hung daemon
    costs a pass ABORT_S once, not once per run."""
    with rt.sessions() as s:
        runs = LedgerRepo(s).cancelled_runs_with_open_calls(SWEEP_LIMIT)
    began = rt.clock.monotonic()
    silent: set[str] = set()
    swept: list[str] = []
    for run_id in runs:
        if rt.clock.monotonic() - began > SWEEP_BUDGET_S:
            break
        aborted = abort_inflight_calls(rt, run_id, silent=silent)
        swept.append(run_id)
        log.warning("cancel.missed_call_swept", run_id=run_id, sessions=aborted)
    _abort_waking_claimants(rt, began, silent)
    return swept


_echoed_last = ""
"""The last run :func:`_abort_waking_claimants` reached: the next pass starts past it."""


def _abort_waking_claimants(rt: Runtime, began: float, silent: set[str]) -> None:
    """Abort again the sessions of cancelled runs' recorded calls whose claimant may
    still wake (LedgerRepo.runs_with_waking_claimants): a worker frozen between recording
    its session and sending a blocking prompt, its lease lapsed, had its call taken as an
    orphan and recorded aborted; thawed, it sent the prompt, which nothing listed again,
    and the turn ran to its end on a cancelled run, paid (red-team helper-102). Within
    the call's deadline and abort window, each pass stops such a turn (and deletes the
    session, unless OC_KEEP_SESSIONS: a prompt to a deleted session never runs)."""
    global _echoed_last
    window_s = rt.settings.oc_timeout_ms / 1000 + ABORT_WINDOW_S
    with rt.sessions() as s:
        runs = LedgerRepo(s).runs_with_waking_claimants(window_s, SWEEP_LIMIT, after=_echoed_last)
    for run_id in runs:
        if rt.clock.monotonic() - began > SWEEP_BUDGET_S:
            return
        _echoed_last = run_id  # the next pass goes on from here
        with rt.sessions() as s:
            sessions = LedgerRepo(s).waking_sessions_of(run_id, window_s)
        for call in sessions:
            daemon = _daemon_of(rt, call.daemon)
            if daemon is None or daemon.url in silent:
                continue
            if not abort_turn(daemon.client, call.session_id, call.directory):
                silent.add(daemon.url)
                continue
            log.info("cancel.waking_claimant_aborted", run_id=run_id, session_id=call.session_id)
            if not rt.settings.oc_keep_sessions:
                try:
                    daemon.client.delete_session(call.session_id, directory=call.directory)
                except OpenCodeError as exc:  # kept already, or gone: the next pass aborts
                    log.info("cancel.session_kept", session_id=call.session_id, error=str(exc))


def abort_inflight_calls(
    rt: Runtime,
    run_id: str,
    *,
    give_up_after_s: float | None = None,
    silent: set[str] | None = None,
) -> list[str]:
    """Abort the OpenCode session of every claimed or sent call of a cancelled run;
    return the sessions whose abort the daemon confirmed, and those of sent calls whose
    turn the collector saw end with no error (ended whatever the abort's answer).

    A sent call whose abort was confirmed, or whose turn the collector saw end with no
    error, is recorded ``aborted`` with its session's totals read after the abort
    (claimed ones are recorded by their claimant, or taken as sent first once their
    claimant is gone: ``LedgerRepo.take_orphaned_claims``). The settle spends at least each
    one's reservation: the step the abort cut is in no totals. A sent call whose abort
    failed stays ``sent``, so the reconciler's sweep tries again, until it is older
    than its deadline plus ABORT_WINDOW_S (``give_up_after_s``), the rule an overdue
    call's abort follows: it is then recorded ``aborted`` with what its totals say,
    saying the abort was never confirmed, since its turn may still run.

    ``silent``: daemons (base URLs) not to ask (their abort was not confirmed earlier
    in the pass); each daemon whose abort is not confirmed here is added to it.
    """
    if give_up_after_s is None:
        give_up_after_s = rt.settings.oc_timeout_ms / 1000 + ABORT_WINDOW_S
    silent = set() if silent is None else silent
    with rt.uow() as uow:
        if RunRepo(uow.session).status_of(run_id) != RunStatus.CANCELLED.value:
            return []
        ledger = LedgerRepo(uow.session)
        orphaned = ledger.take_orphaned_claims(run_id)
        unsent = ledger.give_up_unsent_of(run_id, rt.clock.now())
        open_sessions = ledger.open_sessions_of(run_id)
    if orphaned:
        log.warning("cancel.orphaned_claims_taken", run_id=run_id, calls=orphaned)
    if unsent:
        log.warning("cancel.unsent_claims_given_up", run_id=run_id, calls=unsent)
    aborted: list[str] = []
    totals: dict[str, dict[str, Any] | None] = {}
    given_up: dict[str, dict[str, Any] | None] = {}
    read: list[tuple[Daemon, str, str]] = []  # (daemon, session, directory) of totals
    for call in open_sessions:
        daemon = _daemon_of(rt, call.daemon)
        confirmed = (
            daemon is not None
            and daemon.url not in silent
            and abort_turn(daemon.client, call.session_id, call.directory)
        )
        if daemon is not None and not confirmed:
            silent.add(daemon.url)
        if not confirmed and not (call.sent and call.ended):
            log.warning(
                "cancel.abort_unconfirmed",
                run_id=run_id,
                session_id=call.session_id,
                sent=call.sent,
                age_s=round(call.age_s, 1),
            )
            if call.sent and call.age_s >= give_up_after_s:
                billed = None if daemon is None else _totals(daemon.client, call)
                given_up[call.session_id] = billed
            continue
        aborted.append(call.session_id)
        log.info("cancel.aborted_call", run_id=run_id, session_id=call.session_id)
        if call.sent and daemon is not None:  # (a claimed call's claimant records its own)
            totals[call.session_id] = _totals(daemon.client, call)
            read.append((daemon, call.session_id, call.directory))
        elif call.sent:
            totals[call.session_id] = None  # its turn ended; no daemon to read it from
    with rt.uow() as uow:
        LedgerRepo(uow.session).abort_sent_of(run_id, rt.clock.now(), totals, given_up)
    if not rt.settings.oc_keep_sessions:
        # Recorded with their totals: the ledger keeps what triage needs, and a session
        # the daemon keeps costs it memory (best effort, as after any recorded answer).
        for daemon, session_id, directory in read:
            try:
                daemon.client.delete_session(session_id, directory=directory)
            except OpenCodeError as exc:  # kept for the reconciler to delete again
                if exc.status != 404:
                    _forget_later(rt, session_id, daemon.url or None, directory, str(exc))
    return aborted


def _forget_later(
    rt: Runtime, session_id: str, daemon: str | None, directory: str, reason: str
) -> None:
    """Keep a session whose delete failed for the reconciler's next passes (best effort:
    with the database away too, it stays on the daemon)."""
    try:
        with rt.uow() as uow:
            ForgetRepo(uow.session).remember(session_id, daemon, directory, reason)
    except SQLAlchemyError as exc:
        log.warning("cancel.session_left", session_id=session_id, error=str(exc)[:200])


def _daemon_of(rt: Runtime, url: str | None) -> Daemon | None:
    """The daemon holding the call; None if it is no longer configured (nothing can
    abort its session: its abort is never confirmed)."""
    try:
        return rt.daemons.of(url)
    except UnknownDaemon:
        return None


def _totals(client: AgentClient, call: OpenSession) -> dict[str, Any] | None:
    """The session's totals; None if the daemon cannot say (recorded without)."""
    try:
        session = client.get_session(
            call.session_id, directory=call.directory, timeout_s=BILLED_READ_S
        )
    except OpenCodeError:
        return None
    return usage_of(session)


def abort_late_prompt(rt: Runtime, op_key: str, *, run_cancelled: bool) -> bool:
    """Abort the session of a prompt this worker sent while it no longer held its call:
    it stalled past its step's lease while sending, and the park that followed found
    the run cancelled (``run_cancelled``) or the step taken by a newer delivery.

    In a cancelled run the sweep may have taken the call for an orphan and be aborting
    it, or have recorded it already, before the prompt reached the daemon: no abort of
    the run lists a recorded call again, so the session is aborted here whatever the
    call's status (twice is harmless). Fenced off in a running run, the prompt is
    aborted only if someone else ended the call meanwhile (declared it unknown,
    recorded it): nobody will collect its turn. An open call is the newer delivery's
    to collect. True if an abort was sent and confirmed; never raises (the park has
    committed: what is left is best effort, logged)."""
    try:
        with rt.sessions() as s:
            found = LedgerRepo(s).session_of(op_key)
    except SQLAlchemyError as exc:
        log.warning("cancel.late_prompt_unread", op_key=op_key, error=str(exc)[:200])
        return False
    if found is None:
        return False
    status, call = found
    if not run_cancelled and status in OPEN:
        return False
    daemon = _daemon_of(rt, call.daemon)
    if daemon is None:
        return False
    confirmed = abort_turn(daemon.client, call.session_id, call.directory)
    log.warning(
        "cancel.late_prompt_aborted",
        op_key=op_key,
        session_id=call.session_id,
        status=status,
        confirmed=confirmed,
    )
    return confirmed
