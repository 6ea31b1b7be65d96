"""The Flask app factory: every connection is made here, nothing at import time."""

from __future__ import annotations

from celery import Celery
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from redis import Redis
from werkzeug.routing import BaseConverter

from shared.clock import Clock, SystemClock
from shared.config import Settings
from shared.db.engine import make_engine, make_session_factory
from shared.logging import configure_logging
from shared.queue import make_celery
from shared.version import app_version

from . import audit, health, intents, metrics, outputs, runs, ui
from .admission import Admission
from .auth import install_auth
from .body_deadline import BodyDeadline
from .errors import register_error_handlers
from .events import events_bp
from .headers import install_security_headers
from .openapi import docs_bp, document_events, make_api, register_routes
from .rate_limits import install_rate_limits
from .state import EXTENSION, ApiState, state_of


class JsonProvider(DefaultJSONProvider):
    sort_keys = False  # keep the documented field order


class IdConverter(BaseConverter):
    """Ids as stored (uuids, at most 64 characters); anything else is a plain 404."""

    regex = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


class ArtifactNameConverter(BaseConverter):
    """Artifact names may contain ``/`` but never control characters."""

    regex = r"[^\x00-\x1f\x7f]{1,255}"
    part_isolating = False


def create_app(
    settings: Settings, *, clock: Clock | None = None, celery: Celery | None = None
) -> Flask:
    """Build the API; pass ``celery`` to share an app, otherwise one is made (and owned)."""
    configure_logging(json=settings.log_json)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = JsonProvider(app)
    app.url_map.converters["kid"] = IdConverter
    app.url_map.converters["artifact"] = ArtifactNameConverter
    engine = make_engine(
        settings.database_url,
        pool_size=settings.api_db_pool,
        max_overflow=settings.api_db_overflow,
        pool_timeout_s=settings.api_db_wait_s,
        ping_idle_s=settings.db_ping_idle_s,
    )
    app.extensions[EXTENSION] = ApiState(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        clock=clock or SystemClock(),
        celery=celery if celery is not None else make_celery(settings),
        redis=Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2),
        app_version=app_version(),
        owns_celery=celery is None,
    )
    install_auth(app)
    audit.install_audit(app)
    install_security_headers(app)
    spec = make_api(app, version=app_version(), converters=(IdConverter, ArtifactNameConverter))
    register_routes(
        spec, intents.routes, runs.routes, outputs.routes, health.routes, metrics.routes, ui.routes
    )
    app.register_blueprint(events_bp)
    ui.install_ui(app)
    document_events(spec, app)
    app.register_blueprint(docs_bp)
    register_error_handlers(app)  # after make_api: kodo's handlers replace flask-smorest's
    install_rate_limits(app, settings, state_of(app).redis)
    # The body is read first, then the request waits for its turn: a slow client holds none.
    admitted = Admission(app.wsgi_app, active=settings.api_active, wait_s=settings.api_queue_s)
    app.wsgi_app = BodyDeadline(  # type: ignore[method-assign]
        admitted, timeout_s=settings.body_timeout_s, max_bytes=settings.max_body_bytes
    )
    return app
