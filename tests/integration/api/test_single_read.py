"""A request's token lookup is one statement outside any transaction (no BEGIN/ROLLBACK)."""

from __future__ import annotations

import pytest
from flask import Flask
from psycopg import Connection
from psycopg.pq import TransactionStatus
from sqlalchemy import text

from services.api.state import state_of
from shared.db import direct

pytestmark = pytest.mark.integration

_ONE = text("SELECT 1")


def test_a_single_read_opens_no_transaction(app: Flask) -> None:
    state = state_of(app)
    with state.single_read() as conn:
        assert direct.execute(conn, _ONE).scalar_one() == 1
        raw = conn.driver
        assert isinstance(raw, Connection)
        assert raw.info.transaction_status is TransactionStatus.IDLE  # autocommit: no BEGIN
    with state.sessions() as s:  # the request's own sessions still run in a transaction
        s.execute(text("SELECT 1"))
        raw = s.connection().connection.dbapi_connection
        assert isinstance(raw, Connection)
        assert raw.info.transaction_status is TransactionStatus.INTRANS
