"""One log format for every process: JSON lines that carry the ids of what is running.

structlog and the stdlib ``logging`` module (Celery, SQLAlchemy, gunicorn's app logs)
share one handler on the root logger's stream, so a line is JSON whoever wrote it.
Context bound with :func:`structlog.contextvars.bind_contextvars` (the step runner
binds ``run_id`` and ``step_id``) is merged into every line, stdlib ones included: a
triager greps one run's lines across API and workers.

kodo's own structlog lines are rendered by structlog and written by the handler, under
its lock, without becoming stdlib records: a line cost about 40 us of CPU through
stdlib's record, caller lookup and the formatter's copy, and 15 this way (a worker
writes about seventeen per run). They keep what the stdlib route gave them: the
logger's level (``logging.getLogger(name)``'s, root's by default), the same fields,
the redaction, and one lock for both kinds of line, so no two interleave. Another
handler added to the root logger sees the stdlib records only; kodo's lines are on the
stream.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from shared.domain.display import visible
from shared.redact import redact

_HANDLER_NAME = "kodo-structured"


def _shared_processors() -> list[Processor]:
    """What every line gets before it is rendered, from structlog or from stdlib."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def _foreign_processors() -> list[Processor]:
    """Stdlib records also carry their ``extra=`` fields (audit lines, Celery's data)."""
    return [*_shared_processors(), structlog.stdlib.ExtraAdder()]


def _redact_secrets(
    _: object, __: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Last step before rendering: no credential reaches a log line, whoever logged it."""
    redacted: EventDict = redact(dict(event))
    return redacted


class DemotedToDebug(logging.Filter):
    """Rewrites a logger's INFO records as DEBUG, kept only when the root logs DEBUG.

    httpx logs each request at INFO (``HTTP Request: GET ... "HTTP/1.1 400 BAD
    REQUEST"``), including the 400 that ends the OpenCode client's intended paging of a
    turn's messages (``earlier_turn_messages``): chatter at INFO, useful when debugging.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


class _HandlerLine:
    """A kodo logger's output: its rendered line, written by the root handler (its
    stream and lock) if the stdlib logger of the same name is enabled for the level."""

    def __init__(self, name: str, handler: logging.StreamHandler[TextIO]) -> None:
        self.name = name
        self._std = logging.getLogger(name)
        self._handler = handler

    def _write(self, level: int, line: str) -> None:
        if not self._std.isEnabledFor(level):
            return
        handler = self._handler
        with handler.lock or contextlib.nullcontext():
            handler.stream.write(line + handler.terminator)
            handler.flush()

    def debug(self, line: str) -> None:
        self._write(logging.DEBUG, line)

    def info(self, line: str) -> None:
        self._write(logging.INFO, line)

    def warning(self, line: str) -> None:
        self._write(logging.WARNING, line)

    def error(self, line: str) -> None:
        self._write(logging.ERROR, line)

    def critical(self, line: str) -> None:
        self._write(logging.CRITICAL, line)

    msg = info
    warn = warning
    exception = error
    fatal = critical


class KodoLogger(structlog.BoundLoggerBase):
    """What ``structlog.get_logger(name)`` returns: ``bind``, and the stdlib's methods."""

    def debug(self, event: str | None = None, **kw: Any) -> Any:
        return self._proxy_to_logger("debug", event, **kw)

    def info(self, event: str | None = None, **kw: Any) -> Any:
        return self._proxy_to_logger("info", event, **kw)

    def warning(self, event: str | None = None, **kw: Any) -> Any:
        return self._proxy_to_logger("warning", event, **kw)

    def error(self, event: str | None = None, **kw: Any) -> Any:
        return self._proxy_to_logger("error", event, **kw)

    def critical(self, event: str | None = None, **kw: Any) -> Any:
        return self._proxy_to_logger("critical", event, **kw)

    def exception(self, event: str | None = None, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self._proxy_to_logger("error", event, **kw)

    warn = warning


def _shown_on_a_terminal(
    _: object, __: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Console lines only, last before rendering: the event and the traceback, printed as
    they are (a field's value is printed as its ``repr``), show every control character,
    bidi override and invisible character escaped, whoever wrote them (an agent's path
    quoted in an exception's message, a stdlib record's message), their own line breaks
    kept. JSON lines escape them already."""
    for key in ("event", "exception"):
        value = event.get(key)
        if isinstance(value, str):
            event[key] = visible(value, multiline=True)
    return event


def _renderer(json: bool, stream: TextIO) -> Processor:
    if json:
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=stream.isatty())


def configure_logging(
    json: bool = True, level: str | int = "INFO", stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging through one handler on the root logger.

    ``json=False`` renders for a person at a terminal (``KODO_LOG_FORMAT=console``):
    the same events and bound ids, aligned and coloured when the stream is a TTY.
    Idempotent: a second call replaces our handler and nothing else, so handlers other
    code installed (pytest's capture, gunicorn's own loggers) keep working.
    """
    out = stream if stream is not None else sys.stderr
    renderer = _renderer(json, out)
    handler = logging.StreamHandler(out)

    def lines_to(*args: Any) -> _HandlerLine:
        return _HandlerLine(str(args[0]) if args else "", handler)

    # the last steps of every line, kodo's and stdlib's alike
    rendered: list[Processor] = [structlog.processors.format_exc_info, _redact_secrets]
    rendered += [renderer] if json else [_shown_on_a_terminal, renderer]
    structlog.configure(
        processors=[*_shared_processors(), *rendered],
        logger_factory=lines_to,
        wrapper_class=KodoLogger,
        cache_logger_on_first_use=False,  # a second configure_logging reaches every logger
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_foreign_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendered],
    )
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # httpx logs every request at INFO: five lines per provider call (one of them the
    # intended 400 that ends a turn's paging). The ledger records the calls, so they go
    # to DEBUG; httpcore's own DEBUG trace stays off. Celery logs each task's receipt and
    # success at INFO: two lines per delivery that kodo's own step.started /
    # step.finished / step.parked_on_call already tell, with the run and step ids.
    # Failures (ERROR) still pass.
    for chatty in ("httpcore", "celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    httpx = logging.getLogger("httpx")
    httpx.setLevel(logging.NOTSET)
    if not any(isinstance(f, DemotedToDebug) for f in httpx.filters):
        httpx.addFilter(DemotedToDebug())
