"""kodo's benchmark: ``python -m bench`` (see the README's "Benchmark" section).

It starts its own processes (Redis, the OpenCode-compatible server with zero think
time, Celery workers, beat, the API under gunicorn) on loopback ports, drives runs
through the public HTTP API, waits on ``GET /runs/{id}/events`` (SSE) and compares
the figures with a bare-Celery chain of the same four tasks over the same Redis.
"""
