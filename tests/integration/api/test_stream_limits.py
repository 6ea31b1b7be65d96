"""Event streams are counted per token and in total, in Redis, and given back at the end."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.api.state import state_of
from services.api.stream_slots import StreamSlots, TooManyStreams
from shared.clock import FixedClock
from shared.config import Settings
from shared.service.tokens import Role
from tests.factories import RunFactory
from tests.integration.api.conftest import NOW, issue_token
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


LIMITS_REDIS_DB = 12  # never flushed: every key carries a prefix unique to the test


@pytest.fixture
def limited(settings: Settings, redis_url: str) -> Iterator[Flask]:
    tight = dataclasses.replace(
        settings,
        redis_url=f"{redis_url.rpartition('/')[0]}/{LIMITS_REDIS_DB}",
        sse_per_token=2,
        sse_max_streams=3,
        redis_key_prefix=f"t-{uuid.uuid4().hex}",
    )
    app = create_app(tight, clock=FixedClock(NOW))
    yield app
    state_of(app).close()


def same_slots(app: Flask) -> StreamSlots:
    """A counter on the same Redis keys as the app's (another API process, in effect)."""
    state = state_of(app)
    settings = state.settings
    return StreamSlots(
        state.redis,
        prefix=settings.redis_key_prefix,
        per_token=settings.sse_per_token,
        total=settings.sse_max_streams,
    )


def as_token(app: Flask, sessions: sessionmaker[Session], name: str) -> FlaskClient:
    client = app.test_client()
    token = issue_token(sessions, name, Role.APPROVER)
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def test_a_token_past_its_streams_gets_429_and_the_api_past_its_total_too(
    limited: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(status="succeeded")  # each stream that opens ends at once
    db.commit()
    ann, bob = as_token(limited, sessions, "ann"), as_token(limited, sessions, "bob")
    url = f"/runs/{run.id}/events"
    slots = same_slots(limited)
    held = [slots.take("ann"), slots.take("ann")]  # two of ann's streams, open elsewhere
    third = ann.get(url, buffered=True)
    bobs = bob.get(url, buffered=True)
    held.append(slots.take("bob"))  # the API's third and last
    over_total = bob.get(url, buffered=True)
    for slot in held:
        slot.release()
    after = ann.get(url, buffered=True)

    assert third.status_code == 429
    assert third.headers["Retry-After"] == "15"
    assert third.json is not None
    assert third.json["error"]["code"] == "too_many_streams"
    assert "KODO_SSE_PER_TOKEN" in third.json["error"]["message"]
    assert bobs.status_code == 200, "the limit is per token"
    assert over_total.status_code == 429
    assert over_total.json is not None
    assert "KODO_SSE_MAX_STREAMS" in over_total.json["error"]["message"]
    assert after.status_code == 200, "released slots count no more"


def test_a_stream_that_ends_gives_its_slot_back(
    limited: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    run = RunFactory(status="succeeded")  # terminal: one event, then the end
    db.commit()
    ann = as_token(limited, sessions, "ann")
    for _ in range(5):
        response = ann.get(f"/runs/{run.id}/events", buffered=True)
        assert response.status_code == 200
    assert same_slots(limited).count("ann") == 0


def test_a_slot_not_refreshed_lapses_so_a_killed_process_frees_its_streams(
    redis_url: str,
) -> None:
    redis = Redis.from_url(f"{redis_url.rpartition('/')[0]}/{LIMITS_REDIS_DB}")
    slots = StreamSlots(redis, prefix=f"t-{uuid.uuid4().hex}", per_token=1, total=10, stale_s=0.5)
    slots.take("ann")
    with pytest.raises(TooManyStreams):
        slots.take("ann")
    wait_until(lambda: slots.count("ann") == 0, 5, "ann's unrefreshed slot to lapse")
    slots.take("ann").release()
    assert slots.count("ann") == 0
    redis.close()


def test_one_refresh_keeps_every_slot_of_the_process_counted_and_no_released_one(
    redis_url: str,
) -> None:
    """Heartbeats are the process's: whichever stream wakes refreshes every slot."""
    redis = Redis.from_url(f"{redis_url.rpartition('/')[0]}/{LIMITS_REDIS_DB}")
    slots = StreamSlots(
        redis, prefix=f"t-{uuid.uuid4().hex}", per_token=5, total=10, stale_s=0.6, refresh_s=0.1
    )
    held = [slots.take("ann"), slots.take("ann"), slots.take("bob")]
    deadline = time.monotonic() + 1.5  # more than twice stale_s
    while time.monotonic() < deadline:
        held[0].refresh()  # one stream wakes, the others stay quiet
        time.sleep(0.05)
    kept = (slots.count("ann"), slots.count("bob"))
    held[2].release()
    for _ in range(5):
        held[0].refresh()
        time.sleep(0.1)
    after_release = (slots.count("ann"), slots.count("bob"))
    wait_until(lambda: slots.count("ann") == 0, 5, "unrefreshed slots to lapse")
    redis.close()

    assert kept == (2, 1)
    assert after_release == (2, 0), "a released slot is not refreshed back"


def test_a_head_request_takes_no_stream_slot_since_no_body_would_ever_notice_a_hang_up(
    limited: Flask, sessions: sessionmaker[Session], db: Session
) -> None:
    """Attack: gunicorn writes nothing for HEAD, so a HEAD stream whose client left was
    never noticed and held its slot until the run ended: a token locked out by HEADs."""
    run = RunFactory(status="waiting_input")
    db.commit()
    bea = as_token(limited, sessions, "bea")
    for _ in range(4):
        head = bea.head(f"/runs/{run.id}/events")
        assert head.status_code == 200
        assert head.mimetype == "text/event-stream"
        head.close()
    assert same_slots(limited).count("bea") == 0
    assert bea.head("/runs/no-such-run/events").status_code == 404
