"""Serving the compat app: a threaded werkzeug server, in the foreground or for a test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from services.oc_compat.app import CompatConfig, CompatState, create_app


class _QuietHandler(WSGIRequestHandler):
    """No access log: tests and demos read the stats endpoint instead."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None

    def log(self, type: str, message: str, *args: Any) -> None:
        if type == "error":
            super().log(type, message, *args)


class CompatServer:
    """One bound server (port 0 picks a free port) and its state."""

    def __init__(self, config: CompatConfig, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = CompatState(config)
        self._server: BaseWSGIServer = make_server(
            host, port, create_app(self.state), threaded=True, request_handler=_QuietHandler
        )
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self._server.host}:{self._server.server_port}"

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.1)

    def start(self) -> None:
        """Serve from a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="oc-compat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Release in-flight prompts, stop accepting, close the socket."""
        self.state.abort_all()
        self._server.shutdown()
        self._server.server_close()
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
