"""Red-team helper-129: tokens written to the provider's prompt cache are in no count.

OpenCode's ``Session.getUsage`` reports ``tokens.input`` as the UNCACHED input only:
cache reads and cache writes are split out (``input = inputTokens`` for anthropic/bedrock,
whose API already excludes both; ``inputTokens - cacheRead - cacheWrite`` otherwise).
With Anthropic (the README's own setup: ``--price cache_write=3.75``) OpenCode puts
cache breakpoints on the last messages, so every new token of a step (a file the model
just read, its own output) is sent as a cache WRITE (``input`` is 1-2 tokens). kodo's
``TokenUsage.total`` (shared/opencode/messages.py) is input + output + reasoning +
cache_read: the write is dropped from ``total_tokens``, from the ledger's spent_tokens,
from the run's token budget and from the collector's running count. A model that reads
250,000 tokens of the hostile repository in parallel and answers in the next step is
counted ~10,000 tokens and never meets the 200,000 bound.
"""

from __future__ import annotations

from services.worker.collector import EndedSessions, _read_ended, assistant_usage
from shared.domain.turn_spend import Spent, TurnSpend
from shared.opencode.events import OcEvent
from shared.opencode.turn_inspection import usage_of

# the step after a parallel read of large files, as OpenCode reports it on Anthropic
STEP = {
    "id": "msg_2",
    "sessionID": "ses_1",
    "role": "assistant",
    "tokens": {
        "input": 2,
        "output": 300,
        "reasoning": 0,
        "cache": {"read": 10_000, "write": 250_000},
    },
    "cost": 0.9675,  # 2*3 + 300*15 + 10,000*0.3 + 250,000*3.75, per million
}
SENT = 2 + 300 + 10_000 + 250_000


def test_rt129_a_steps_cache_writes_are_counted_in_its_total() -> None:
    assert usage_of(STEP)["total_tokens"] == SENT  # today: 10,302


def test_rt129_a_turn_whose_tokens_went_to_the_cache_is_stopped_by_the_bound() -> None:
    assert assistant_usage(OcEvent("message.updated", {"info": STEP}, "e")) == (
        "ses_1",
        "msg_2",
        Spent(SENT, 967_500),
    )
    ended = EndedSessions()
    _read_ended(iter([OcEvent("message.updated", {"info": STEP}, "e")]), ended, TurnSpend(200_000))  # type: ignore[arg-type]
    taken = ended.take(10, timeout_s=0)
    assert taken is not None
    assert taken.over == [("ses_1", Spent(SENT, 967_500))]
