"""Find-or-start the Postgres and Redis that the demo, the tests and CI need.

A server that really answers is reused and never touched; otherwise a private
throwaway one is started on 127.0.0.1 and recorded, so ``down`` stops only that.

The package itself imports nothing: the CLI's client commands import
:mod:`devstack.handle` (to find a ``kodo up`` home) and must not pay for alembic,
SQLAlchemy and psycopg on every ``kodo run list``. Import from the modules:
:mod:`devstack.database` (ensure, migrate, recreate), :mod:`devstack.postgres_server`,
:mod:`devstack.redis_server`, :mod:`devstack.stack` (down, restart, status) and
:mod:`devstack.handle` (DevstackError, ServiceHandle, StackPaths).
"""
