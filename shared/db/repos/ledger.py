"""The provider-call ledger (``app.opencode_calls``), keyed by the unique op_key.

One row per attempt, too (``UNIQUE (run_id, step_id, attempt)``): a claim whose op_key
is new for an attempt already claimed (its prompt or schema changed) is refused with
:class:`AttemptPromptChanged`, so the changed prompt is never sent, never paid twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    ARRAY,
    BigInteger,
    BindParameter,
    Boolean,
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    any_,
    bindparam,
    case,
    exists,
    extract,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import defer

from shared.db import direct
from shared.db.engine import lazy_commit
from shared.db.models import OpenCodeCall, Run, StepRun, bound, table_of
from shared.db.repos.base import PrebuiltRepo
from shared.db.repos.runs import budget_of
from shared.db.repos.steps import park_statement, renewal_at_step
from shared.domain.budget import BudgetExceeded, Estimate
from shared.domain.call_record import ABORT_UNCONFIRMED, AgedRecord, CallRecord, aged
from shared.domain.run_machine import STEP_STATUS, RunStatus
from shared.domain.step_lease import StepLease, assert_held
from shared.domain.step_outcome import RuleRefusal
from shared.domain.turn_spend import OVER_BOUND_MARK
from shared.domain.vocab import NEVER_SENT, NEVER_SENT_ERROR, CallStatus

_CALLS = table_of(OpenCodeCall)
_RUNS = table_of(Run)
_STEPS = table_of(StepRun)
_FITS = ~bindparam("budgeted", type_=Boolean) | (
    (_RUNS.c.budget_usd_micro.is_(None))
    | (
        _RUNS.c.spent_usd_micro + _RUNS.c.reserved_usd_micro + bindparam("call_usd")
        <= _RUNS.c.budget_usd_micro
    )
) & (
    (_RUNS.c.budget_tokens.is_(None))
    | (
        _RUNS.c.spent_tokens + _RUNS.c.reserved_tokens + bindparam("call_tok")
        <= _RUNS.c.budget_tokens
    )
)
"""The call's estimate fits the run's budget: spent + reserved + estimate within each limit."""


def _claim_statement(*, holding: bool) -> Select[Any]:
    """One statement that claims a call and refuses itself, so that it runs alone (no
    transaction to roll a refusal back): the run's row is read locked (``FOR UPDATE``:
    a concurrent writer's version, once committed, is the one read and re-checked, so
    racing reservations serialise and none overshoots) and the call's estimate judged
    against its budget (``fits``); only if it fits is the claim inserted, and only a
    claim inserted (not a replay: its op_key or attempt is taken) reserves the estimate
    on the run, counts a retried attempt (after its round's first) and stamps the
    worktree open on a daemon (see ``shared.service.instances``). Each step reads the
    one before, so they run in that order: the run's row is locked before the call's
    is inserted. Its parameters must not be named like a column of app.runs: the UPDATE
    would SET them.

    ``holding``: the step's lease is renewed first (its row locked before the run's, as
    everywhere), only while the run is at the step's status ``w_expected`` as the
    snapshot shows it (:func:`shared.db.repos.steps.renewal_at_step`); the run is read
    only if it was, and nothing is claimed unless the run, as locked, is still at that
    status. A cancel committed between the two leaves the renewal (the step is abandoned
    either way); the ``status`` returned is the locked one, for the caller's refusal.
    The call's run and step are bound as the lease's ``w_run_id`` and ``w_step_id``
    (named like no column of app.step_runs, whose renewal would SET them). One row:
    ``renewed`` and ``status`` (holding only), ``id`` (NULL when nothing was claimed)
    and ``fits`` (NULL when the run was not read: gone, or the lease not renewed)."""
    run_key, step_key = ("w_run_id", "w_step_id") if holding else ("run_id", "step_id")
    run_id: BindParameter[Any] = bindparam(run_key, type_=String)
    step_id: BindParameter[Any] = bindparam(step_key, type_=String)
    readable: list[ColumnElement[bool]] = [_RUNS.c.id == run_id]
    if holding:
        renewed = renewal_at_step()
        readable.append(exists(select(renewed.c.id)))
    run = (
        select(_RUNS.c.id, _RUNS.c.status, _FITS.label("fits"))
        .where(*readable)
        .with_for_update(of=_RUNS)
        .cte("run")
    )
    claimable: ColumnElement[bool] = run.c.fits
    if holding:  # the run as locked: a cancel committed since the snapshot is seen here
        claimable = and_(claimable, run.c.status == bindparam("w_expected"))
    session: BindParameter[Any] = bindparam("w_session", type_=String)
    claimed = (
        insert(_CALLS)
        .from_select(
            _CLAIMED_COLUMNS,
            select(
                bindparam("op_key", type_=String),
                run.c.id,
                step_id,
                bindparam("attempt", type_=Integer),
                bindparam("agent", type_=String),
                bindparam("request", type_=_CALLS.c.request.type),
                literal(CallStatus.CLAIMED.value),
                # A call whose session was made before its claim records it with the claim.
                session,
                case((session.is_not(None), func.statement_timestamp()), else_=None),
                bindparam("w_daemon", type_=String),
                # Not named like the columns: app.runs has them too, and its UPDATE
                # would SET them.
                bindparam("call_usd", type_=BigInteger),
                bindparam("call_tok", type_=BigInteger),
            ).where(claimable),
            include_defaults=False,
        )
        # No conflict target: a racing twin (same op_key, so the same run, step and
        # attempt) may meet either unique index first; with a target, meeting the other
        # one raised a unique violation instead of yielding to the twin.
        .on_conflict_do_nothing()
        .returning(_CALLS.c.id, _CALLS.c.run_id, _CALLS.c.attempt)
        .cte("claimed")
    )
    # The first attempt of the step's current round (a revision's first call is no retry).
    round_first_attempt = (
        func.coalesce(
            select(_STEPS.c.attempt_base)
            .where(_STEPS.c.run_id == claimed.c.run_id, _STEPS.c.step_id == step_id)
            .scalar_subquery(),
            0,
        )
        + 1
    )
    counted = (
        update(_RUNS)
        .where(_RUNS.c.id == claimed.c.run_id)  # locked by ``run``: its budget as judged
        .values(
            retry_count=_RUNS.c.retry_count
            + case((claimed.c.attempt > round_first_attempt, 1), else_=0),
            reserved_usd_micro=_RUNS.c.reserved_usd_micro + func.coalesce(bindparam("call_usd"), 0),
            reserved_tokens=_RUNS.c.reserved_tokens + func.coalesce(bindparam("call_tok"), 0),
            # The call's daemon opens the run's worktree (now(): the call row's created_at)
            instances_opened_at=func.coalesce(_RUNS.c.instances_opened_at, func.now()),
            # The run's worktree, named by its first call (CompileST's, made in it): a run
            # that ends before CompileST records its outcome (cancelled while its plan is
            # asked for, stopped by its budget) still has it cleaned up.
            worktree_path=func.coalesce(
                _RUNS.c.worktree_path, bindparam("w_worktree", type_=String)
            ),
            instances_release_failed_at=None,  # a failed release is not this rest's
        )
        .returning(_RUNS.c.id)
        .cte("counted")
    )
    claimed_id = select(claimed.c.id).scalar_subquery().label("id")
    fits = select(run.c.fits).scalar_subquery().label("fits")
    if not holding:
        return select(claimed_id, fits).add_cte(counted)
    held = select(func.count()).select_from(renewed).scalar_subquery().label("renewed")
    # The run's status as locked; as the snapshot shows it where it was not read (the
    # lease was not renewed).
    status = func.coalesce(
        select(run.c.status).scalar_subquery(),
        select(_RUNS.c.status).where(_RUNS.c.id == run_id).scalar_subquery(),
    ).label("status")
    return select(held, status, claimed_id, fits).add_cte(counted)


_CLAIMED_COLUMNS = (
    "op_key",
    "run_id",
    "step_id",
    "attempt",
    "agent",
    "request",
    "status",
    "session_id",
    "started_at",
    "daemon",
    "reserved_usd_micro",
    "reserved_tokens",
)


# Hot-path statements are built once: constructing one costs more CPU than running it.
_CLAIM = _claim_statement(holding=False)
_CLAIM_HOLDING = _claim_statement(holding=True)
_ATTEMPT_TAKEN = select(_CALLS.c.id).where(
    _CALLS.c.run_id == bindparam("w_run_id"),
    _CALLS.c.step_id == bindparam("w_step_id"),
    _CALLS.c.attempt == bindparam("attempt"),
)
_BUDGET_OF = select(
    _RUNS.c.budget_usd_micro,
    _RUNS.c.spent_usd_micro,
    _RUNS.c.reserved_usd_micro,
    _RUNS.c.budget_tokens,
    _RUNS.c.spent_tokens,
    _RUNS.c.reserved_tokens,
).where(_RUNS.c.id == bindparam("w_run_id"))
_MARK_STARTED = (
    update(_CALLS)
    # Still claimed: a claim another delivery gave up on meanwhile (:data:`_FINISH_UNSENT`)
    # is never sent.
    .where(_CALLS.c.op_key == bindparam("key"), _CALLS.c.status == CallStatus.CLAIMED.value)
    .values(
        session_id=bindparam("session_id"),
        daemon=bindparam("daemon"),
        started_at=func.statement_timestamp(),
    )
)


def _started_holding() -> Select[int, str | None, int]:
    """:data:`_MARK_STARTED` only while the step's lease holds, in one statement run
    alone: the lease renewed (while the run is at ``w_expected`` as the snapshot shows
    it), then the run's row read locked (``FOR SHARE``: a cancel committing meanwhile is
    waited out and its status read), and the session recorded only if the run, as
    locked, is still at the step's status (and the call still ``claimed``). One row:
    ``renewed``, ``status`` (as locked; as the snapshot shows it where the renewal
    refused) and ``started`` (0: nothing recorded, the prompt must not leave).

    The step made ready to send (ApplyPatchST's worktree reset, which waits up to
    ``quiesce_s`` for an earlier session to go quiet) after its claim: a cancel in that
    while found no session to abort, and the cancelled run's prompt was sent and paid
    (red-team helper-96)."""
    renewed = renewal_at_step()
    run = (
        select(_RUNS.c.status)
        .where(_RUNS.c.id == bindparam("w_run_id"), exists(select(renewed.c.id)))
        .with_for_update(of=_RUNS, read=True)
        .cte("run")
    )
    started = (
        _MARK_STARTED.where(select(run.c.status).scalar_subquery() == bindparam("w_expected"))
        .returning(_CALLS.c.id)
        .cte("started")
    )
    held = select(func.count()).select_from(renewed).scalar_subquery().label("renewed")
    status = func.coalesce(
        select(run.c.status).scalar_subquery(),
        select(_RUNS.c.status).where(_RUNS.c.id == bindparam("w_run_id")).scalar_subquery(),
    ).label("status")
    recorded = select(func.count()).select_from(started).scalar_subquery().label("started")
    return select(held, status, recorded)


_MARK_STARTED_HOLDING = _started_holding()
_MARK_STARTED_ALONE = _MARK_STARTED.returning(_CALLS.c.id)
_MARK_SENT = (
    update(_CALLS)
    .where(_CALLS.c.op_key == bindparam("key"), _CALLS.c.status == CallStatus.CLAIMED.value)
    .values(status=CallStatus.SENT.value)
    .returning(_CALLS.c.id, _CALLS.c.idle_at)
)


def _sent_and_parked() -> Select[int, bool | None, int | None, str | None]:
    """The call marked ``sent`` and its step parked on it, in one statement: ``marked``
    (1, or 0 if the call was not ``claimed``), ``ended`` (the collector's idle mark, read
    with the sent mark), the step row's ``parked`` id (NULL: fenced off) and the run's
    ``status``. Listed first, the mark runs first: the call's row is locked before the
    step's, as when they were two statements. Committed lazily (:func:`lazy_commit`)."""
    sent = _MARK_SENT.cte("sent")
    parked = park_statement("key").cte("parked")
    return select(
        select(func.count()).select_from(sent).scalar_subquery().label("marked"),
        select(func.bool_or(sent.c.idle_at.is_not(None))).scalar_subquery().label("ended"),
        select(parked.c.id).scalar_subquery().label("parked"),
        select(parked.c.run_status).scalar_subquery().label("status"),
        lazy_commit(),
    )


_SENT_AND_PARKED = _sent_and_parked()
_AWAITS = select(_CALLS.c.status, _CALLS.c.idle_at).where(_CALLS.c.op_key == bindparam("key"))


AGED_COLUMNS = (
    "op_key",
    "status",
    "response",
    "usage",
    "error_name",
    "error",
    "rejected",
    "session_id",
    "idle_at",
    "daemon",
)
"""The columns of a ledger row the call protocol reads back (see ``recorded_call``): by
this repository's ``_AGED`` and by the step snapshot's parked call alike."""


_STEP_TASK = (
    select(_STEPS.c.task_id)
    .where(_STEPS.c.run_id == _CALLS.c.run_id, _STEPS.c.step_id == _CALLS.c.step_id)
    .correlate(_CALLS)
    .scalar_subquery()
)
"""The task of the delivery that holds the call's step. It entered the step before it
sent the call, so the statement that wakes the step sees it."""
_WAKE = (
    update(_CALLS)
    .where(
        # = ANY(array): one statement text whatever the batch size; found through
        # ix_opencode_calls_session (migration 0023), never a scan: planned each time
        # (direct.PLANNED_EACH_TIME), as a plan kept from when the table was small scans
        _CALLS.c.session_id == any_(bindparam("sessions", type_=ARRAY(String))),
        # (two comparisons, not IN: an IN list is an expanding parameter, re-rendered
        # per execution, which shared.db.direct refuses)
        or_(_CALLS.c.status == CallStatus.CLAIMED.value, _CALLS.c.status == CallStatus.SENT.value),
        # a daemon's event ends only its own sessions: a session.idle on daemon A's
        # stream had woken daemon B's call of that id (red-team helper-122)
        or_(
            bindparam("daemon", type_=String).is_(None),
            _CALLS.c.daemon == bindparam("daemon", type_=String),
        ),
    )
    .values(idle_at=func.coalesce(_CALLS.c.idle_at, func.statement_timestamp()))
    .returning(_CALLS.c.run_id, _CALLS.c.step_id, _CALLS.c.status, _STEP_TASK, lazy_commit())
    .execution_options(**{direct.PLANNED_EACH_TIME: True})
)
"""The collector's one statement per batch of ended sessions: mark them idle (the flag a
parking step reads after it parks) and name the steps to wake. Committed lazily
(:func:`lazy_commit`): a wake-up lost with Postgres is redone by the collector's
reconcile on reconnect, and a step woken without it asks the daemon whether its session
is busy."""


_NOTE_REJECTED = (
    update(_CALLS)
    .where(
        _CALLS.c.op_key == bindparam("key"),
        _CALLS.c.status == CallStatus.SUCCEEDED.value,
        _CALLS.c.rejected.is_(None),
    )
    .values(rejected=bindparam("reason"))
    .returning(_CALLS.c.id)
)
"""Why a succeeded answer was not used, recorded once (a replay reads it back)."""


class Woken(NamedTuple):
    """A step to send again because its call ended, and the task of the delivery that
    holds the step (which sent the call): the wake-up's parent in Flower."""

    run_id: str
    step_id: str
    parent: str | None


class OpenSession(NamedTuple):
    """A claimed or sent call's session, as a cancel aborts it."""

    session_id: str
    directory: str
    daemon: str | None
    sent: bool
    age_s: float  # since it was sent (or claimed), by the database's clock (CALL_AGE)
    ended: bool  # the collector saw its turn end (session.idle) with no error


_ABORTABLE = and_(
    OpenCodeCall.session_id.is_not(None),
    func.coalesce(OpenCodeCall.request["directory"].as_string(), "") != "",
)
"""A call whose session can be aborted: it was made, in a directory the request names."""

_CLAIMANT_GONE = and_(
    OpenCodeCall.status == CallStatus.CLAIMED.value,
    exists().where(
        _STEPS.c.run_id == OpenCodeCall.run_id,
        _STEPS.c.step_id == OpenCodeCall.step_id,
        or_(
            _STEPS.c.lease_expires_at.is_(None),
            _STEPS.c.lease_expires_at < func.statement_timestamp(),
        ),
    ),
)
"""A claimed call whose claimant is gone: its step's lease lapsed (or was released).
The delivery that claims a call keeps renewing that lease until it parks on the call
or records it (LeaseKeeper), cancelled run or not, and no later delivery enters a
cancelled run's step: nobody else will mark such a call sent or record it."""


def _claimant_may_wake(window_s: float) -> ColumnElement[bool]:
    """A recorded call whose claimant may still send its prompt: the step's delivery never
    released its lease (it had not ended), is not parked on a call (a park aborts a late
    prompt itself), and renewed its lease within ``window_s``.

    One frozen (SIGSTOP, a paused VM, swapped out) after its last read of the row had
    its lease lapse and its call taken by the sweep and recorded aborted as an orphan;
    thawed, its blocking prompt left unchecked (red-team helper-102). Its renewer takes
    the lease again at once, so "lapsed" cannot be the test (helper-106), nor can the
    call's age: frozen for an hour, it woke past any window counted from the claim
    (helper-108). Counted from the lease's last renewal, a dead claimant stops being
    followed ``window_s`` after it died, and a thawed one is followed again at once."""
    lease = _STEPS.c.lease_expires_at
    renewed_since = func.statement_timestamp() - func.make_interval(0, 0, 0, 0, 0, 0, window_s)
    return and_(
        OpenCodeCall.status == CallStatus.ABORTED.value,
        exists().where(
            _STEPS.c.run_id == OpenCodeCall.run_id,
            _STEPS.c.step_id == OpenCodeCall.step_id,
            lease.is_not(None),
            lease > renewed_since,
            _STEPS.c.parked_on.is_(None),
        ),
    )


CALL_AGE = extract(
    "epoch", func.statement_timestamp() - func.coalesce(_CALLS.c.started_at, _CALLS.c.created_at)
)
"""How long ago the call was claimed (or sent), by the database's clock alone: a rule
that compares a time written by one host with another host's clock breaks under skew."""


_AGED = select(*(_CALLS.c[name] for name in AGED_COLUMNS), CALL_AGE.label("age")).where(
    _CALLS.c.op_key == bindparam("key")
)


def recorded_call(row: Mapping[str, Any], age: float) -> AgedRecord:
    """The row (``AGED_COLUMNS``) as the call protocol reads it, and its age if it is
    still live."""
    record = CallRecord(
        op_key=row["op_key"],
        status=row["status"],
        response=row["response"],
        usage=row["usage"],
        error_name=row["error_name"],
        error=row["error"],
        rejected=row["rejected"],
        session_id=row["session_id"],
        woken=row["idle_at"] is not None,
        daemon=row["daemon"],
    )
    return aged(record, age)


_FINISH = (
    update(_CALLS)
    .where(_CALLS.c.op_key == bindparam("key"), _CALLS.c.status == bindparam("from_status"))
    .values(
        **bound("status", "duration_ms", "response", "usage", "error_name", "error"),
        finished_at=bindparam("now"),
    )
    .returning(_CALLS.c.id)
)

_FINISH_UNSENT = (
    update(_CALLS)
    .where(
        _CALLS.c.op_key == bindparam("key"),
        _CALLS.c.status == CallStatus.CLAIMED.value,
        _CALLS.c.session_id.is_(None),
    )
    .values(
        status=CallStatus.FAILED.value,
        **bound("error_name", "error"),
        finished_at=bindparam("now"),
    )
    .returning(_CALLS.c.id)
)


class AttemptPromptChanged(RuleRefusal):
    """An attempt already in the ledger was asked again in other words: refused, unsent."""

    rule = "ledger_attempt_unique"

    def __init__(self, run_id: str, step_id: str, attempt: int, op_key: str) -> None:
        super().__init__(
            f"{self.rule}: run {run_id} {step_id} attempt {attempt} is already in the ledger"
            f" under another prompt; this one (op_key {op_key[:12]}) is refused and not sent."
            " The prompt of an attempt changed between deliveries: a worker of another step"
            " contract, or a prompt built from something that is not recorded"
        )
        self.run_id = run_id
        self.step_id = step_id
        self.attempt = attempt
        self.op_key = op_key


IN_DOUBT = (
    CallStatus.CLAIMED.value,
    CallStatus.SENT.value,
    CallStatus.UNKNOWN.value,
    CallStatus.TIMED_OUT.value,
)
"""Call states whose daemon session may still be working."""
_IN_DOUBT = select(_CALLS.c.session_id, _CALLS.c.daemon).where(
    _CALLS.c.run_id == bindparam("run_id"),
    _CALLS.c.step_id == bindparam("step_id"),
    or_(*(_CALLS.c.status == status for status in IN_DOUBT)),  # no expanding IN: direct
    _CALLS.c.session_id.is_not(None),
)
OPEN = (CallStatus.CLAIMED.value, CallStatus.SENT.value)
"""Call states whose answer is still awaited (a cancel aborts their sessions)."""


@dataclass(frozen=True)
class SentCall:
    """A call awaiting collection, as the collector reconciles it."""

    session_id: str
    directory: str
    run_id: str
    step_id: str
    daemon: str | None
    sent: bool = True  # False: claimed, its prompt perhaps gone, not yet recorded sent


class LedgerRepo(PrebuiltRepo):
    def claim(
        self,
        *,
        op_key: str,
        run_id: str,
        step_id: str,
        attempt: int,
        agent: str,
        request: dict[str, Any],
        estimate: Estimate | None = None,
        session: tuple[str, str | None] | None = None,
        holding: StepLease | None = None,
        worktree: str | None = None,
    ) -> AgedRecord | None:
        """Insert the ``claimed`` row: None if this claim won (call now); else the row
        that holds the op_key and its age (never call: read it). ``session``: the call's
        session (and its daemon), made before the claim: recorded with it, as
        :meth:`mark_started` would after. ``worktree``: the run's worktree the call is
        made in, recorded on the run by a won claim if it names none yet.

        A won claim after its round's first attempt also adds one to ``runs.retry_count``. Raises
        AttemptPromptChanged if the attempt is in the ledger under another op_key, and
        BudgetExceeded if the call's estimate does not fit the run's budget (a replay of
        a claim already made is read back instead: it reserves nothing again).

        ``holding``: the step's lease, renewed by the same statement; StepAbandoned if
        the run moved or a newer delivery holds the step, as
        :func:`shared.service.steps.hold_lease` raises.

        The statement refuses itself (:func:`_claim_statement`): a refused claim, a
        cancelled or fenced-off delivery's or one past the budget, writes nothing, so
        the claim runs alone, outside a transaction, as well as in one.
        """
        params: dict[str, Any] = {
            "op_key": op_key,
            "attempt": attempt,
            "agent": agent,
            "request": request,
            "call_usd": estimate.usd_micro if estimate else None,
            "call_tok": estimate.tokens if estimate else None,
            "budgeted": estimate is not None,
            "w_session": session[0] if session is not None else None,
            "w_daemon": session[1] if session is not None else None,
            "w_worktree": worktree,
        }
        if holding is None:
            params |= {"run_id": run_id, "step_id": step_id}
            row = direct.execute(self.where, _CLAIM, params).one()
        else:
            if (holding.run_id, holding.step.value) != (run_id, step_id):
                raise ValueError(f"a claim of {run_id}/{step_id} under another step's lease")
            params |= {
                "w_run_id": run_id,
                "w_step_id": step_id,
                "w_fence": holding.fence,
                "w_expected": STEP_STATUS[holding.step].value,
                "lease": timedelta(seconds=holding.lease_s),
            }
            row = direct.execute(self.where, _CLAIM_HOLDING, params).one()
            assert_held(holding, row.status, bool(row.renewed))
        if row.id is not None:
            return None
        # A statement of its own (a new snapshot): it sees a twin that committed while
        # the insert waited on it.
        found = self.get_aged(op_key)
        if found is not None:
            return found
        if row.fits is None:  # the run was not read (a held lease's refusal raised above)
            raise LookupError(f"no run {run_id}: no call is claimed on it")
        refused_for_budget = not row.fits and not self._attempt_taken(run_id, step_id, attempt)
        if refused_for_budget and estimate is not None:
            self._refuse(run_id, estimate)
        raise AttemptPromptChanged(run_id, step_id, attempt, op_key)

    def _attempt_taken(self, run_id: str, step_id: str, attempt: int) -> bool:
        """Whether the ledger holds this attempt (under another op_key: the claim's own
        was looked up first): a claim refused for its budget says so before the budget."""
        params = {"w_run_id": run_id, "w_step_id": step_id, "attempt": attempt}
        return direct.execute(self.where, _ATTEMPT_TAKEN, params).first() is not None

    def _refuse(self, run_id: str, estimate: Estimate) -> None:
        """The claim's estimate did not fit (nothing was claimed, nothing is sent): raise
        BudgetExceeded, saying by how much."""
        row = direct.execute(self.where, _BUDGET_OF, {"w_run_id": run_id}).one()
        raise BudgetExceeded(budget_of(row).refusal(estimate))

    def get(self, op_key: str) -> OpenCodeCall | None:
        return self.session.execute(
            select(OpenCodeCall)
            .where(OpenCodeCall.op_key == op_key)
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()

    def get_aged(self, op_key: str) -> AgedRecord | None:
        """What the call protocol reads of the row (never its request: the prompt) and
        its age (seconds since it was claimed or sent) by the database's clock alone,
        in one statement."""
        found = direct.execute(self.where, _AGED, {"key": op_key}).one_or_none()
        return None if found is None else recorded_call(found._asdict(), float(found.age))

    def mark_started(
        self,
        op_key: str,
        session_id: str,
        daemon: str | None = None,
        *,
        holding: StepLease | None = None,
    ) -> bool:
        """The HTTP call is about to leave: record its session, its daemon and (the
        database's) time, only while the call is ``claimed``; False if it is not (another
        delivery gave it up as never sent: it must not be).

        ``holding``: recorded only while the step's lease holds (the run still at the
        step's status, our fence the step's), renewed by the same statement; else
        StepAbandoned and nothing is recorded (:func:`_started_holding`)."""
        params: dict[str, Any] = {"key": op_key, "session_id": session_id, "daemon": daemon}
        if holding is None:
            return direct.execute(self.where, _MARK_STARTED_ALONE, params).first() is not None
        params |= {
            "w_run_id": holding.run_id,
            "w_step_id": holding.step.value,
            "w_fence": holding.fence,
            "w_expected": STEP_STATUS[holding.step].value,
            "lease": timedelta(seconds=holding.lease_s),
        }
        row = direct.execute(self.where, _MARK_STARTED_HOLDING, params).one()
        assert_held(holding, row.status, bool(row.renewed))
        return bool(row.started)

    def mark_sent(self, op_key: str) -> bool:
        """The daemon took the prompt (prompt_async): ``claimed`` becomes ``sent``."""
        return direct.execute(self.where, _MARK_SENT, {"key": op_key}).first() is not None

    def mark_sent_and_park(
        self, lease: StepLease, *, op_key: str, hold_s: float, work_ms: int
    ) -> tuple[bool | None, str | None]:
        """Mark the call ``sent`` and park ``lease``'s step on it (as
        :meth:`mark_sent`, then ``StepRunRepo.park``), in one statement: (whether a
        collector had already seen the call's session end, None if the call was not
        ``claimed`` and nothing was marked; the run's status once parked, None if a
        newer delivery fenced us off).

        The end is read with the mark, what :meth:`awaits_collection` would read after
        it in the same transaction: the UPDATE reads the call's row as its last writer
        left it and holds its lock until commit, so a collector's idle mark (an UPDATE
        of the same row) is either seen here or made after the commit, when the
        collector finds the call ``sent`` and wakes the step itself."""
        params = {
            "key": op_key,
            "w_run_id": lease.run_id,
            "w_step_id": lease.step.value,
            "w_fence": lease.fence,
            "lease": timedelta(seconds=hold_s),
            "work_ms": work_ms,
        }
        row = direct.execute(self.where, _SENT_AND_PARKED, params).one()
        ended = bool(row.ended) if row.marked else None
        return ended, None if row.parked is None else str(row.status)

    def wake(self, session_ids: list[str], daemon: str | None = None) -> list[Woken]:
        """Mark the calls of these ended sessions idle (those of ``daemon``, whose event
        said so; None: of any daemon); the steps of the sent ones (a step parked on each)."""
        if not session_ids:
            return []
        params = {"sessions": session_ids, "daemon": daemon}
        rows = direct.execute(self.where, _WAKE, params).all()
        # A call still ``claimed`` ended before its sender marked it sent: the sender
        # reads the mark when it parks and wakes its own step (its lease is still held).
        return sorted(
            {
                Woken(run_id, step_id, parent)
                for run_id, step_id, status, parent, _lazy in rows
                if status == CallStatus.SENT
            }
        )

    def wake_with_error(
        self, session_id: str, error: str, daemon: str | None = None
    ) -> list[Woken]:
        """As :meth:`wake` for one session that ended with ``session.error``, keeping the
        daemon's error on the row (the collecting step quotes it; the outcome replaces it)."""
        of_daemon = [] if daemon is None else [OpenCodeCall.daemon == daemon]
        rows = self.session.execute(
            update(OpenCodeCall)
            .where(OpenCodeCall.session_id == session_id, OpenCodeCall.status.in_(OPEN), *of_daemon)
            .values(
                idle_at=func.coalesce(OpenCodeCall.idle_at, func.statement_timestamp()),
                # a turn aborted for passing its token bound keeps that as its reason
                error=case(
                    (
                        OpenCodeCall.error.startswith(OVER_BOUND_MARK, autoescape=True),
                        OpenCodeCall.error,
                    ),
                    else_=error,
                ),
            )
            .returning(_CALLS.c.run_id, _CALLS.c.step_id, _CALLS.c.status, _STEP_TASK)
        ).all()
        return sorted(
            {
                Woken(run_id, step_id, parent)
                for run_id, step_id, status, parent in rows
                if status == CallStatus.SENT
            }
        )

    def mark_over_bound(self, session_id: str, error: str, daemon: str) -> list[str]:
        """Keep ``error`` (shared.domain.turn_spend) on ``daemon``'s open call of
        ``session_id`` (sent, or claimed with its prompt perhaps gone), whatever the
        daemon said of it meanwhile; the directories of the calls so marked (each time:
        the abort is asked again). A turn that ended with an answer is judged by it; the
        mark names why one that did not stopped."""
        rows = self.session.execute(
            update(OpenCodeCall)
            .where(
                OpenCodeCall.session_id == session_id,
                # claimed too: the prompt may have left before it was recorded sent
                OpenCodeCall.status.in_(OPEN),
                OpenCodeCall.daemon == daemon,
            )
            .values(
                # the first mark stays; it outranks an error the daemon said meanwhile
                # (a session.error mid-turn must not disarm the bound)
                error=case(
                    (
                        OpenCodeCall.error.startswith(OVER_BOUND_MARK, autoescape=True),
                        OpenCodeCall.error,
                    ),
                    else_=error,
                )
            )
            .returning(OpenCodeCall.request["directory"].as_string())
        ).all()
        return [directory for (directory,) in rows if directory]

    def sent_calls(self, daemon: str | None = None, *, claimed: bool = False) -> list[SentCall]:
        """Every call awaiting collection (of ``daemon``, or of any daemon); with
        ``claimed``, also those whose prompt may have left but is not recorded sent yet
        (a session is named)."""
        wanted = (
            (CallStatus.SENT.value, CallStatus.CLAIMED.value)
            if claimed
            else (CallStatus.SENT.value,)
        )
        query = select(
            OpenCodeCall.session_id,
            OpenCodeCall.request["directory"].as_string(),
            OpenCodeCall.run_id,
            OpenCodeCall.step_id,
            OpenCodeCall.daemon,
            OpenCodeCall.status,
        ).where(OpenCodeCall.status.in_(wanted))
        if daemon is not None:
            query = query.where(OpenCodeCall.daemon == daemon)
        return [
            SentCall(sid, directory, run_id, step_id, where, status == CallStatus.SENT)
            for sid, directory, run_id, step_id, where, status in self.session.execute(query)
            if sid and directory
        ]

    def cancelled_runs_with_open_calls(self, limit: int = 100) -> list[str]:
        """Cancelled runs that still hold a ``sent`` or ``claimed`` call with a session,
        or a claimed one without, whose claimant is gone: a cancel whose abort missed it
        (the prompt was sent after the abort, the abort's message was lost), left it to
        a claimant that died before recording it sent (:meth:`take_orphaned_claims`),
        or before its session was made (:meth:`give_up_unsent_of`)."""
        query = (
            select(OpenCodeCall.run_id)
            .join(Run, Run.id == OpenCodeCall.run_id)
            .where(
                Run.status == RunStatus.CANCELLED.value,
                or_(
                    # what open_sessions_of lists: a run found here is aborted there. A
                    # live claimant's call too: with blocking calls (OC_ASYNC=0) a prompt
                    # sent after the cancel's abort found its session idle ran to its end
                    # (red-team helper-100); each pass aborts it again until recorded
                    and_(OpenCodeCall.status.in_(OPEN), _ABORTABLE),
                    # what give_up_unsent_of ends
                    and_(_CLAIMANT_GONE, OpenCodeCall.session_id.is_(None)),
                ),
            )
            .group_by(OpenCodeCall.run_id)
            # oldest first: a run whose abort is never confirmed leaves the set once its
            # calls are given up (OpenSession.age_s), so later cancels are reached
            .order_by(func.max(CALL_AGE).desc(), OpenCodeCall.run_id)
            .limit(limit)
        )
        return [str(run_id) for run_id in self.session.execute(query).scalars()]

    def runs_with_waking_claimants(
        self, window_s: float, limit: int = 100, *, after: str = ""
    ) -> list[str]:
        """Cancelled runs holding a recorded call whose claimant may still wake and send its
        prompt (its lease renewed within ``window_s``, the call's deadline and abort window)
        (:func:`_claimant_may_wake`): each pass aborts its session again, until the
        claimant ends its delivery (its lease released) or the window closes. ``limit``
        of them, by run id from past ``after`` round to the first: a caller passing the
        last one it took reaches every run in turn (a run stays listed for its whole
        window, so a fixed first ``limit`` starved the rest: red-team helper-106)."""
        waking = (
            select(OpenCodeCall.run_id)
            .join(Run, Run.id == OpenCodeCall.run_id)
            .where(
                Run.status == RunStatus.CANCELLED.value,
                _claimant_may_wake(window_s),
                _ABORTABLE,
            )
            .group_by(OpenCodeCall.run_id)
        )
        later = waking.having(OpenCodeCall.run_id > after).order_by(OpenCodeCall.run_id)
        runs = [str(r) for r in self.session.execute(later.limit(limit)).scalars()]
        if len(runs) < limit and after:  # round to the first
            first = waking.having(OpenCodeCall.run_id <= after).order_by(OpenCodeCall.run_id)
            runs += [str(r) for r in self.session.execute(first.limit(limit - len(runs))).scalars()]
        return runs

    def waking_sessions_of(self, run_id: str, window_s: float) -> list[OpenSession]:
        """The sessions :meth:`runs_with_waking_claimants` found for ``run_id``."""
        rows = self.session.execute(
            select(
                OpenCodeCall.session_id,
                OpenCodeCall.request["directory"].as_string(),
                OpenCodeCall.daemon,
                CALL_AGE,
            ).where(
                OpenCodeCall.run_id == run_id,
                _claimant_may_wake(window_s),
                _ABORTABLE,
            )
        ).all()
        return [
            OpenSession(sid, directory, daemon, True, float(age), False)
            for sid, directory, daemon, age in rows
            if sid is not None and directory
        ]

    def take_orphaned_claims(self, run_id: str) -> int:
        """Mark ``sent`` the cancelled run's claimed calls whose claimant is gone (its
        step's lease lapsed) and whose session was made: their prompt may be at the
        daemon, and nobody else will record them, so the cancel's abort records them as
        it does sent calls. A claimant that was only stalled aborts its session itself
        once its park finds the run cancelled or its step taken (``_park``). Returns
        how many were taken."""
        taken = self.session.execute(
            update(OpenCodeCall)
            .where(
                OpenCodeCall.run_id == run_id,
                _CLAIMANT_GONE,
                _ABORTABLE,
                exists().where(Run.id == run_id, Run.status == RunStatus.CANCELLED.value),
            )
            .values(status=CallStatus.SENT.value)
            .returning(OpenCodeCall.id)
        )
        return len(taken.all())

    def give_up_unsent_of(self, run_id: str, now: datetime) -> int:
        """Record ``failed`` / NeverSent, at no cost, the cancelled run's claimed calls
        whose claimant is gone before their session was made: every prompt leaves only
        after its session is recorded on its still-claimed row, so these never left. No
        later delivery enters a cancelled run's step to give them up (as
        ``ExactlyOnceCalls`` does an overdue one), so they held their reservation for
        good (red-team helper-100). Returns how many."""
        given_up = self.session.execute(
            update(OpenCodeCall)
            .where(
                OpenCodeCall.run_id == run_id,
                _CLAIMANT_GONE,
                OpenCodeCall.session_id.is_(None),
                exists().where(Run.id == run_id, Run.status == RunStatus.CANCELLED.value),
            )
            .values(
                status=CallStatus.FAILED.value,
                error_name=NEVER_SENT,
                error=NEVER_SENT_ERROR,
                finished_at=now,
            )
            .returning(OpenCodeCall.id)
        )
        return len(given_up.all())

    def awaits_collection(self, op_key: str) -> bool:
        """True while the call is ``claimed`` or ``sent`` and no collector has seen its
        session end (before or after it was marked sent)."""
        found = direct.execute(self.where, _AWAITS, {"key": op_key}).first()
        return found is not None and found.status in OPEN and found.idle_at is None

    def note_rejected(self, op_key: str, reason: str) -> bool:
        """Record why a succeeded answer was not used (once; a replay reads it back)."""
        done = direct.execute(self.where, _NOTE_REJECTED, {"key": op_key, "reason": reason})
        return done.first() is not None

    def finish(
        self,
        op_key: str,
        *,
        status: CallStatus,
        now: datetime,
        duration_ms: int | None,
        response: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
        error_name: str | None = None,
        error: str | None = None,
        from_status: CallStatus = CallStatus.CLAIMED,
    ) -> bool:
        """Record the outcome if the row is still ``from_status``; False if it is not.

        Only the claimant finishes a ``claimed`` row; a row another delivery declared
        ``unknown`` meanwhile is finished ``from_status=UNKNOWN`` with a late status.
        """
        done = direct.execute(
            self.where,
            _FINISH,
            {
                "key": op_key,
                "from_status": from_status.value,
                "status": status.value,
                "now": now,
                "duration_ms": duration_ms,
                "response": response,
                "usage": usage,
                "error_name": error_name,
                "error": error,
            },
        ).scalar_one_or_none()
        return done is not None

    def finish_unsent(self, op_key: str, *, now: datetime, error_name: str, error: str) -> bool:
        """Record a ``claimed`` call that has no session ``failed``, with no usage; False
        if it is not such a call (finished, or its session recorded meanwhile).

        Every prompt leaves only after its session is recorded on its still-claimed row
        (with the claim, or :meth:`mark_started`): a claim without one was never sent,
        so it settles at nothing and its reservation is released, where ``unknown``
        held it for good."""
        params = {"key": op_key, "now": now, "error_name": error_name, "error": error}
        return direct.execute(self.where, _FINISH_UNSENT, params).first() is not None

    def for_run(self, run_id: str) -> list[OpenCodeCall]:
        """The run's calls without their request and response bodies (each may be
        megabytes; the pages and ``/calls`` show neither): reading one raises."""
        return list(
            self.session.execute(
                select(OpenCodeCall)
                .where(OpenCodeCall.run_id == run_id)
                .order_by(OpenCodeCall.id)
                .options(
                    defer(OpenCodeCall.request, raiseload=True),
                    defer(OpenCodeCall.response, raiseload=True),
                )
            ).scalars()
        )

    def open_sessions_of(self, run_id: str) -> list[OpenSession]:
        """The run's calls still claimed (or sent) whose session was made."""
        rows = self.session.execute(
            select(
                OpenCodeCall.session_id,
                OpenCodeCall.request["directory"].as_string(),
                OpenCodeCall.daemon,
                OpenCodeCall.status == CallStatus.SENT.value,
                CALL_AGE,
                and_(OpenCodeCall.idle_at.is_not(None), OpenCodeCall.error.is_(None)),
            ).where(OpenCodeCall.run_id == run_id, OpenCodeCall.status.in_(OPEN), _ABORTABLE)
        ).all()
        return [
            OpenSession(sid, directory, daemon, bool(sent), float(age), bool(ended))
            for sid, directory, daemon, sent, age, ended in rows
            if sid is not None and directory
        ]

    def session_of(self, op_key: str) -> tuple[str, OpenSession] | None:
        """The call's status and session (as :meth:`open_sessions_of` lists one),
        whatever its status; None without a session to abort."""
        row = self.session.execute(
            select(
                OpenCodeCall.status,
                OpenCodeCall.session_id,
                OpenCodeCall.request["directory"].as_string(),
                OpenCodeCall.daemon,
                CALL_AGE,
                and_(OpenCodeCall.idle_at.is_not(None), OpenCodeCall.error.is_(None)),
            ).where(OpenCodeCall.op_key == op_key, _ABORTABLE)
        ).first()
        if row is None:
            return None
        status, sid, directory, daemon, age, ended = row
        sent = status == CallStatus.SENT.value
        return str(status), OpenSession(sid, directory, daemon, sent, float(age), bool(ended))

    def fail_sent_at(self, daemon: str, now: datetime, error: str) -> list[Woken]:
        """Record every sent call of ``daemon`` failed (``DaemonLost``); their steps."""
        ended = self._end_sent(
            OpenCodeCall.daemon == daemon, CallStatus.FAILED, now, "DaemonLost", error
        )
        return sorted(set(ended))

    def abort_sent_of(
        self,
        run_id: str,
        now: datetime,
        aborted: Mapping[str, dict[str, Any] | None],
        given_up: Mapping[str, dict[str, Any] | None],
    ) -> int:
        """Record the run's sent calls ``aborted`` (its cancel aborted their sessions):
        no answer of a cancelled run is collected. ``aborted``: the sessions whose abort
        the daemon confirmed, each with its totals read after the abort (None if they
        could not be read), recorded as its call's usage (the settle spends at least the
        call's reservation: the step it was cut in is not in them). ``given_up``: the
        sessions whose abort was never confirmed within their window, with what their
        totals said then, recorded so, since their turn may still be running. Any
        other sent call stays sent for the next abort (the reconciler's sweep): one whose
        abort failed within its window, or whose prompt reached the daemon after the
        abort, which missed it."""
        said = "the run was cancelled while the call was in flight; its session was aborted"
        ended = 0
        unconfirmed = f"the run was cancelled while the call was in flight; {ABORT_UNCONFIRMED}"
        for sessions, error in ((aborted, said), (given_up, unconfirmed)):
            for session_id, usage in sessions.items():
                one = and_(OpenCodeCall.run_id == run_id, OpenCodeCall.session_id == session_id)
                ended += len(
                    self._end_sent(one, CallStatus.ABORTED, now, "RunCancelled", error, usage)
                )
        return ended

    def _end_sent(
        self,
        which: ColumnElement[bool],
        status: CallStatus,
        now: datetime,
        error_name: str,
        error: str,
        usage: dict[str, Any] | None = None,
    ) -> list[Woken]:
        """End the sent calls ``which`` selects with ``status`` (and ``usage``); their steps."""
        rows = self.session.execute(
            update(OpenCodeCall)
            .where(which, OpenCodeCall.status == CallStatus.SENT.value)
            .values(
                status=status.value,
                finished_at=now,
                error_name=error_name,
                error=error,
                usage=usage,
            )
            .returning(_CALLS.c.run_id, _CALLS.c.step_id, _STEP_TASK)
        ).all()
        return [Woken(run_id, step_id, parent) for run_id, step_id, parent in rows]

    def sessions_in_doubt(self, run_id: str, step_id: str) -> list[tuple[str, str | None]]:
        """(session id, daemon) of the step's calls that may still be running at their
        daemon: claimed by another delivery, sent, declared unknown, or timed out (the
        abort may have failed). A worktree is never reset while one of them is busy."""
        rows = direct.execute(self.where, _IN_DOUBT, {"run_id": run_id, "step_id": step_id})
        return [(sid, daemon) for sid, daemon in rows.all() if sid]
