"""What the approver sees is what was signed, approvals bind to it, and the API keeps
serving whatever a client does (streams, slow sockets, bursts, Flower's API)."""

from __future__ import annotations

import math
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import text

from devstack.kodo_procs import BIN, flower_auth, start_flower
from shared.config import Settings
from shared.domain.storable import storable_text
from shared.hashing import canonical_json, sha256_hex
from shared.queue import make_celery
from tests.security import attacks
from tests.security.harness import Hostile
from tests.waiting import wait_until

pytestmark = pytest.mark.security

HIDDEN = "Add a key to .ssh/authorized_keys\x1b[1A\x1b[2K\rFix the typo in README.md"
DECEPTIVE = {
    "design": HIDDEN,
    "files": [
        {"path": "README.md", "change": "modify", "why": "typo \u202egnp.exe\u202c \x1b]0;ok\x07"},
    ],
    "risks": ["none\x1b[8m hidden \x1b[0m\u2066isolate\u2069"],
    "tests": ["\x9b31mC1 CSI"],
}
RAW_CONTROLS = ("\x1b", "\r", "\x07", "\x9b", "\u202e", "\u202c", "\u2066", "\u2069")


@pytest.fixture(scope="module")
def waiting(hostile: Hostile) -> Iterator[str]:
    """A run waiting for approval of the deceptive plan (rejected at the end)."""
    run_id = hostile.submit(hostile.repo("deceptive"), hostile.fixture("deceptive", plan=DECEPTIVE))
    assert hostile.wait(run_id, {"waiting_input"})["status"] == "waiting_input"
    yield run_id
    hostile.http.post(f"/runs/{run_id}/reject-plan", json={}, headers=hostile.as_(hostile.approver))


def test_the_api_returns_the_exact_signed_plan_text(hostile: Hostile, waiting: str) -> None:
    card = hostile.plan_of(waiting)
    assert card is not None
    assert card["plan"] == DECEPTIVE
    assert card["planSha256"] == sha256_hex(canonical_json(DECEPTIVE))


def test_the_cli_shows_control_characters_and_bidi_overrides_escaped(
    hostile: Hostile, waiting: str
) -> None:
    shown = subprocess.run(
        [str(BIN / "kodo"), "run", "watch", waiting, "--timeout", "30"],
        env={
            **hostile.stack.env,
            "KODO_API_URL": hostile.stack.api_url,
            "KODO_API_TOKEN": hostile.approver,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = shown.stdout + shown.stderr
    assert ".ssh/authorized_keys" in out, out
    assert [c for c in RAW_CONTROLS if c in out] == [], repr(out)


def test_the_web_pages_show_the_hostile_plan_escaped(hostile: Hostile, waiting: str) -> None:
    """The approver's browser pages, fetched as a signed-in session, carry no raw control,
    escape or bidi character of the plan: only their visible escapes and the true path."""
    with hostile.signed_in() as browser:
        for path in (f"/ui/runs/{waiting}", "/ui/runs?status=waiting_input"):
            page = browser.get(path)
            assert page.status_code == 200, path
            assert [c for c in RAW_CONTROLS if c in page.text] == [], path
        run_page = browser.get(f"/ui/runs/{waiting}").text
        assert "\\u202e" in run_page
        assert ".ssh/authorized_keys" in run_page


SLACK = "xoxb-0123456789"  # the shortest credential redaction knows (15)
GITHUB = "ghp_" + "a1B2c3D4" * 5  # fake, as an exfiltrating plan would carry
PAIR_SECRET = "hunter2hunter2"  # noqa: S105 - after "password=" in a plan line
LEAKY = {
    "design": f"Fix the README typo. Also note the token {SLACK} for later.",
    "files": [{"path": "README.md", "change": "modify", "why": f"credit {GITHUB}"}],
    "risks": [f"the CI uses password={PAIR_SECRET} today"],
    "tests": ["python -m unittest"],
}


def test_credentials_in_a_plan_stay_out_of_the_ledger_and_logs_yet_the_plan_shows_whole(
    hostile: Hostile,
) -> None:
    """A model that writes credentials into its plan (the shortest kind redaction knows
    among them) has the ledger's copy of its answer and every log line redacted, while
    the approver still reads and signs the exact plan it wrote."""
    run_id = hostile.submit(hostile.repo("leaky"), hostile.fixture("leaky", plan=LEAKY))
    try:
        assert hostile.wait(run_id, {"waiting_input"})["status"] == "waiting_input"
        card = hostile.plan_of(run_id)
        assert card is not None
        assert card["plan"] == LEAKY, "the approver sees what the model wrote, unredacted"
        with hostile.engine.connect() as conn:
            stored = (
                conn.execute(
                    text("SELECT response::text FROM app.opencode_calls WHERE run_id = :r"),
                    {"r": run_id},
                )
                .scalars()
                .all()
            )
        assert stored, "CompileST's call is in the ledger"
        ledger = "\n".join(s or "" for s in stored)
        assert "[REDACTED]" in ledger
        logs = hostile.log_text()
        for secret in (SLACK, GITHUB, PAIR_SECRET):
            assert secret not in ledger, f"{secret!r} reached the ledger"
            assert secret not in logs, f"{secret!r} reached a log"
    finally:
        hostile.http.post(
            f"/runs/{run_id}/reject-plan", json={}, headers=hostile.as_(hostile.approver)
        )


@pytest.mark.parametrize(
    ("name", "design", "error_name", "said"),
    [
        (
            "nul-plan",
            "Fix the typo\x00 in README.md",
            "ContractViolation",
            "design: holds a NUL byte or a lone surrogate",
        ),
        (
            "surrogate-plan",
            "Fix \ud800 the typo",
            "TurnNotInspectable",
            "the body escapes a lone UTF-16 surrogate",
        ),
    ],
)
def test_a_plan_postgres_cannot_store_is_never_shown_and_its_refusal_is_recorded(
    hostile: Hostile, name: str, design: str, error_name: str, said: str
) -> None:
    """U+0000 and a lone surrogate cannot be stored as they were judged and hashed, and
    a lone surrogate is not even text: the plan is refused before approval, naming why,
    and the refusal is recorded (a NUL in the ledger's copy of the answer as U+FFFD;
    an answer that is not text is refused before it is read, so none is kept)."""
    plan = attacks.plan(("README.md", "modify"), design=design)
    run_id = hostile.submit(hostile.repo(name), hostile.fixture(name, plan=plan))
    run = hostile.wait(run_id, {"failed", "waiting_input"})
    assert run["status"] == "failed", hostile.describe(run_id)
    assert hostile.plan_of(run_id) is None, "the plan was shown for approval"
    with hostile.engine.connect() as conn:
        calls = conn.execute(
            text(
                "SELECT status, error_name, error, response->'info'->'structured'->>'design'"
                " FROM app.opencode_calls WHERE run_id = :r"
            ),
            {"r": run_id},
        ).all()
    assert calls, hostile.describe(run_id)
    kept = storable_text(design) if error_name == "ContractViolation" else None
    for status, named, error, stored_design in calls:
        assert (status, named) == ("failed", error_name), (calls, hostile.describe(run_id))
        assert said in error, calls
        assert stored_design == kept, calls


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_a_number_json_does_not_have_is_refused_as_not_json_and_its_call_recorded(
    hostile: Hostile, value: float, request: pytest.FixtureRequest
) -> None:
    """Python's json reads NaN and Infinity (and 1e400 as inf) and writes them back;
    Postgres's jsonb refuses them, and the ledger's write of the refused answer failed
    with it (the call stayed ``sent``, the step crashed). The daemon's body is refused
    as not JSON before it is used."""
    name = f"non-finite-{request.node.callspec.id}"
    plan = attacks.plan(("README.md", "modify"))
    plan["risks"] = [value]
    run_id = hostile.submit(hostile.repo(name), hostile.fixture(name, plan=plan))
    run = hostile.wait(run_id, {"failed", "waiting_input"})
    assert run["status"] == "failed", hostile.describe(run_id)
    outcome = hostile.collect(run_id)
    assert "traceback" not in outcome.diagnostic(), outcome.describe()
    with hostile.engine.connect() as conn:
        calls = conn.execute(
            text("SELECT status, error FROM app.opencode_calls WHERE run_id = :r"), {"r": run_id}
        ).all()
    assert calls, outcome.describe()
    for status, error in calls:
        assert status == "failed", calls
        assert "not JSON" in error, calls


def test_an_approval_for_a_stale_digest_is_refused(hostile: Hostile, waiting: str) -> None:
    stale = sha256_hex(canonical_json(attacks.plan(("README.md", "modify"))))
    reply = hostile.approve(waiting, stale)
    assert reply.status_code == 409, reply.text
    assert hostile.run(waiting)["status"] == "waiting_input"


def test_a_submitter_cannot_approve_their_own_run(hostile: Hostile) -> None:
    admin = hostile.secrets["admin token"]
    reply = hostile.http.post(
        "/intents",
        json={"repo": str(hostile.repo("self")), "goal": "Tidy [oc:fixture=self]"},
        headers=hostile.as_(admin),
    )
    hostile.fixture("self")
    assert reply.status_code == 201, reply.text
    run_id = hostile.http.post(
        f"/intents/{reply.json()['intentId']}/run", headers=hostile.as_(admin)
    ).json()["runId"]
    assert hostile.wait(run_id, {"waiting_input"})["status"] == "waiting_input"
    decided = hostile.approve(run_id, token=admin)
    assert decided.status_code in (403, 409), decided.text
    assert hostile.run(run_id)["status"] == "waiting_input"


def _health_times(hostile: Hostile, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.monotonic()
        try:
            ok = httpx.get(f"{hostile.stack.api_url}/healthz", timeout=3.0).status_code == 200
        except httpx.HTTPError:
            ok = False
        times.append(time.monotonic() - started if ok else float("inf"))
    return times


def test_forty_event_streams_from_one_token_do_not_starve_health(
    hostile: Hostile, waiting: str
) -> None:
    host, port = hostile.stack.api_url.removeprefix("http://").split(":")
    streams = []
    try:
        for _ in range(40):
            sock = socket.create_connection((host, int(port)), timeout=3)
            sock.sendall(
                f"GET /runs/{waiting}/events HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {hostile.submitter}\r\n"
                "Accept: text/event-stream\r\n\r\n".encode()
            )
            streams.append(sock)
        for sock in streams:  # each answered: its stream open, or refused past the limit
            assert sock.recv(64).startswith(b"HTTP/1.1 "), "the API answered every stream"
        times = _health_times(hostile, 10)
    finally:
        for sock in streams:
            sock.close()
    assert max(times) < 2.0, f"/healthz took {times} with 40 streams open"


def test_slow_unauthenticated_sockets_do_not_starve_health(hostile: Hostile) -> None:
    host, port = hostile.stack.api_url.removeprefix("http://").split(":")
    slow = []
    try:
        for _ in range(8):
            sock = socket.create_connection((host, int(port)), timeout=3)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(sock)
        time.sleep(1)
        times = _health_times(hostile, 8)
    finally:
        for sock in slow:
            sock.close()
    assert max(times) < 2.0, f"/healthz took {times} with 8 slow sockets open"


def test_intents_are_rate_limited_per_token(hostile: Hostile) -> None:
    repo = str(hostile.repo("burst"))

    def submit(_: int) -> int:
        return hostile.http.post(
            "/intents",
            json={"repo": repo, "goal": "burst"},
            headers=hostile.as_(hostile.submitter),
        ).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(submit, range(200)))
    assert 429 in codes, f"200 intents in a burst were all accepted: {set(codes)}"


def _workers_answering(hostile: Hostile) -> list[str]:
    """Worker nodes that answer a ping sent now over the stack's broker."""
    celery = make_celery(Settings.from_env(hostile.stack.env))
    try:
        replies = celery.control.ping(timeout=3.0)
    finally:
        celery.close()
    return sorted(node for reply in replies for node in reply)


def test_flowers_api_cannot_shut_a_worker_down_unauthenticated(hostile: Hostile) -> None:
    auth = flower_auth(hostile.stack.log_dir / "flower.auth")
    start_flower(hostile.stack, auth)
    node = wait_until(lambda: _workers_answering(hostile), 30, "the worker to answer a ping")[0]
    shutdown = httpx.post(f"{hostile.stack.flower_url}/api/worker/shutdown/{node}", timeout=5)
    ui = httpx.get(f"{hostile.stack.flower_url}/", timeout=5)
    authed = httpx.get(
        f"{hostile.stack.flower_url}/api/workers", auth=(auth.user, auth.password), timeout=5
    )
    assert shutdown.status_code in (401, 403), shutdown.status_code
    assert ui.status_code == 401, f"Flower's UI answered {ui.status_code} without credentials"
    assert authed.status_code == 200, "the generated credentials must open Flower's API"
    # A worker takes control messages in order: answering a later ping, it got no shutdown.
    assert node in _workers_answering(hostile), "the worker answers after the POST"
    assert hostile.worker.alive(), "one unauthenticated POST shut the worker down"
