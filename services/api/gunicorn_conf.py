"""How the API is served, the one shape for ``kodo up``, compose, the bench and the tests:
``gunicorn -c python:services.api.gunicorn_conf -b HOST:PORT services.api.wsgi:app``.

gevent workers: a connection is a greenlet, not a thread, so an open SSE stream or a
slow client costs a few kilobytes and never a worker thread; ``/healthz`` and ordinary
requests keep answering beside hundreds of streams. gunicorn's gevent worker reads
each request's line and headers inside a ``keepalive``-second timeout, so a slowloris
socket is closed after KODO_HEADER_TIMEOUT_S (the same bound ends idle keep-alive
connections); request bodies have their own deadline (``services.api.body_deadline``).
psycopg 3 waits cooperatively once ``select`` is patched (it is, before the app loads:
no ``--preload``), and the LISTEN hub's thread becomes a greenlet.
"""

from __future__ import annotations

from shared.config import Settings

_settings = Settings.from_env()

worker_class = "services.api.serving.DrainingGeventWorker"  # gevent, stopping promptly
workers = _settings.api_workers
worker_connections = _settings.api_connections  # open sockets per worker, streams included
keepalive = int(max(1, round(_settings.header_timeout_s)))  # the header read deadline too
timeout = 30  # the worker's heartbeat: a blocked event loop is restarted
graceful_timeout = 10
backlog = 2048
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
accesslog = "-"
# gunicorn's control socket (reload, shutdown, worker count) sits at one per-user path by
# default, so every API on the host would bind the same one and the last started would
# answer for all; kodo never uses it.
control_socket_disable = True
