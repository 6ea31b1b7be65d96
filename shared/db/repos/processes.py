"""The processes that said who they are at start (``app.processes``)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shared.db.models import WorkerProcess


class ProcessRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def record(
        self, *, kind: str, hostname: str, pid: int, app_version: str, migration_head: str
    ) -> None:
        self.session.add(
            WorkerProcess(
                kind=kind,
                hostname=hostname,
                pid=pid,
                app_version=app_version,
                migration_head=migration_head,
            )
        )
        self.session.flush()
