"""What a repository that may run on a lone connection holds."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shared.db import direct


class PrebuiltRepo:
    """A repository whose prebuilt statements run wherever it is given: a session's
    transaction, a connection's, or alone (:func:`shared.db.direct.alone`). Its methods
    that build a statement per call need the session and are refused on a connection."""

    def __init__(self, where: direct.Where) -> None:
        self.where = where

    @property
    def session(self) -> Session:
        """For statements built per call: refused on a lone connection (TypeError)."""
        return direct.session_of(self.where)
