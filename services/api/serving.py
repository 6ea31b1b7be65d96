"""The API's gunicorn worker: gevent's, made to stop promptly.

On SIGTERM gunicorn's gevent worker stops accepting and then waits, up to
``graceful_timeout``, until no connection is left open. Two kinds never close by
themselves: an event stream (it lasts until its run ends) and an idle keep-alive
connection (a browser tab, a CLI's pooled client: it is closed only by the header-read
deadline). So any open UI tab or watcher kept every ``kodo down`` and every deploy
waiting the whole 10 s. Once stopping, this worker ends every stream (its client resumes
with ``Last-Event-ID`` against a process that is not stopping: nothing is lost, since a
stream carries states) and closes every connection that is waiting for its next request.
A request being served is never cut: it ends, then its connection closes (gunicorn sends
``Connection: close`` once the worker stops).

Each connection's socket also gets a timeout (KODO_SEND_TIMEOUT_S): gevent's worker makes
it blocking without one, so a client that stops reading (a receive window of zero, which
TCP keeps open for good) held its greenlet, its connection slot and any stream slot for
good once the kernel's buffers filled: enough such sockets, each asking for
``/openapi.json`` (92 kB, no token needed) many times, would take every connection slot.
A write that makes no headway within the timeout now ends the connection. (An event
stream's keepalives are too small to fill the buffers for hours: a stream's longest
life, KODO_SSE_MAX_S, bounds a stalled watcher instead; see ``events.stream``.)

And idle connections make room. A client sending a small request on each of thousands
of kept-alive connections, each before the header deadline, held every
``worker_connections`` slot for as long as it went on (measured: 4100 such connections,
no token needed, and ``/healthz`` on a new connection got no answer for the whole
minute it ran): new
connections waited in the listen backlog behind them. While fewer than
:func:`headroom` slots are free, the worker closes connections waiting for their next
request, the longest waiting first, and every one idle for a second (never one being
served, nor an event stream), so new connections are accepted. A client whose kept-alive
connection is closed reconnects.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from contextlib import contextmanager

import gevent
import structlog
from gevent.greenlet import Greenlet
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

from shared.config import Settings

log = structlog.get_logger("kodo.api.serving")

DRAIN_POLL_S = 0.25  # gunicorn notices the stop within 1 s itself; this adds 4 wake-ups a second


IDLE_UNDER_PRESSURE_S = 1.0
"""Short of headroom, every connection idle this long is closed too, not just enough of
them: the listen backlog (where a flood's reconnects queue too) then drains at once."""


def headroom(connections: int) -> int:
    """The free connection slots a worker keeps, closing idle connections for them."""
    return max(4, connections // 20)


class DrainingGeventWorker(GeventWorker):  # type: ignore[misc]  # gunicorn is untyped
    """:class:`GeventWorker` that ends streams and idle connections once it stops."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._between_requests: dict[Greenlet, float] = {}  # since when each has waited
        self._open = 0  # connections being handled
        self._send_timeout_s = Settings.from_env().send_timeout_s

    def handle(self, listener: object, client: object, addr: object) -> None:
        """gevent's worker makes the socket blocking with no timeout, then serves it
        (AsyncWorker); here it gets the send timeout instead. gevent bounds a whole
        ``sendall`` by it: a response's chunk, a stream's event. The request line,
        headers and body have shorter deadlines of their own (see gunicorn_conf)."""
        client.settimeout(self._send_timeout_s)  # type: ignore[attr-defined]
        self._open += 1
        try:
            AsyncWorker.handle(self, listener, client, addr)
        finally:
            self._open -= 1

    def handle_request(
        self, listener_name: object, req: object, sock: object, addr: object
    ) -> None:
        try:
            super().handle_request(listener_name, req, sock, addr)
        except TimeoutError as exc:
            # One line, not the traceback gunicorn logs for an unknown socket error; the
            # connection is closed as for a client gone (EPIPE).
            log.warning("api.send_timed_out", after_s=self._send_timeout_s, peer=str(addr))
            raise BrokenPipeError(errno.EPIPE, "send timed out") from exc

    def handle_error(self, req: object, client: object, addr: object, exc: BaseException) -> None:
        """A connection this worker closed while it waited for its next request (to make
        room, or stopping) is no error: gunicorn logged a traceback for each, a flood of
        them under a drip. Nothing was asked on it, so nothing is answered."""
        if isinstance(exc, gevent.GreenletExit):
            return
        super().handle_error(req, client, addr, exc)

    @contextmanager
    def timeout_ctx(self) -> Iterator[None]:
        """The wait for a connection's next request (gunicorn's keep-alive loop reads
        each request inside this): while in it, the connection serves nothing."""
        me = gevent.getcurrent()
        self._between_requests[me] = time.monotonic()
        try:
            with super().timeout_ctx():
                yield
        finally:
            self._between_requests.pop(me, None)

    def run(self) -> None:
        gevent.spawn(self._drain_once_stopping)
        gevent.spawn(self._keep_headroom)
        super().run()

    def _keep_headroom(self) -> None:
        """While fewer than :func:`headroom` slots are free, close the connections idle
        the longest (waiting for their next request) until there are."""
        wanted = headroom(self.worker_connections)
        while self.alive:
            gevent.sleep(DRAIN_POLL_S)
            short = wanted - (self.worker_connections - self._open)
            if short <= 0 or not self._between_requests:
                continue
            since = self._between_requests
            oldest = sorted(since, key=since.__getitem__)
            stale = time.monotonic() - IDLE_UNDER_PRESSURE_S
            closing = max(short, sum(1 for idle in oldest if since[idle] <= stale))
            for idle in oldest[:closing]:
                idle.kill(block=False)
            log.warning(
                "api.idle_connections_closed", closed=min(closing, len(oldest)), open=self._open
            )

    def _drain_once_stopping(self) -> None:
        # Imported here, in the worker: gunicorn loads this class in the master, where
        # nothing of the app may be imported before gevent patches the worker.
        from .events import drain_streams

        while self.alive:
            gevent.sleep(DRAIN_POLL_S)
        drain_streams()
        while True:  # a stream that just ended goes back to waiting: close it too
            for idle in list(self._between_requests):
                idle.kill(block=False)
            gevent.sleep(DRAIN_POLL_S)
