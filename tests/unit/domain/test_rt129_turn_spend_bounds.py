"""Red-team helper-129: reports TurnSpend (shared/domain/turn_spend.py) and the collector's
reader (services/worker/collector.py ``assistant_usage``) drop, so a running turn passes
KODO_CALL_TOKEN_BOUND unstopped. A misbehaving (or hostile, or merely different) daemon
chooses the session ids, message ids and number of messages it reports."""

from __future__ import annotations

from services.worker.collector import EndedSessions, _read_ended
from shared.domain.turn_spend import MESSAGES_TRACKED, SESSIONS_TRACKED, Spent, TurnSpend
from shared.opencode.events import OcEvent

BOUND = 200_000


def test_rt129_a_flood_of_other_sessions_evicts_a_running_turns_count() -> None:
    """kodo's turn ses_run used 190,000 tokens; the daemon then reports one message of
    each of 5,000 sessions that are no call of kodo's (SESSIONS_TRACKED): the oldest,
    kodo's turn, is forgotten, and its next 150,000-token step is counted alone."""
    spend = TurnSpend(BOUND)
    assert spend.see("ses_run", "m1", Spent(190_000)) is None
    for i in range(SESSIONS_TRACKED):
        spend.see(f"ses_noise{i}", "m1", Spent(1))
    assert spend.see("ses_run", "m2", Spent(150_000)) == Spent(340_000)


def test_rt129_messages_past_the_tracked_count_are_free() -> None:
    """64 small messages (MESSAGES_TRACKED) then large ones: every message past the 64th
    is ignored (``see`` returns None before adding it), so the turn runs on unstopped."""
    spend = TurnSpend(BOUND)
    for i in range(MESSAGES_TRACKED):
        assert spend.see("ses_1", f"m{i}", Spent(1_000)) is None
    used = [spend.see("ses_1", f"big{i}", Spent(100_000)) for i in range(5)]
    assert used[-1] is not None, used
    assert used[-1].tokens >= 64_000 + 500_000, used


def _assistant(session_id: str, message_id: str, total: int) -> OcEvent:
    info = {
        "id": message_id,
        "sessionID": session_id,
        "role": "assistant",
        "tokens": {"input": total, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}},
    }
    return OcEvent("message.updated", {"sessionID": session_id, "info": info}, "e")


def test_rt129_a_message_id_longer_than_128_chars_is_not_counted() -> None:
    """ID_CHARS_MAX is the width of the ledger's session_id column: no reason to drop
    a MESSAGE whose id is longer (its session is kodo's). A daemon that names its
    messages with 129+ characters is never counted, so never stopped."""
    long_id = "msg_" + "x" * 200
    stream = [_assistant("ses_1", long_id + str(i), 100_000) for i in range(5)]
    ended = EndedSessions()
    _read_ended(iter(stream), ended, TurnSpend(BOUND))  # type: ignore[arg-type]
    taken = ended.take(10, timeout_s=0)
    assert taken is not None
    assert [s for s, _ in taken.over] == ["ses_1"]
