"""What a request needs, built once by ``create_app`` and stored on the Flask app."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from celery import Celery
from flask import Flask, current_app
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.clock import Clock
from shared.config import Settings
from shared.db import direct
from shared.queue import CelerySender
from shared.service.uow import UnitOfWork

EXTENSION = "kodo"


@dataclass
class ApiState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    celery: Celery
    redis: Redis
    app_version: str
    owns_celery: bool
    _closers: list[Callable[[], None]] = field(default_factory=list, init=False, repr=False)

    def single_read(self) -> AbstractContextManager[direct.Lone]:
        """A pooled connection for ONE prebuilt read-only statement, outside any
        transaction and any Session (:func:`shared.db.direct.alone`): no BEGIN and
        ROLLBACK round trips around it. Never for several statements that must agree
        with each other: each would see its own snapshot."""
        return direct.alone(self.engine)

    def uow(self) -> UnitOfWork:
        """One request's transaction; its messages go to the broker after it commits."""
        return UnitOfWork(self.sessions, CelerySender(self.celery))

    def on_close(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` when the state closes: what a request started for the app's
        lifetime (the event hub's listening thread) stops with it."""
        self._closers.append(closer)

    def close(self) -> None:
        """Release pools the factory opened and stop what was started for the app; a
        Celery app passed in belongs to the caller."""
        while self._closers:
            self._closers.pop()()
        self.redis.close()
        if self.owns_celery:
            self.celery.close()
        self.engine.dispose()


def state_of(app: Flask) -> ApiState:
    found = app.extensions.get(EXTENSION)
    if not isinstance(found, ApiState):
        raise RuntimeError("this Flask app was not built by services.api.app.create_app")
    return found


def api() -> ApiState:
    """The state of the app serving the current request."""
    return state_of(current_app)
