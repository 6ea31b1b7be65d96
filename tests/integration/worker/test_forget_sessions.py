"""A session whose delete the daemon did not answer is deleted again by the reconciler,
on real Postgres and oc-compat (``[oc:delete-fails=N]``: the session's next N deletes
answer HTTP 500 and keep it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import text

from services.worker.cancel import abort_inflight_calls
from services.worker.forget import forget_sessions
from services.worker.runtime import Runtime
from services.worker.steps.base import run_step
from services.worker.steps.compile import compile_step
from shared.db.repos.sessions_to_forget import ForgetRepo
from shared.domain.run_machine import StepId
from shared.opencode.errors import classify_http_error
from shared.service.runs import cancel_run
from tests.integration.worker.conftest import RuntimeFactory, new_run, only_call, uow

pytestmark = pytest.mark.integration


def _kept(rt: Runtime) -> list[dict[str, object]]:
    with rt.sessions() as s:
        rows = s.execute(
            text(
                "SELECT session_id, daemon, directory, reason, attempts, last_error,"
                " next_at > statement_timestamp() AS waiting FROM app.sessions_to_forget"
                " ORDER BY id"
            )
        ).mappings()
        return [dict(row) for row in rows]


def _at_daemon(oc_url: str, call: dict[str, object]) -> bool:
    found = httpx.get(
        f"{oc_url}/session/{call['session_id']}", params={"directory": call["directory"]}
    )
    return found.status_code == 200


def _make_due(rt: Runtime) -> None:
    with uow(rt) as work:
        work.session.execute(text("UPDATE app.sessions_to_forget SET next_at = now()"))


def _planned_with_deletes_failing(rt: Runtime, repo: Path, failures: int) -> dict[str, object]:
    """A run planned (CompileST answered and recorded) whose session's next
    ``failures`` deletes the daemon refuses; its call's row."""
    run_id = new_run(rt, repo, f"Add multiply to calc.py [oc:delete-fails={failures}]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "waiting_input"
    return only_call(rt, run_id)


def test_a_failed_delete_is_kept_and_the_next_pass_deletes_the_session(
    rt: Runtime, oc_url: str, repo: Path
) -> None:
    call = _planned_with_deletes_failing(rt, repo, 1)
    assert call["status"] == "succeeded", "the answer is recorded whatever the delete did"
    assert _at_daemon(oc_url, call), "the daemon kept the session"
    [kept] = _kept(rt)
    assert (kept["session_id"], kept["directory"]) == (call["session_id"], call["directory"])
    assert "UnknownError" in str(kept["reason"])

    assert forget_sessions(rt) == [call["session_id"]]
    assert not _at_daemon(oc_url, call)
    assert _kept(rt) == []
    assert forget_sessions(rt) == [], "nothing left to delete"


def test_a_delete_that_fails_again_waits_longer_before_the_next_try(
    rt: Runtime, oc_url: str, repo: Path
) -> None:
    call = _planned_with_deletes_failing(rt, repo, 2)

    assert forget_sessions(rt) == [], "the daemon refused again"
    [kept] = _kept(rt)
    assert (kept["attempts"], kept["waiting"]) == (1, True)
    assert "UnknownError" in str(kept["last_error"])
    assert forget_sessions(rt) == [], "not asked again before its pause ends"
    assert _kept(rt)[0]["attempts"] == 1

    _make_due(rt)
    assert forget_sessions(rt) == [call["session_id"]]
    assert not _at_daemon(oc_url, call)
    assert _kept(rt) == []


def test_a_session_the_daemon_no_longer_has_is_forgotten(
    rt: Runtime, oc_url: str, repo: Path
) -> None:
    call = _planned_with_deletes_failing(rt, repo, 1)
    httpx.delete(f"{oc_url}/session/{call['session_id']}", params={"directory": call["directory"]})
    assert not _at_daemon(oc_url, call), "gone meanwhile (a daemon that restarted without it)"

    assert forget_sessions(rt) == [call["session_id"]]
    assert _kept(rt) == []


def test_a_session_on_a_daemon_no_longer_configured_is_dropped(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    rt = make_rt()
    _planned_with_deletes_failing(rt, repo, 1)
    with uow(rt) as work:
        work.session.execute(
            text("UPDATE app.sessions_to_forget SET daemon = 'http://127.0.0.1:9'")
        )
    elsewhere = make_rt()  # configured for oc_url only

    assert forget_sessions(elsewhere) == []
    assert _kept(rt) == [], "no daemon of this worker can reach it: not tried forever"


def test_a_cancels_delete_that_failed_is_kept_too(
    make_rt: RuntimeFactory, oc_url: str, repo: Path
) -> None:
    rt = make_rt(oc_async=True)
    run_id = new_run(rt, repo, "Add multiply to calc.py [oc:slow=60000] [oc:delete-fails=1]")
    assert run_step(rt, StepId.COMPILE, run_id, compile_step) == "parked"
    with uow(rt) as work:
        cancel_run(work, run_id, now=rt.clock.now())
    call = only_call(rt, run_id)

    assert abort_inflight_calls(rt, run_id) == [call["session_id"]]
    assert only_call(rt, run_id)["status"] == "aborted"
    assert _at_daemon(oc_url, call)
    assert [k["session_id"] for k in _kept(rt)] == [call["session_id"]]

    assert forget_sessions(rt) == [call["session_id"]]
    assert not _at_daemon(oc_url, call)


class _RefusingClient:
    """A daemon whose delete of ``ses_poison`` fails with an error holding U+0000."""

    def __init__(self) -> None:
        self.tried: list[str] = []

    def delete_session(self, session_id: str, *, directory: str) -> bool:
        self.tried.append(session_id)
        if session_id == "ses_poison":
            raise classify_http_error(
                500, {"name": "UnknownError", "data": {"message": "boom\x00 after a NUL"}}
            )
        return True


@pytest.fixture
def forget_rows_emptied(rt: Runtime) -> Iterator[None]:
    """No row kept to forget before or after the test: the rows a test leaves (no run
    owns them, so no TRUNCATE cascades to them) would be the next test's."""

    def empty() -> None:
        with uow(rt) as work:
            work.session.execute(text("DELETE FROM app.sessions_to_forget"))

    empty()
    yield
    empty()


def _on_two_daemons(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, *, reason: str
) -> _RefusingClient:
    """``ses_poison`` kept to delete on one daemon, ``ses_ok`` on another (a daemon whose
    delete fails is not asked again in the same pass), both answered by one client."""
    client = _RefusingClient()
    daemons = [SimpleNamespace(url=f"http://daemon-{n}", client=client) for n in range(2)]
    monkeypatch.setattr(rt.daemons, "of", lambda url: daemons[url == "http://daemon-1"])
    with uow(rt) as work:
        for session_id, url in (("ses_poison", "http://daemon-0"), ("ses_ok", "http://daemon-1")):
            ForgetRepo(work.session).remember(session_id, url, "/w", reason)
    return client


@pytest.mark.usefixtures("forget_rows_emptied")
def test_a_daemons_error_holding_a_nul_is_kept_and_never_wedges_the_pass(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error was kept as the daemon wrote it: Postgres refused the row's update, the
    pass died on it, and the row, never paused, came first at every pass (a red-team
    pass: no session after it was ever deleted)."""
    client = _on_two_daemons(rt, monkeypatch, reason="first try\x00")

    assert forget_sessions(rt) == ["ses_ok"]
    assert client.tried == ["ses_poison", "ses_ok"]
    [kept] = _kept(rt)
    assert (kept["session_id"], kept["attempts"], kept["waiting"]) == ("ses_poison", 1, True)
    assert "boom\ufffd after a NUL" in str(kept["last_error"])
    assert kept["reason"] == "first try\ufffd"


@pytest.mark.usefixtures("forget_rows_emptied")
def test_a_failure_the_database_refuses_to_record_is_logged_and_the_pass_goes_on(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the reason a row's failure cannot be recorded (here a trigger refusing
    it), the pass tries the rows after it: the refused row, never paused, would come
    first at every pass."""
    _on_two_daemons(rt, monkeypatch, reason="first try")
    with uow(rt) as work:
        work.session.execute(text(REFUSE_UPDATES))
    try:
        assert forget_sessions(rt) == ["ses_ok"]
        [kept] = _kept(rt)
        assert (kept["session_id"], kept["attempts"]) == ("ses_poison", 0)
    finally:
        with uow(rt) as work:
            work.session.execute(text(REFUSE_UPDATES_DROPPED))


REFUSE_UPDATES = """
CREATE FUNCTION app.test_refuse_forget_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22000'; END $$;
CREATE TRIGGER test_refuse_forget_update BEFORE UPDATE ON app.sessions_to_forget
FOR EACH ROW EXECUTE FUNCTION app.test_refuse_forget_update();
"""
REFUSE_UPDATES_DROPPED = """
DROP TRIGGER test_refuse_forget_update ON app.sessions_to_forget;
DROP FUNCTION app.test_refuse_forget_update();
"""
