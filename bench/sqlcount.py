"""Per-process SQL round-trip counters for the benchmark (``KODO_COUNT_SQL=1``).

Class-level SQLAlchemy listeners count every statement, transaction and pool
checkout (a ping only after KODO_DB_PING_IDLE_S idle) of every engine in the process,
so the product code is unchanged. A daemon thread writes the running totals to
``$KODO_SQL_COUNT_DIR/<role>-<pid>.json``; the bench sums the files before and after
a phase. Counting costs a dict increment per statement.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.pool import Pool

from bench import spawns

ENABLE = "KODO_COUNT_SQL"
DIRECTORY = "KODO_SQL_COUNT_DIR"
TRACE = "KODO_SQL_TRACE"
"""A directory: also append every transaction's statements there, one line each with
its thread, to ``<role>-<pid>.trace`` (what a run's transactions are, in order)."""
FLUSH_S = 0.2

_SHAPE = re.compile(
    r"^\s*(?P<verb>SELECT|INSERT INTO|UPDATE|DELETE FROM|WITH|SET|LISTEN|SHOW)\b"
    r"(?:.*?\bFROM\s+|\s+)?(?P<table>[a-z_]+\.[a-z_]+)?",
    re.IGNORECASE | re.DOTALL,
)

_counts: Counter[str] = Counter()
_lock = threading.Lock()
_state: dict[str, int] = {"listening": 0, "publisher_pid": 0}


def shape(statement: str) -> str:
    """``INSERT INTO app.step_runs``-like label: the verb and the first table named."""
    match = _SHAPE.match(statement)
    if match is None:
        return statement.strip().split(None, 1)[0].upper() if statement.strip() else "?"
    verb = match.group("verb").upper()
    table = match.group("table")
    return f"{verb} {table}" if table else verb


def _bump(key: str) -> None:
    with _lock:
        _counts[key] += 1


LABELS_KEPT = 4096
_labels: dict[str, str] = {}
"""Each statement text's counter key, computed once: the texts come from SQLAlchemy's
compiled cache, so a handful repeat, and a regex per statement was itself about 2% of
a worker's CPU in the bench (py-spy), charged to kodo."""


def _on_statement(
    _conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
) -> None:
    label = _labels.get(statement)
    if label is None:
        label = f"stmt:{shape(statement)}"
        if len(_labels) < LABELS_KEPT:  # texts with inlined values would grow it forever
            _labels[statement] = label
    with _lock:
        _counts["statements"] += 1
        _counts[label] += 1
    if _trace:
        _trace_line(" ".join(statement.split())[:240])


_trace: list[Any] = []


def _trace_line(text: str) -> None:
    line = f"{threading.current_thread().name}\t{text}\n"
    with _lock:
        if _trace:
            _trace[0].write(line)
            _trace[0].flush()


def snapshot() -> dict[str, int]:
    with _lock:
        return dict(_counts)


def _flush_forever(path: Path) -> None:
    last: dict[str, int] = {}
    stop = threading.Event()
    while not stop.wait(FLUSH_S):
        now = snapshot()
        if now != last:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(now))
            tmp.replace(path)
            last = now


def _on_transaction(what: str, conn: Connection) -> None:
    """Count a transaction's begin, commit or rollback; on an AUTOCOMMIT connection (the
    API's one-statement reads) SQLAlchemy still signals them, but nothing is sent to
    Postgres: those count apart, so "transactions" are the ones Postgres saw."""
    sent = conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT"
    _bump(f"{what}s" if sent else f"autocommit_{what}s")
    if _trace:
        _trace_line(what.upper() if sent else f"({what}: autocommit, nothing sent)")


_LISTENERS: list[tuple[Any, str, Any]] = [
    (Engine, "before_cursor_execute", _on_statement),
    *((Engine, what, partial(_on_transaction, what)) for what in ("begin", "commit", "rollback")),
    (Pool, "checkout", lambda *_a: _bump("checkouts")),
    (Pool, "connect", lambda *_a: _bump("connects")),
]


def listen() -> None:
    """Register the class-level listeners, once per process (they survive a fork)."""
    if _state["listening"]:
        return
    for target, name, fn in _LISTENERS:
        event.listen(target, name, fn)
    spawns.install(_bump)  # process starts, by what they run: "spawn:git diff"
    _state["listening"] = 1


def unlisten() -> None:
    """Remove them again (a test that listened in a shared process)."""
    if not _state["listening"]:
        return
    for target, name, fn in _LISTENERS:
        event.remove(target, name, fn)
    spawns.uninstall()
    _state["listening"] = 0


def install(directory: Path, role: str) -> None:
    """Count from now on in this process and publish the totals under ``directory``.

    Listeners survive a fork (registered once); a forked child starts from zero and
    publishes under its own pid.
    """
    listen()
    if _state["publisher_pid"] == os.getpid():
        return
    with _lock:
        _counts.clear()
    _state["publisher_pid"] = os.getpid()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{role}-{os.getpid()}.json"
    threading.Thread(target=_flush_forever, args=(path,), daemon=True, name="sqlcount").start()
    if os.environ.get(TRACE):
        trace_to(Path(os.environ[TRACE]) / f"{role}-{os.getpid()}.trace")


def trace_to(path: Path | None) -> None:
    """Append this process's statements and transaction marks to ``path`` from now on
    (None: stop). The listeners must be installed (:func:`listen`)."""
    with _lock:
        if _trace:
            _trace.pop().close()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _trace.append(path.open("a"))


def install_from_env(role: str) -> None:
    """Install iff ``KODO_COUNT_SQL=1``; each (forked) process counts under its own pid."""
    if os.environ.get(ENABLE) == "1" and os.environ.get(DIRECTORY):
        install(Path(os.environ[DIRECTORY]), role)


def collect(directory: Path, role_prefix: str = "") -> Counter[str]:
    """The sum over every process's latest totals (roles starting with ``role_prefix``)."""
    total: Counter[str] = Counter()
    for path in directory.glob(f"{role_prefix}*.json"):
        try:
            total.update(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return total
