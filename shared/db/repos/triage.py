"""What an operator's health check (``kodo doctor``) reads: versions, idle runs, unknown
calls, and whether Postgres keeps kodo's tables' statistics."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from shared.db.models import OpenCodeCall, Run, WorkerProcess
from shared.domain.run_machine import AT_REST, RunStatus
from shared.domain.vocab import CallStatus


class UnanalyzedTable(NamedTuple):
    """A table of kodo's whose planner statistics are missing or stale."""

    name: str  # schema-qualified: app.opencode_calls
    rows: int  # live rows, as Postgres counts them
    auto: bool  # autovacuum analyzes it (on globally, not turned off for the table)


_UNANALYZED = text(
    """
    SELECT t.schemaname || '.' || t.relname, t.n_live_tup,
           current_setting('autovacuum') = 'on'
           AND NOT coalesce(c.reloptions @> ARRAY['autovacuum_enabled=false'], false)
    FROM pg_catalog.pg_stat_user_tables t JOIN pg_catalog.pg_class c ON c.oid = t.relid
    WHERE t.schemaname = 'app' AND t.n_live_tup >= :min_rows
      AND (t.last_analyze IS NULL AND t.last_autoanalyze IS NULL
           OR t.n_mod_since_analyze >= t.n_live_tup)
    ORDER BY t.n_live_tup DESC, 1
    """
)


class TriageRepo:
    def __init__(self, session: Session) -> None:
        self.session = session

    def worker_versions(self) -> dict[tuple[str, int], str]:
        """(hostname, pid) -> app_version of every worker that registered (latest wins)."""
        rows = self.session.execute(
            select(WorkerProcess.hostname, WorkerProcess.pid, WorkerProcess.app_version)
            .where(WorkerProcess.kind == "worker")
            .ext(distinct_on(WorkerProcess.hostname, WorkerProcess.pid))
            .order_by(WorkerProcess.hostname, WorkerProcess.pid, WorkerProcess.started_at.desc())
        ).all()
        return {(host, int(pid)): str(version) for host, pid, version in rows}

    def active_runs_idle_for(self, minutes: int) -> dict[str, int]:
        """Runs not ended and not updated for ``minutes`` (the database's clock), by status."""
        live = [s.value for s in RunStatus if not s.is_terminal]  # by index, not a scan
        rows = self.session.execute(
            select(Run.status, func.count())
            .where(
                Run.status.in_(live),
                Run.updated_at < func.now() - func.make_interval(0, 0, 0, 0, 0, minutes),
            )
            .group_by(Run.status)
            .order_by(Run.status)
        ).all()
        return {str(status): int(n) for status, n in rows}

    def parked_by_contract(self) -> dict[str, int]:
        """Runs at ``waiting_upgrade``, by the step contract they wait for (``?``: none)."""
        contract = func.coalesce(Run.contract_version, "?")
        rows = self.session.execute(
            select(contract, func.count())
            .where(Run.status == RunStatus.WAITING_UPGRADE.value)
            .group_by(contract)
            .order_by(contract)
        ).all()
        return {str(c): int(n) for c, n in rows}

    def unknown_calls_by_run(self) -> dict[str, int]:
        """Provider calls claimed but never recorded (declared ``unknown``), per run."""
        rows = self.session.execute(
            select(OpenCodeCall.run_id, func.count())
            .where(OpenCodeCall.status == CallStatus.UNKNOWN.value)
            .group_by(OpenCodeCall.run_id)
            .order_by(OpenCodeCall.run_id)
        ).all()
        return {str(run_id): int(n) for run_id, n in rows}

    def held_worktrees(self) -> dict[str, int]:
        """Runs whose worktree a daemon holds open (``instances_opened_at``): still moving,
        resting (to be released by the reconciler), and whose release a daemon did not
        answer. Read through ix_runs_instances_open."""
        resting = Run.status.in_([s.value for s in AT_REST])
        row = self.session.execute(
            select(
                func.count(),
                func.count().filter(resting),
                func.count().filter(resting, Run.instances_release_failed_at.is_not(None)),
            ).where(Run.instances_opened_at.is_not(None))
        ).one()
        held, rest, failed = (int(n) for n in row)
        return {"moving": held - rest, "resting": rest, "release_failed": failed}

    def unanalyzed_tables(self, min_rows: int) -> list[UnanalyzedTable]:
        """kodo's tables of at least ``min_rows`` rows that were never analyzed, or have
        changed as many rows since their last analyze as they hold, largest first."""
        rows = self.session.execute(_UNANALYZED, {"min_rows": min_rows}).all()
        return [UnanalyzedTable(str(name), int(n), bool(auto)) for name, n, auto in rows]
