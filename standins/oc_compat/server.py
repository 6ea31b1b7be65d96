"""Serving the compat app in-process on cheroot: threaded, HTTP/1.1 keep-alive.

This is :func:`running_server`, for tests that want a compat server inside the test
process. The ``kodo oc-compat`` process (``kodo up``, the demo, chaos, e2e, the bench)
serves the same app on gevent instead (green.py), where a held prompt or an event
stream is a greenlet and thousands are held at once. In-process stays threaded because
gevent's monkey-patching is process-wide and must come first: patching a test process
would turn its psycopg, Celery, httpx and threads cooperative behind their backs. The
tests that use this hold a few prompts; a test that needs many starts the process.

werkzeug's development server closes every connection after one response, so each
request paid a TCP connect and a new thread; the real daemon (Bun) keeps connections
alive, and so does this server, which keeps the wrapper's overhead honest to measure.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from cheroot import wsgi

from standins.oc_compat.app import CompatConfig, CompatState, create_app

THREADS = 64
"""Prompts held by ``[oc:slow]`` and open event streams each block a thread here (not in
the gevent process); idle keep-alive connections do not (cheroot parks them in a selector)."""


class CompatServer:
    """One bound server (port 0 picks a free port) and its state."""

    def __init__(self, config: CompatConfig, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = CompatState(config)
        self._server = wsgi.Server((host, port), create_app(self.state), numthreads=THREADS)
        self._server.prepare()  # binds now, so the port is known before serving
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.bind_addr[:2]
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        self._server.serve()

    def start(self) -> None:
        """Serve from a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="oc-compat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Release in-flight prompts, stop accepting, close the socket."""
        self.state.abort_all()
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextmanager
def running_server(
    seed: int = 0,
    password: str = "",
    *,
    provider_id: str = "kodo",
    model_id: str = "kodo-scripted",
) -> Iterator[str]:
    """Run a compat server on a free 127.0.0.1 port for the ``with`` block; yield its URL."""
    config = CompatConfig(seed=seed, password=password, provider_id=provider_id, model_id=model_id)
    server = CompatServer(config)
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()
