"""The gunicorn entry point: ``gunicorn 'services.api.wsgi:app'``.

Its access log keeps query strings and credentials out (see ``access_log``).
"""

from __future__ import annotations

from shared.config import Settings

from .access_log import install_access_log_filter
from .app import create_app

install_access_log_filter()
app = create_app(Settings.from_env())
