"""One log format for every process: JSON lines that carry the ids of what is running.

structlog and the stdlib ``logging`` module (Celery, SQLAlchemy, gunicorn's app logs)
share one handler on the root logger, so a line is JSON whoever wrote it. Context
bound with :func:`structlog.contextvars.bind_contextvars` (the step runner binds
``run_id`` and ``step_id``) is merged into every line, stdlib ones included: a
triager greps one run's lines across API and workers.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor

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
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_foreign_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
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
