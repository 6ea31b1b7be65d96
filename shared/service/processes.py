"""Every process says who it is at start, and refuses a database of another schema."""

from __future__ import annotations

import os
import socket

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from shared.db.repos.processes import ProcessRepo
from shared.db.schema_version import assert_schema_current
from shared.version import app_version


def register_process(engine: Engine, kind: str) -> str:
    """Check the migration head (raises SchemaMismatch) and record this process."""
    head = assert_schema_current(engine)
    with Session(engine) as s, s.begin():
        ProcessRepo(s).record(
            kind=kind,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            app_version=app_version(),
            migration_head=head,
        )
    return head
