"""Syntax classes for a patch's lines, lexed in a child process that is killed at a deadline.

The lexer is chosen by a file name the agent chose, and it lexes text the agent wrote.
Many Pygments lexers are quadratic on some text, some inside one token: 80 kB of spaces
on one line of a ``Makefile`` is a single token that took 2.75 s (400 kB: about 70 s),
and 20 kB of blank-ish lines in an ``*.au3`` file took 78 s. Lexed in the API worker,
such a patch held the event loop past gunicorn's 30 s timeout: the worker was killed
with every stream it served, and the run's page could never be opened (a red-team
pass). Python's regex engine cannot be interrupted, so the lexing runs in a child
process (:mod:`services.api.lexing`) that is killed at :data:`TIMEOUT_S`; whatever it did
not lex is shown plain. The child stops itself between tokens a little earlier, so
files lexed in time keep their colours.

A child serves page after page (:class:`_Children`): one started per page cost about
half a second of CPU (Python, Pygments, the plugin scan) for a few milliseconds of
lexing. One that is cut off, fails or says something unreadable is killed, and the
next page starts another. Results are cached by the request's digest: a run's page
reloads as the run moves, and its patches never change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from typing import IO, TypeGuard

import structlog

from services.api.lexing import READY, Job, Lexed

log = structlog.get_logger("kodo.api.highlight")

TIMEOUT_S = 2.0
"""Wall time one page's patches may take, waiting for a free child included; the child
lexing them is killed past it."""
CHILD_BUDGET_S = 1.5
"""When the child stops lexing (checked between tokens) and answers with what it has."""
START_S = 10.0
"""Time a new child may take to load Pygments and say it is ready, before a page's own
deadline starts (a busy machine took over a second: a page cut off by it was shown
plain, and its child killed for nothing)."""
CHILDREN = 2
"""Lexing children per API process at most: pages opened at once beyond this wait."""
SERVED = 200
"""Pages a child answers before it is replaced: whatever a page made it hold (memory
Python keeps, lexer classes) goes with it."""
ANSWER_BYTES = 64 * 1024 * 1024
"""A child's answer past this is not read (it is killed): an answer grows with the
page's text, which :mod:`services.api.diff_view` bounds far below."""
CACHED = 16
"""Pages' results kept per API process (each at most :data:`CACHED_CHARS` of JSON)."""
CACHED_CHARS = 2_000_000

__all__ = ["Job", "Lexed", "highlighted"]

_cache: OrderedDict[str, list[list[Lexed]]] = OrderedDict()
_lock = threading.Lock()


def highlighted(jobs: list[Job], *, timeout_s: float = TIMEOUT_S) -> list[list[Lexed]]:
    """Each job's sides lexed, in order; a side the child did not lex (no lexer for the
    name, the lexer changed the text, out of time, the child failed) is None."""
    plain: list[list[Lexed]] = [[None] * len(sides) for _, sides in jobs]
    if not jobs:
        return plain
    request = json.dumps({"budget_s": min(CHILD_BUDGET_S, timeout_s * 0.75), "jobs": jobs}).encode()
    key = hashlib.sha256(request).hexdigest()
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    try:
        answer = _children.ask(request, timeout_s)
    except _Busy:
        log.info("highlight.busy", files=len(jobs), timeout_s=timeout_s)
        return plain
    except subprocess.TimeoutExpired:
        log.info("highlight.cut", files=len(jobs), timeout_s=timeout_s)  # the agent's text
        return plain
    except _Lost as lost:
        log.warning(f"highlight.{lost.why}", exit_code=lost.exit_code, stderr=lost.said)
        return plain
    except OSError as exc:
        log.warning("highlight.unavailable", error=str(exc))
        return plain
    lexed = answer.value
    if not _fits(lexed, jobs):
        log.warning("highlight.unreadable", stdout_bytes=answer.size)
        return plain
    if answer.size <= CACHED_CHARS:
        with _lock:
            _cache[key] = lexed
            while len(_cache) > CACHED:
                _cache.popitem(last=False)
    return list(lexed)


def _fits(answer: object, jobs: list[Job]) -> TypeGuard[list[list[Lexed]]]:
    """The child's answer has one entry per side of each job, each None or one line per
    line of that side (anything else is not used)."""
    if not isinstance(answer, list) or len(answer) != len(jobs):
        return False
    for sides, (_, texts) in zip(answer, jobs, strict=True):
        if not isinstance(sides, list) or len(sides) != len(texts):
            return False
        for side, lines in zip(sides, texts, strict=True):
            if side is not None and (not isinstance(side, list) or len(side) != len(lines)):
                return False
    return True


class _Busy(Exception):
    """Every child was lexing another page until the deadline."""


class _Lost(Exception):
    """The child ended (``failed``) or answered what is not one JSON line (``unreadable``);
    it was killed and reaped, ``said`` is the tail of what it wrote to stderr."""

    def __init__(self, why: str, exit_code: int | None, said: str) -> None:
        super().__init__(why)
        self.why, self.exit_code, self.said = why, exit_code, said


class _Answer:
    __slots__ = ("size", "value")

    def __init__(self, value: object, size: int) -> None:
        self.value, self.size = value, size


class _Child:
    """One :mod:`services.api.lexing` process, its pipes read and written without
    blocking (under gevent, the selector is gevent's: a page's wait yields the loop)."""

    ARGV = (sys.executable, "-m", "services.api.lexing")

    def __init__(self) -> None:
        env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONDONTWRITEBYTECODE": "1"}
        self.proc = subprocess.Popen(
            self.ARGV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            process_group=0,  # killed as a group, never by a signal to the API's group
        )
        self.served = 0
        self.ready = False
        self.fds = [_fd(f) for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr)]
        for fd in self.fds:
            os.set_blocking(fd, False)

    def wait_ready(self) -> None:
        """Read the child's :data:`~services.api.lexing.READY` line within
        :data:`START_S` (``subprocess.TimeoutExpired``, or :class:`_Lost` if it ended or
        said anything else; the caller kills it)."""
        said = self._line(b"", time.monotonic() + START_S)
        if said != READY:
            raise self._lost("unreadable")
        self.ready = True

    def ask(self, request: bytes, deadline: float) -> _Answer:
        """Send one request line and read its answer line by ``deadline`` (else
        ``subprocess.TimeoutExpired``; :class:`_Lost` if the child ended or the line is
        not JSON). The caller kills the child on any exception."""
        got = self._line(request + b"\n", deadline)
        self.served += 1
        try:
            return _Answer(json.loads(got), len(got))
        except ValueError:
            raise self._lost("unreadable") from None

    def _line(self, request: bytes, deadline: float) -> bytes:
        """Write ``request`` (if any) and read one line back, by ``deadline``."""
        stdin, stdout, _ = self.fds
        pending = memoryview(request)
        got = bytearray()
        with selectors.DefaultSelector() as selector:
            if pending:
                selector.register(stdin, selectors.EVENT_WRITE)
            selector.register(stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(list(self.ARGV), left)
                for key, _ in selector.select(left):
                    if key.fd == stdin:
                        try:
                            pending = pending[os.write(stdin, pending[:65536]) :]
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:
                            raise self._lost("failed") from None
                        if not pending:
                            selector.unregister(stdin)
                        continue
                    try:
                        chunk = os.read(stdout, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        raise self._lost("failed")
                    got += chunk
                    if len(got) > ANSWER_BYTES or (b"\n" in chunk and not got.endswith(b"\n")):
                        raise self._lost("unreadable")  # more than one line: out of step
                    if got.endswith(b"\n"):
                        return bytes(got)

    def _lost(self, why: str) -> _Lost:
        said = self.kill()
        return _Lost(why, self.proc.returncode, said)

    def kill(self) -> str:
        """Kill the child's group, reap it (cooperatively under gevent) and close its
        pipes; return the tail of what it wrote to stderr."""
        if self.proc.returncode is None:  # never once reaped: its pid may be another's
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        said = b""
        with contextlib.suppress(OSError):  # it is dead: its stderr reads to its end
            while chunk := os.read(self.fds[2], 65536):
                said = (said + chunk)[-300:]
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        return said.decode(errors="replace")


def _fd(pipe: IO[bytes] | None) -> int:
    if pipe is None:
        raise OSError("the lexing child has no pipe")
    return pipe.fileno()


class _Children:
    """At most ``most`` children, each lexing one page at a time; idle ones are kept."""

    def __init__(self, most: int) -> None:
        self._slots = threading.BoundedSemaphore(most)
        self._idle: list[_Child] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def ask(self, request: bytes, timeout_s: float) -> _Answer:
        deadline = time.monotonic() + timeout_s
        if not self._slots.acquire(timeout=timeout_s):
            raise _Busy
        try:
            child = self._take() or _Child()
            try:
                if not child.ready:  # its start is not the page's time
                    child.wait_ready()
                    deadline = time.monotonic() + timeout_s
                answer = child.ask(request, deadline)
            except BaseException:
                child.kill()
                raise
            if child.served >= SERVED:
                child.kill()
            else:
                with self._lock:
                    self._idle.append(child)
            return answer
        finally:
            self._slots.release()

    def _take(self) -> _Child | None:
        with self._lock:
            if os.getpid() != self._pid:  # a forked copy: those children are the parent's
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                child = self._idle.pop()
                if child.proc.poll() is None:
                    return child
                child.kill()  # ended while idle (killed, out of memory): closed and reaped
            return None


_children = _Children(CHILDREN)
