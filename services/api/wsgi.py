"""The gunicorn entry point: ``gunicorn 'services.api.wsgi:app'``."""

from __future__ import annotations

from shared.config import Settings

from .app import create_app

app = create_app(Settings.from_env())
