"""Find-or-start the Postgres and Redis that the demo, the tests and CI need.

A server that really answers is reused and never touched; otherwise a private
throwaway one is started on 127.0.0.1 and recorded, so ``down`` stops only that.
"""

from __future__ import annotations

from devstack.database import ensure_database, migrate, recreate_database
from devstack.handle import DevstackError, ServiceHandle, StackPaths
from devstack.postgres_server import ensure_postgres
from devstack.redis_server import ensure_redis
from devstack.stack import down, restart, status

__all__ = [
    "DevstackError",
    "ServiceHandle",
    "StackPaths",
    "down",
    "ensure_database",
    "ensure_postgres",
    "ensure_redis",
    "migrate",
    "recreate_database",
    "restart",
    "status",
]
