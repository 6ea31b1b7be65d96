"""Serving the compat app as its own process on gevent: what ``kodo oc-compat`` runs.

Every connection is a greenlet on one event loop, so a held prompt (``[oc:slow]``,
``[oc:slow-edit]``, ``[oc:llm500]``), a ``prompt_async`` turn and an open event stream
each cost a greenlet and a socket, never an OS thread: thousands are held at once.
The app's code is the same as on cheroot (server.py): it uses ``threading`` and
``queue`` by module attribute at call time, and :func:`patch` (gevent's monkey-patching,
as the API's gunicorn gevent workers have) turns ``threading.Lock``/``Event``/``Thread``,
``queue.SimpleQueue`` and ``time.sleep`` into their cooperative forms: an abort wakes a
held prompt at once, and the state's locks are gevent locks. A lock is never held
across a wait, so one greenlet cannot stall the loop while holding it.

Only a process of its own may be patched: :func:`serve` refuses to run unpatched.
In-process servers for tests stay on cheroot (server.py) so a test process is never
patched behind the back of its database driver, broker client and threads.
"""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Callable

from standins.oc_compat.app import CompatConfig, CompatState, create_app

BACKLOG = 4096
"""Listen backlog: thousands of clients may connect in the same instant."""


def patch() -> None:
    """Make this process cooperative: call before any server object is built."""
    from gevent import monkey

    # ssl stays unpatched: oc-compat speaks plain HTTP and makes no TLS calls, and the
    # ``kodo`` command has imported ssl (httpx, redis) long before its subcommand runs.
    monkey.patch_all(ssl=False)


class NotPatchedError(RuntimeError):
    """``serve`` ran in a process whose ``threading`` is not gevent's."""


def serve(config: CompatConfig, host: str, port: int, on_listening: Callable[[str], None]) -> None:
    """Serve until SIGTERM or SIGINT, then release held prompts and end the streams.

    The state is built here, once the process is patched, so every lock, event and
    queue it makes is gevent's.
    """
    import gevent
    import gevent.event
    from gevent import monkey
    from gevent.pywsgi import WSGIServer

    if not monkey.is_module_patched("threading"):
        raise NotPatchedError(
            "oc-compat on gevent needs a monkey-patched process (green.patch() first): "
            "unpatched, every held prompt would block the one event loop"
        )
    state = CompatState(config)
    listener = socket.create_server((host, port), backlog=BACKLOG)  # bound: the port is known
    # pywsgi sends a response's headers and body in two writes; with Nagle on, the body
    # waits for the client's delayed ACK (40 ms a request on keep-alive). Accepted
    # sockets inherit this from the listener, as under gunicorn.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server = WSGIServer(
        listener,
        create_app(state),
        log=None,
        error_log=sys.stderr,
        # named, so the server never asks the resolver (a thread pool) for its own name
        environ={"SERVER_NAME": host},
    )
    server.start()
    stop = gevent.event.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)
    bound_host, bound_port = server.address[:2]
    on_listening(f"http://{bound_host}:{bound_port}")
    stop.wait()
    state.abort_all()  # held prompts answer as aborted, streams end
    server.stop(timeout=5)
