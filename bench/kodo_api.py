"""The API with SQL counting: ``gunicorn 'bench.kodo_api:app'`` (one counter per worker)."""

from __future__ import annotations

from bench import fn_cpu, sqlcount

sqlcount.install_from_env("api")

from services.api.wsgi import app  # noqa: E402  (the counters must exist before the engine)

fn_cpu.install_from_env("api")

__all__ = ["app"]
