"""What can go wrong talking to OpenCode, sorted by what the caller should do next.

Transient errors may succeed on retry; permanent ones will not. Each class has a
stable ``code`` for ledgers and logs. The daemon reports most model failures
inside ``info.error`` of an HTTP 200 reply, so :func:`classify_info_error` maps
that object onto the same tree as the HTTP-level failures.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from shared.opencode.messages import PromptReply

CONFIG_HINT = "check OC_PROVIDER_ID/OC_MODEL_ID and the agent name"
"""Said with every configuration error diagnosed from an HTTP 500 (see diagnosis.py)."""


class OpenCodeError(Exception):
    """Any failure of an OpenCode call; ``reply`` is set when the daemon did answer."""

    code: ClassVar[str] = "opencode_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        name: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.name = name
        self.data: dict[str, Any] = data or {}
        self.reply: PromptReply | None = None


class OpenCodeTransientError(OpenCodeError):
    """Worth retrying: the daemon or the model is busy, unreachable or was stopped."""

    code = "opencode_transient"


class WorktreeBusy(OpenCodeTransientError):
    """An earlier call of the step may still be editing the worktree, so it is not reset
    and nothing is sent (rule ``worktree_quiet``); the next attempt waits and looks again."""

    code = "worktree_busy"


class OpenCodeUnreachable(OpenCodeTransientError):
    """The request never reached the daemon (connect failed), so nothing was billed."""

    code = "opencode_unreachable"


class OpenCodeServerError(OpenCodeTransientError):
    """HTTP 500: the daemon failed inside. Transient unless :mod:`shared.opencode.diagnosis`
    proves it is an unknown agent or model (the daemon answers both with this same 500)."""

    code = "opencode_server_error"


class OpenCodeTimeout(OpenCodeTransientError):
    """No answer in time; the daemon may still be working (abort the session)."""

    code = "opencode_timeout"


class OpenCodeAborted(OpenCodeTransientError):
    """The turn was aborted (``MessageAbortedError``)."""

    code = "opencode_aborted"


class OpenCodePermanentError(OpenCodeError):
    """Retrying the same request will fail the same way."""

    code = "opencode_permanent"


class OpenCodeConfigError(OpenCodePermanentError):
    """kodo's configuration does not match the daemon (model, agent, credentials)."""

    code = "opencode_config"


class StructuredOutputMissing(OpenCodePermanentError):
    """The model answered in prose instead of calling the StructuredOutput tool."""

    code = "structured_output_missing"


_PERMANENT_NAMES = frozenset(
    {
        "ProviderAuthError",
        "ContextOverflowError",
        "MessageOutputLengthError",
        "ContentFilterError",
        "UnknownError",
    }
)


def _message(name: str, data: dict[str, Any]) -> str:
    detail = data.get("message")
    return f"{name}: {detail}" if isinstance(detail, str) and detail else name


class DaemonLost(OpenCodeUnreachable):
    """The daemon holding a sent call stayed unreachable past OC_DAEMON_LOST_S: the
    collector recorded the call failed (it may have been billed) so the step's next
    attempt goes to a daemon that answers."""


class TurnUnanswered(OpenCodeTransientError):
    """A sent turn ended (its session idle or errored) without an assistant answer: the
    daemon failed inside the turn, or refused it before it began (an unknown agent or
    model is a 204 to ``prompt_async``, then a ``session.error`` event only; diagnosed
    as a configuration error). A provider failure: retried with backoff."""


class TurnLost(OpenCodeTransientError):
    """The prompt left, then the connection broke without an answer (the daemon died, or
    the network between): the model may have run a step no totals count, so the call
    spends at least its reservation (migration 0027). Retried like any transient
    failure. A status the daemon answered with (a 500 it reports, a proxy's 503) is
    the daemon's own account and keeps its name."""

    code = "opencode_turn_lost"

    @classmethod
    def after(cls, exc: OpenCodeError) -> OpenCodeError:
        """``exc`` raised while sending a prompt, as the ledger should name it: TurnLost
        for a connection broken without a status; ``exc`` itself otherwise."""
        if type(exc) is OpenCodeTransientError and exc.status is None:
            lost = cls(f"the prompt left, then: {exc}", name=exc.name)
            lost.reply = exc.reply
            return lost
        return exc


class SessionLost(OpenCodeTransientError):
    """The daemon no longer knows a sent call's session (it restarted, losing its state):
    the answer cannot be collected; the next attempt asks again."""


def classify_info_error(info: dict[str, Any]) -> OpenCodeError | None:
    """Map an assistant message's ``info.error`` to an exception; ``None`` if absent.

    An error that is present but unrecognised or malformed is permanent (fail closed).
    """
    raw = info.get("error")
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        return OpenCodePermanentError(f"malformed info.error: {raw!r:.200}")
    name: str = raw["name"]
    data_raw = raw.get("data")
    data: dict[str, Any] = data_raw if isinstance(data_raw, dict) else {}
    message = _message(name, data)
    status = data.get("statusCode") if isinstance(data.get("statusCode"), int) else None
    if name == "MessageAbortedError":
        return OpenCodeAborted(message, status=status, name=name, data=data)
    if name == "StructuredOutputError":
        return StructuredOutputMissing(message, status=status, name=name, data=data)
    if name == "APIError":
        if data.get("isRetryable") is True:
            return OpenCodeTransientError(message, status=status, name=name, data=data)
        return OpenCodePermanentError(message, status=status, name=name, data=data)
    if name in _PERMANENT_NAMES:
        return OpenCodePermanentError(message, status=status, name=name, data=data)
    return OpenCodePermanentError(f"unrecognised {message}", status=status, name=name, data=data)


def classify_http_error(status: int, body: object) -> OpenCodeError:
    """Map a non-2xx answer (``body`` is parsed JSON, or the raw text) to an exception."""
    name: str | None = None
    data: dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("name"), str):
        name = body["name"]
        if isinstance(body.get("data"), dict):
            data = body["data"]
    detail = _message(name, data) if name else f"{str(body)[:200]!r}"
    message = f"HTTP {status} {detail}"
    if status in (401, 403):
        return OpenCodeConfigError(
            f"{message}: check OC_USERNAME/OC_PASSWORD", status=status, name=name, data=data
        )
    if status == 429 or status in (502, 503, 504):
        return OpenCodeTransientError(message, status=status, name=name, data=data)
    if status == 500:
        return OpenCodeServerError(message, status=status, name=name, data=data)
    return OpenCodePermanentError(message, status=status, name=name, data=data)


FORMAT_400 = re.compile(
    r"Expected OutputFormat\w*, got .* at \[0\](\[\"info\"\]\[\"format\"\]|\.info\.format)",
    re.DOTALL,
)
"""The daemon's 400 for a page of messages whose oldest is a user message sent with a
``format`` (API notes 5.1; 1.18.33 says ``Expected OutputFormatJsonSchema, got {...} at
[0]["info"]["format"]``), matched whole on its ``BadRequest`` message. 1.18.33 checks
only a page that reaches the session's first message (one with no older message
behind it), and kodo's prompt is that first message, so the page has it oldest. Any
other 400 (one quoting a model's text, or naming a message inside the page) is no sign
of the turn's start."""


def is_format_400(exc: OpenCodeError) -> bool:
    """Whether ``exc`` is the daemon's :data:`FORMAT_400`, which marks the turn's own
    user message (and nothing else: a listing's other 400s are turns kodo cannot read)."""
    said = exc.data.get("message")
    return (
        exc.status == 400
        and exc.name == "BadRequest"
        and isinstance(said, str)
        and FORMAT_400.fullmatch(said) is not None
    )
