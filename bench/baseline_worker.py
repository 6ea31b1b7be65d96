"""``celery -A bench.baseline_worker:app worker``: the baseline app on its Redis database."""

from __future__ import annotations

import os

from bench.baseline_app import make_app

app = make_app(os.environ.get("BENCH_BASELINE_REDIS_URL", "redis://127.0.0.1:6379/11"))
