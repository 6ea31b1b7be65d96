"""The API's bounds (streams, rates, header and body deadlines, plan size) hold against
real processes in the deployed shape.

The API runs as ``kodo up`` and compose run it (gunicorn, ``services.api.gunicorn_conf``:
gevent workers), beside a real worker and oc-compat, on the test database and a Redis
database of its own whose keys carry a prefix unique to this run (nothing is flushed).
Timings are printed, never asserted: the assertions are that every request is answered.
"""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devstack.kodo_procs import (
    API_CONF,
    Stack,
    issue_token,
    start_api,
    start_collector,
    start_oc_compat,
    start_worker,
    wait_worker_ready,
)
from devstack.sample_repo import create_sample_repo

pytestmark = pytest.mark.e2e

BOUNDS_REDIS_DB = 11
PER_TOKEN = 8
HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 2
SEND_TIMEOUT_S = 3  # above the header deadline, which also bounds an idle keep-alive
INTENT_RATE = 3
ANSWER_CAP = 4 * 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("bounds")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": f"{redis_url.rpartition('/')[0]}/{BOUNDS_REDIS_DB}",
        "KODO_REDIS_KEY_PREFIX": f"kodo-test-{uuid.uuid4().hex[:12]}",
        "KODO_REPO_ROOTS": str(root / "repos"),
        "KODO_WORKSPACE_DIR": str(root / "workspaces"),
        "KODO_SSE_PER_TOKEN": str(PER_TOKEN),
        "KODO_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "KODO_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "KODO_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
        "KODO_INTENT_RATE": f"{INTENT_RATE}/minute",
        "KODO_MAX_ANSWER_BYTES": str(ANSWER_CAP),
        "KODO_SCHEMA_RETRIES": "2",
        "KODO_RETRY_BACKOFF_S": "0.1",
        "OC_TIMEOUT_MS": "60000",
    }
    s = Stack(env=env, log_dir=root / "logs")
    try:
        start_oc_compat(s, seed=11)
        wait_worker_ready(start_worker(s, name="boundsworker"))
        start_collector(s)
        start_api(s)
        yield s
    finally:
        s.stop()


def bearer(stack: Stack, role: str = "admin") -> str:
    return issue_token(stack.env["DATABASE_URL"], f"bounds-{uuid.uuid4().hex[:10]}", role)


def client(stack: Stack, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.api_url, timeout=10.0, headers={"Authorization": f"Bearer {token}"}
    )


def submit(stack: Stack, http: httpx.Client, goal: str) -> str:
    repo = create_sample_repo(Path(stack.env["KODO_REPO_ROOTS"]) / uuid.uuid4().hex[:8])
    made = http.post("/intents", json={"repo": str(repo), "goal": goal})
    assert made.status_code == 201, made.text
    intent_id: str = made.json()["intentId"]
    started = http.post(f"/intents/{intent_id}/run")
    assert started.status_code == 202, started.text
    return intent_id


def wait_status(http: httpx.Client, run_id: str, wanted: set[str], deadline_s: float = 60) -> Any:
    end = time.monotonic() + deadline_s
    run: Any = {}
    while time.monotonic() < end:
        run = http.get(f"/runs/{run_id}").json()
        if run["status"] in wanted:
            return run
        time.sleep(0.2)
    pytest.fail(f"run {run_id} is {run.get('status')}, wanted {wanted}")


@pytest.fixture(scope="module")
def waiting_run(stack: Stack) -> str:
    """A run parked at waiting_input: its event stream stays open."""
    with client(stack, bearer(stack)) as http:
        run_id = submit(stack, http, "Add a docstring to calc.py")
        wait_status(http, run_id, {"waiting_input"})
    return run_id


def address(stack: Stack) -> tuple[str, int]:
    host, _, port = stack.api_url.removeprefix("http://").partition(":")
    return host, int(port)


class Stream:
    """One raw SSE connection: the status line, then held open until closed."""

    def __init__(self, stack: Stack, token: str, run_id: str) -> None:
        self.sock = socket.create_connection(address(stack), timeout=15)
        self.sock.sendall(
            f"GET /runs/{run_id}/events HTTP/1.1\r\nHost: kodo\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        self.head = b""
        while b"\r\n\r\n" not in self.head:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.head += chunk
        self.status = int(self.head.split(b" ", 2)[1]) if self.head else 0
        # 200: until the first event (the run's current state); else: the whole error body
        marker = b"event: run" if self.status == 200 else b"}}"
        if self.head:
            while marker not in self.head:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.head += chunk

    def close(self) -> None:
        self.sock.close()


def timed_get(http: httpx.Client, path: str, n: int) -> list[float]:
    took = []
    for _ in range(n):
        began = time.perf_counter()
        reply = http.get(path)
        took.append((time.perf_counter() - began) * 1000)
        assert reply.status_code == 200, reply.text
    return took


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_one_token_may_hold_only_its_streams_the_next_is_429_with_a_reason(
    stack: Stack, waiting_run: str
) -> None:
    token, other = bearer(stack, "approver"), bearer(stack, "approver")
    with ExitStack() as held:
        opened = [Stream(stack, token, waiting_run) for _ in range(PER_TOKEN)]
        for s in opened:
            held.callback(s.close)
        refused = Stream(stack, token, waiting_run)
        held.callback(refused.close)
        elsewhere = Stream(stack, other, waiting_run)
        held.callback(elsewhere.close)

        assert [s.status for s in opened] == [200] * PER_TOKEN
        assert refused.status == 429
        assert b"Retry-After:" in refused.head
        assert b"KODO_SSE_PER_TOKEN" in refused.head
        assert elsewhere.status == 200, "the limit is per token, not per API"


def test_a_stream_whose_client_hung_up_lets_go_of_its_slot_at_once(
    stack: Stack, waiting_run: str
) -> None:
    """A stream learned of a hang-up at its next write, a keepalive up to 15 s later:
    meanwhile a client at its token's limit that closed a stream and opened the next
    was refused with 429."""
    token = bearer(stack, "approver")
    with ExitStack() as held:
        opened = [Stream(stack, token, waiting_run) for _ in range(PER_TOKEN)]
        for s in opened:
            held.callback(s.close)
        assert [s.status for s in opened] == [200] * PER_TOKEN
        opened[0].close()
        began = time.monotonic()
        while True:
            again = Stream(stack, token, waiting_run)
            held.callback(again.close)
            if again.status == 200 or time.monotonic() - began > 20:
                break
            again.close()
            time.sleep(0.2)
        took = time.monotonic() - began
        print(f"\nthe slot was free again {took:.2f}s after the client hung up")
        assert again.status == 200
        assert took < 5, "at once, not at the next keepalive (15 s)"


def test_healthz_and_reads_keep_answering_with_200_streams_open(
    stack: Stack, waiting_run: str
) -> None:
    tokens = [bearer(stack, "approver") for _ in range(200 // PER_TOKEN)]
    with ExitStack() as held, client(stack, tokens[0]) as http:
        streams = []
        for token in tokens:
            for _ in range(PER_TOKEN):
                s = Stream(stack, token, waiting_run)
                held.callback(s.close)
                streams.append(s)
        assert [s.status for s in streams] == [200] * 200
        healthz = timed_get(http, "/healthz", 200)
        reads = timed_get(http, f"/runs/{waiting_run}", 200)
        print(
            f"\n200 SSE streams open: /healthz p50 {statistics.median(healthz):.1f} ms "
            f"p99 {p(healthz, 0.99):.1f} ms; GET /runs/<id> p50 {statistics.median(reads):.1f} "
            f"ms p99 {p(reads, 0.99):.1f} ms"
        )
        alive = sum(1 for s in streams if s.sock.fileno() >= 0)
        assert alive == 200


def test_slowloris_sockets_cost_no_capacity_and_are_closed_after_the_header_deadline(
    stack: Stack,
) -> None:
    stop = threading.Event()
    socks = [socket.create_connection(address(stack), timeout=10) for _ in range(64)]
    for sock in socks:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: kodo\r\n")

    def trickle() -> None:
        while not stop.wait(0.3):
            for sock in socks:
                with suppress(OSError):
                    sock.sendall(b"X-Slow: 1\r\n")

    dripper = threading.Thread(target=trickle, daemon=True)
    dripper.start()
    try:
        with httpx.Client(base_url=stack.api_url, timeout=5.0) as http:
            healthz = timed_get(http, "/healthz", 30)
        print(f"\n64 slowloris sockets: /healthz p99 {p(healthz, 0.99):.1f} ms")
        deadline = time.monotonic() + HEADER_TIMEOUT_S + 5.0
        closed = 0
        for sock in socks:  # each read ends when the server closes it (or at the deadline)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                closed += sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed == len(socks), f"{len(socks) - closed} slow sockets still held open"
    finally:
        stop.set()
        dripper.join()
        for sock in socks:
            sock.close()


def test_a_client_that_stops_reading_is_cut_off_at_the_send_timeout(stack: Stack) -> None:
    """Attack, no token needed: ask for ``/openapi.json`` (about 90 kB) many times on one
    connection with a tiny receive window and read nothing. Once the kernel's buffers are
    full the server's write makes no headway; it used to wait for good, holding the
    connection's greenlet and slot, so enough such sockets would take every slot)."""
    with httpx.Client(base_url=stack.api_url, timeout=5.0) as http:
        one = len(http.get("/openapi.json").content)
    asked = 80  # past the kernel's largest send buffer (4 MB) and the client's window
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(address(stack))
    try:
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: kodo\r\n\r\n" * asked)
        time.sleep(SEND_TIMEOUT_S + 2.0)  # reading nothing
        with httpx.Client(base_url=stack.api_url, timeout=5.0) as http:
            assert http.get("/healthz").status_code == 200
        sock.settimeout(10)
        got, ended = 0, "open"
        try:
            while chunk := sock.recv(1 << 20):
                got += len(chunk)
            ended = "closed"
        except ConnectionResetError:
            ended = "reset"
        except TimeoutError:
            pass
    finally:
        sock.close()
    print(f"\nstalled reader: {got} of at least {asked * one} bytes, then {ended}")
    assert ended in {"closed", "reset"}
    assert got < asked * one, "the server gave up before writing every response"


def test_a_request_body_trickled_slowly_is_answered_408_at_the_body_deadline(
    stack: Stack,
) -> None:
    token = bearer(stack)
    sock = socket.create_connection(address(stack), timeout=15)
    sock.sendall(
        b"POST /intents HTTP/1.1\r\nHost: kodo\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 400\r\n\r\n{"
    )
    began = time.monotonic()
    answer = b""
    sock.settimeout(0.25)
    while time.monotonic() - began < BODY_TIMEOUT_S + 8:
        with suppress(OSError):
            sock.sendall(b" ")
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        answer += chunk
    sock.close()
    took = time.monotonic() - began

    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within" in answer
    assert took < BODY_TIMEOUT_S + 5


def test_intents_over_the_rate_are_429_with_retry_after_per_token(stack: Stack) -> None:
    repo = create_sample_repo(Path(stack.env["KODO_REPO_ROOTS"]) / "rate")
    body = {"repo": str(repo), "goal": "Add a docstring to calc.py"}
    with client(stack, bearer(stack, "submitter")) as busy, client(stack, bearer(stack)) as calm:
        codes = [busy.post("/intents", json=body).status_code for _ in range(INTENT_RATE)]
        over = busy.post("/intents", json=body)
        other = calm.post("/intents", json=body)

    assert codes == [201] * INTENT_RATE
    assert over.status_code == 429
    assert int(over.headers["Retry-After"]) > 0
    assert over.json()["error"]["code"] == "too_many_requests"
    assert "KODO_INTENT_RATE" in over.json()["error"]["message"]
    assert other.status_code == 201, "another token has its own budget"


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_30_mb_off_schema_plan_is_refused_unread_and_the_worker_stays_small(
    stack: Stack,
) -> None:
    worker = stack.proc("boundsworker").popen.pid
    before = vm_hwm_mb(worker)
    with client(stack, bearer(stack)) as http:
        run_id = submit(stack, http, "Add a docstring to calc.py [oc:huge=30000000]")
        run = wait_status(http, run_id, {"failed"}, deadline_s=120)
        diagnostic = http.get(f"/runs/{run_id}/artifacts/diagnostic.json")
    peak = vm_hwm_mb(worker)
    print(f"\nworker peak RSS {before:.0f} MB before, {peak:.0f} MB after a 30 MB plan")

    assert diagnostic.status_code == 200, diagnostic.text
    attempts = diagnostic.json()["attempts"]
    assert [a["error_name"] for a in attempts] == ["TurnNotInspectable"], "never retried"
    assert f"KODO_MAX_ANSWER_BYTES={ANSWER_CAP}" in attempts[0]["error"]
    assert "TurnNotInspectable" in run["error"]
    assert peak < before + 100, f"the worker grew from {before:.0f} to {peak:.0f} MB"


def test_compose_runs_the_api_in_the_same_shape_and_flower_needs_credentials() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    api = services["api"]["command"]
    assert api[:3] == ["gunicorn", "-c", API_CONF]
    assert api[-1] == "services.api.wsgi:app"
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]


def test_compose_lets_only_the_sandboxed_services_make_the_sandboxs_namespaces() -> None:
    """The worker (verification commands) and the real daemon (`kodo oc serve`) run
    bubblewrap; nothing else gets the relaxation."""
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    relaxed = {name for name, svc in services.items() if svc.get("security_opt")}
    assert relaxed == {"worker", "opencode"}
    for name in relaxed:
        assert set(services[name]["security_opt"]) == {
            "seccomp=unconfined",
            "apparmor=unconfined",
            "systempaths=unconfined",
        }
    assert "kodo oc serve" in " ".join(services["opencode"]["command"])
