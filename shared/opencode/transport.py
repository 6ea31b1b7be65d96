"""Plain HTTP/1.1 requests to one daemon over kept-alive connections (stdlib ``http.client``).

A run makes about twenty requests to its daemon, each a small JSON exchange on
loopback. Measured on the bench machine (GET /session/status to oc-compat, CPU of the
calling thread): httpcore with h11 about 215 us per request, ``http.client`` about 75;
under the bench's load the difference doubled. What httpcore's pool added, this one keeps:

* a connection is reused only after its answer was read to the end and the daemon did
  not say it would close; one whose answer was left unread, broke or timed out is closed;
* an idle connection is not reused past ``idle_s``, nor once its socket reads ready
  (the daemon closed it, or sent what no request asked for): a prompt is never sent on
  a connection that is already gone;
* at most ``max_open`` connections at once; a request that finds none free within its
  read timeout fails as unreachable (httpcore's pool timeout), nothing sent;
* the caller names every header (no ``Host`` or ``Accept-Encoding`` added behind its
  back) and reads the body in bounded chunks, so a cap holds whatever the daemon sends.

* the exchange as a whole ends within ``read_s`` of the connection being had (within
  :data:`WATCH_S` more): a socket timeout bounds one read only, and a daemon that sends
  a byte per read timeout, or ``100 Continue`` after ``100 Continue`` (``http.client``
  skips them without end), held the calling thread for days. One watchdog thread per
  process shuts the socket of an exchange past its deadline (:class:`_Watchdog`).

Failures are three exceptions the caller maps: :class:`Unreachable` (nothing was sent:
refused, no route, a connect timeout, a TLS handshake, no free connection),
:class:`ReadTimeout` (sent, no answer in time) and :class:`Broken` (the connection broke
or the answer was not HTTP).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

CHUNK_BYTES = 64 * 1024
"""The most one read of a body asks for."""
WATCH_S = 0.5
"""How often the watchdog looks at the exchanges under way (while there are any)."""
NOT_WHOLE = "no whole answer within the request's timeout"


class Unreachable(Exception):
    """No connection to send on: nothing was sent."""


class ReadTimeout(Exception):
    """The request left; no (further) answer came within the read timeout."""


class Broken(Exception):
    """The connection broke, or what came back was not an HTTP answer."""


class _Watched:
    """One exchange under way: its socket, its deadline, whether it was cut."""

    __slots__ = ("deadline", "expired", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.expired = False


class _Watchdog:
    """Shuts the socket of each exchange still under way at its deadline, for the whole
    process: one thread, started at the first exchange (again in a forked child), waking
    every WATCH_S while any exchange is under way and never otherwise. Registering one
    costs a dict insert under a lock; a timer thread per request cost a thread start."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._under_way: dict[int, _Watched] = {}
        self._pid = 0

    def watch(self, sock: socket.socket, within_s: float) -> _Watched:
        watched = _Watched(sock, time.monotonic() + within_s)
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child: no thread yet
                self._pid = os.getpid()
                self._under_way.clear()
                threading.Thread(target=self._run, name="kodo-oc-watchdog", daemon=True).start()
            self._under_way[id(watched)] = watched
            if len(self._under_way) == 1:
                self._lock.notify()
        return watched

    def done(self, watched: _Watched) -> None:
        with self._lock:
            self._under_way.pop(id(watched), None)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._under_way:
                    self._lock.wait()
                now = time.monotonic()
                due = [w for w in self._under_way.values() if w.deadline <= now]
                for watched in due:
                    watched.expired = True
                    del self._under_way[id(watched)]
            for watched in due:
                with contextlib.suppress(OSError):  # the reader wakes to an error or an end
                    watched.sock.shutdown(socket.SHUT_RDWR)
            time.sleep(WATCH_S)


_WATCHDOG = _Watchdog()


def _cut(watched: _Watched, exc: BaseException, doing: str) -> Exception:
    """What an exchange's failure is: a timeout when the watchdog cut it (its read then
    fails in any way), or a socket timeout; else the connection broke."""
    if watched.expired:
        return ReadTimeout(f"{doing}: {NOT_WHOLE}")
    if isinstance(exc, TimeoutError):
        return ReadTimeout(f"{doing}: {exc or 'timed out'}")
    return Broken(f"{type(exc).__name__}: {exc}")


class Answer:
    """A response whose body is read with :meth:`chunks` (the connection is kept only if
    that read reached the end)."""

    def __init__(self, response: http.client.HTTPResponse, watched: _Watched) -> None:
        self.status = response.status
        self.headers = _headers(response.getheaders())
        self._response = response
        self._watched = watched
        self.read_whole = False

    def chunks(self) -> Iterator[bytes]:
        """The body, ``CHUNK_BYTES`` at most per piece (chunked coding undone)."""
        while True:
            try:
                chunk = self._response.read(CHUNK_BYTES)
            except (http.client.HTTPException, OSError) as exc:
                raise _cut(self._watched, exc, "reading the body") from exc
            if self._watched.expired:  # cut between reads, or the cut read ended quietly
                raise ReadTimeout(f"reading the body: {NOT_WHOLE}")
            if not chunk:
                left = self._response.length  # what Content-Length still promised
                if left:  # http.client's bounded read ends quietly at a cut; this does not
                    raise Broken(f"IncompleteRead: the body ended {left} bytes short")
                self.read_whole = True
                return
            yield chunk

    @property
    def keeps_connection(self) -> bool:
        return self.read_whole and not self._response.will_close

    def close(self) -> None:
        """Let go of a response not kept with its connection (a body refused part way:
        http.client hands a closing response the socket, which the connection's close
        then leaves open)."""
        self._response.close()


def _headers(raw: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Headers by lower-case name; a repeated one's values joined, as HTTP reads them
    (so a second Content-Encoding is still seen)."""
    seen: dict[str, str] = {}
    for name, value in raw:
        key = name.lower()
        seen[key] = f"{seen[key]}, {value}" if key in seen else value
    return seen


def _reads_ready(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection's socket has something to read: end of stream (the
    daemon closed it) or bytes nobody asked for. Either way it is not reused."""
    sock = connection.sock
    if sock is None:
        return True
    poller = select.poll()  # no FD_SETSIZE limit, unlike select()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


class ConnectionPool:
    """Keep-alive connections to one ``scheme://host:port``, shared by threads (each
    request holds its connection alone); a forked child starts with none of its parent's."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        max_open: int = 100,
        max_idle: int = 20,
        idle_s: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) scheme: {scheme!r}")
        self._scheme, self._host, self._port = scheme, host, port
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._idle_s = idle_s
        self._slots = threading.BoundedSemaphore(max_open)
        self._lock = threading.Lock()
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []  # oldest first
        self._pid = os.getpid()
        self.opened = 0
        """Connections opened so far (for tests and the curious)."""

    @contextmanager
    def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        *,
        connect_s: float,
        read_s: float,
    ) -> Iterator[Answer]:
        """Send one request and yield its :class:`Answer` (headers read, body not yet)."""
        if not self._slots.acquire(timeout=read_s):
            raise Unreachable(f"no free connection within {read_s:g} s")
        connection: http.client.HTTPConnection | None = None
        answer: Answer | None = None
        watched: _Watched | None = None
        try:
            connection = self._idle_connection() or self._connect(connect_s)
            if connection.sock is None:  # never: the pool hands out connected connections
                raise Broken("the connection has no socket")
            watched = _WATCHDOG.watch(connection.sock, read_s)
            answer = self._send(connection, method, target, headers, body, read_s, watched)
            yield answer
        finally:
            if watched is not None:
                _WATCHDOG.done(watched)
            if connection is not None:
                cut = watched is not None and watched.expired
                if answer is not None and answer.keeps_connection and not cut:
                    self._keep(connection)
                else:
                    if answer is not None:
                        answer.close()
                    connection.close()
            self._slots.release()

    @staticmethod
    def _send(
        connection: http.client.HTTPConnection,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        read_s: float,
        watched: _Watched,
    ) -> Answer:
        sock = connection.sock
        if sock is None:  # never: the pool hands out connected connections only
            raise Broken("the connection has no socket")
        try:
            sock.settimeout(read_s)  # each send and read (a write timeout too)
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
        except (http.client.HTTPException, OSError) as exc:
            raise _cut(watched, exc, "waiting for the answer") from exc
        if watched.expired:
            raise ReadTimeout(
                "waiting for the answer: no whole answer within the request's timeout"
            )
        return Answer(response, watched)

    def _connect(self, connect_s: float) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if self._scheme == "https":
            context = self._ssl or ssl.create_default_context()
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=connect_s, context=context
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=connect_s)
        try:
            connection.connect()
        except OSError as exc:  # refused, no route, DNS, connect timeout, TLS handshake
            connection.close()
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        with self._lock:
            self.opened += 1
        return connection

    def _idle_connection(self) -> http.client.HTTPConnection | None:
        """The most recently used idle connection still fit to send on, if any."""
        now = time.monotonic()
        stale: list[http.client.HTTPConnection] = []
        found = None
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's sockets, not ours
                self._idle.clear()
                self._pid = os.getpid()
            while self._idle:
                connection, since = self._idle.pop()
                if now - since <= self._idle_s and not _reads_ready(connection):
                    found = connection
                    break
                stale.append(connection)
        for connection in stale:
            connection.close()
        return found

    def _keep(self, connection: http.client.HTTPConnection) -> None:
        now = time.monotonic()
        dropped: list[http.client.HTTPConnection] = []
        with self._lock:
            if self._pid != os.getpid():  # forked since it was taken: not this pool's
                dropped.append(connection)
            else:
                self._idle.append((connection, now))
            while self._idle and (
                len(self._idle) > self._max_idle or now - self._idle[0][1] > self._idle_s
            ):
                dropped.append(self._idle.pop(0)[0])  # oldest first: expired, or surplus
        for old in dropped:
            old.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection, _ in idle:
            connection.close()
