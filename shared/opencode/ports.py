"""The ports of the agent side: what the call protocol needs from the daemon and the ledger,
and what a step needs from the call protocol.

Adapters: the daemon is :class:`shared.opencode.client.OpenCodeClient` (httpx) or the
in-memory fake (tests/fakes/agent.py); the ledger is
:class:`shared.opencode.call_ledger.PostgresCallLedger` or the in-memory one
(tests/fakes/ledger.py). Nothing here imports a transport or a driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, Self

from shared.domain.call_record import AgedRecord, StepLedger
from shared.domain.step_lease import StepLease
from shared.domain.vocab import CallStatus
from shared.opencode.calls import (
    CallOutcome,
    StructuredCall,
    StructuredResult,
    UnrecordedAnswers,
)
from shared.opencode.errors import OpenCodeError
from shared.opencode.events import OcEvent
from shared.opencode.messages import ModelRef, PromptReply


class EventStream(Protocol):
    """An open ``/event`` or ``/global/event`` stream of the daemon; close it.

    Iterating yields the events that parse; the others are counted in ``skipped`` by
    reason. It ends when the daemon ends the stream, and raises OpenCodeTimeout after
    a silence longer than its read timeout or OpenCodeTransientError if it breaks.
    """

    @property
    def skipped(self) -> Mapping[str, int]: ...

    def __iter__(self) -> Iterator[OcEvent]: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *_exc: object) -> None: ...

    def close(self) -> None: ...


class AgentClient(Protocol):
    """The OpenCode daemon, as the call protocol and the worker use it.

    Every method raises an :class:`~shared.opencode.errors.OpenCodeError` on failure.
    """

    def health(self, *, timeout_s: float = 2.0) -> dict[str, Any]: ...

    def create_session(
        self, *, directory: str, title: str, permission: list[dict[str, str]] | None = None
    ) -> dict[str, Any]: ...

    def prompt(
        self,
        session_id: str,
        *,
        directory: str,
        agent: str,
        model: ModelRef,
        text: str,
        tools: dict[str, bool],
        format: dict[str, Any] | None,
        system: str | None = None,
        timeout_s: float | None = None,
        message_id: str | None = None,
    ) -> PromptReply:
        """Send one turn and block until it ends; the reply is its last message."""
        ...

    def prompt_async(
        self,
        session_id: str,
        *,
        directory: str,
        agent: str,
        model: ModelRef,
        text: str,
        tools: dict[str, bool],
        format: dict[str, Any] | None,
        system: str | None = None,
        message_id: str | None = None,
    ) -> None:
        """Start one turn and return at once; its end is told by :meth:`events` and
        :meth:`busy_sessions`, its answer by :meth:`last_message`."""
        ...

    def diagnose(
        self, error: OpenCodeError, *, directory: str, agent: str, model: ModelRef
    ) -> OpenCodeError:
        """``error`` as a configuration error if the daemon lacks ``agent`` or ``model``
        (it may answer those with a generic 500, or an unanswered sent turn)."""
        ...

    def last_message(self, session_id: str, *, directory: str) -> PromptReply | None:
        """The session's newest message, unjudged; None if it has none."""
        ...

    def events(
        self,
        *,
        directory: str | None = None,
        timeout_s: float,
        only: frozenset[str] | None = None,
    ) -> EventStream:
        """The directory's events, or every directory's (``None``), each naming it;
        ``only``: just the events of these types."""
        ...

    def get_session(
        self, session_id: str, *, directory: str, timeout_s: float | None = None
    ) -> dict[str, Any]: ...

    def delete_session(self, session_id: str, *, directory: str) -> bool: ...

    def session_children(self, session_id: str, *, directory: str) -> list[dict[str, Any]]: ...

    def earlier_turn_messages(
        self,
        session_id: str,
        *,
        directory: str,
        prompt_id: str | None = None,
        reply_id: str | None = None,
        max_steps: int = 50,
    ) -> list[dict[str, Any]]: ...

    def abort(self, session_id: str, *, directory: str, timeout_s: float | None = None) -> bool: ...

    def busy_sessions(self, *, directory: str, timeout_s: float | None = None) -> dict[str, Any]:
        """``GET /session/status``: the directory's sessions that are not idle."""
        ...

    def dispose_instance(self, *, directory: str, timeout_s: float | None = None) -> bool:
        """``POST /instance/dispose``: release what the daemon holds open for ``directory``."""
        ...

    def close(self) -> None: ...


class CallLedger(Protocol):
    """The provider-call ledger, keyed by op_key; each method is one transaction."""

    def claim(
        self,
        call: StructuredCall,
        request: dict[str, Any],
        *,
        lease: StepLease | None,
        session: tuple[str, str | None] | None = None,
    ) -> bool:
        """Insert the ``claimed`` row; False if the op_key was claimed before.

        With ``lease``, the step's lease is held in the same transaction (raising
        StepAbandoned and claiming nothing if the delivery was cancelled or fenced off).
        ``session``: (session id, daemon) of a session made before the claim, recorded
        with it (no :meth:`mark_started` follows).
        """
        ...

    def claim_or_read(
        self,
        call: StructuredCall,
        request: dict[str, Any],
        *,
        lease: StepLease | None,
        session: tuple[str, str | None] | None = None,
    ) -> tuple[bool, AgedRecord | None]:
        """:meth:`claim`, and when the claim is lost, :meth:`read` in the same
        transaction (one round trip for a replayed or resumed call)."""
        ...

    def mark_started(
        self,
        op_key: str,
        session_id: str,
        daemon: str | None = None,
        *,
        lease: StepLease | None = None,
    ) -> bool:
        """The call's session was made (at ``daemon``); its prompt is about to leave.
        Recorded only while the call is still ``claimed``: False if another delivery
        gave it up meanwhile (:meth:`finish_unsent`), and the prompt never leaves.

        With ``lease``, recorded only while the step's lease holds (the run still at
        the step's status: not cancelled since the claim), renewed in the same
        statement; else StepAbandoned and nothing is recorded: the prompt never leaves.
        """
        ...

    def mark_sent(self, op_key: str) -> bool:
        """The daemon took the prompt (prompt_async): ``claimed`` becomes ``sent``."""
        ...

    def awaits_collection(self, op_key: str) -> bool:
        """The call is still ``claimed`` or ``sent`` and no wake-up was recorded for it."""
        ...

    def sessions_in_doubt(self, run_id: str, step_id: str) -> list[tuple[str, str | None]]:
        """(session id, daemon) of the step's calls that may still be running."""
        ...

    def note_rejected(self, op_key: str, reason: str) -> None:
        """Record why the succeeded answer of ``op_key`` was not used."""
        ...

    def read(self, op_key: str) -> AgedRecord | None:
        """The row and the seconds since it was claimed or sent, by the ledger's clock
        (0.0 for a row that is neither claimed nor sent)."""
        ...

    def finish(
        self, op_key: str, outcome: CallOutcome, *, from_status: CallStatus = CallStatus.CLAIMED
    ) -> bool:
        """Record ``outcome`` if the row is still ``from_status``; False if it is not."""
        ...

    def finish_unsent(self, op_key: str, outcome: CallOutcome) -> bool:
        """Record ``outcome`` (failed, its error) on a ``claimed`` call with no session
        recorded: one whose prompt never left (every prompt leaves after its session is
        recorded). False if the call is not that (finished, or started meanwhile)."""
        ...

    def forget_later(
        self, session_id: str, daemon: str | None, directory: str, reason: str
    ) -> None:
        """Keep a session whose delete failed, for the reconciler to delete again. Never
        raises: a session left on a daemon costs memory, never correctness."""
        ...


class StructuredCalls(Protocol):
    """What a step needs: one schema-valid answer per call, paid for at most once."""

    def prompt_structured(
        self,
        call: StructuredCall,
        *,
        lease: StepLease | None = None,
        prepare: Callable[[], None] | None = None,
        seen: StepLedger | None = None,
        unrecorded: UnrecordedAnswers | None = None,
    ) -> StructuredResult:
        """``prepare`` runs only when this delivery is about to send the call (the claim
        is won), before the session is made; an OpenCodeError it raises fails the call.
        ``seen``: what the step's delivery read of its calls with its lease;
        ``unrecorded``: where a collected answer waits to be recorded with the step's
        outcome (see ExactlyOnceCalls.prompt_structured)."""
        ...

    def flush(self, unrecorded: UnrecordedAnswers) -> None:
        """Record the answers waiting in ``unrecorded`` now (CallSuperseded: another
        delivery recorded one first)."""
        ...

    def reject(self, op_key: str, reason: str) -> None:
        """The step did not use this answer, for ``reason``: a replay reads it back."""
        ...

    def quiesce(self, run_id: str, step_id: str, directory: str) -> None:
        """Return once no earlier call of the step is running on ``directory``; abort
        what is; raise WorktreeBusy if one stays busy."""
        ...

    def close(self) -> None: ...
