"""The run page's lexing children: one serves page after page, and any that is cut off,
dies or falls out of step is replaced, never reused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from services.api import highlighting
from services.api.highlighting import Job, _Busy, _Children, highlighted
from services.api.lexing import answer

PAGE: list[Job] = [("calc.py", [["def add(a, b):", "    return a + b"], []])]


def _request(jobs: list[Job], budget_s: float = 5.0) -> bytes:
    return json.dumps({"budget_s": budget_s, "jobs": jobs}).encode()


@pytest.fixture
def children() -> Iterator[_Children]:
    pool = _Children(1)
    yield pool
    for child in pool._idle:
        child.kill()


def _first_side(answer: highlighting._Answer) -> object:
    """The first job's first side of an answer: its lexed lines, or None (plain)."""
    assert isinstance(answer.value, list)
    return answer.value[0][0]


def _idle_pids(pool: _Children) -> list[int]:
    return [child.proc.pid for child in pool._idle]


def test_one_child_answers_page_after_page(children: _Children) -> None:
    """Starting Python and Pygments cost about half a second of CPU per page; a child
    kept between pages costs it once."""
    first = children.ask(_request(PAGE), 10)
    (pid,) = _idle_pids(children)
    second = children.ask(_request([("b.sh", [["echo hi"]])]), 10)
    assert _idle_pids(children) == [pid]
    lines = _first_side(first)
    assert isinstance(lines, list)
    assert lines[0][0] == ["tok-k", "def"]
    assert second.value != first.value


def test_a_child_cut_off_at_the_deadline_is_killed_and_the_next_page_gets_a_new_one(
    children: _Children,
) -> None:
    children.ask(_request(PAGE), 10)
    (old,) = _idle_pids(children)
    stuck: list[Job] = [("Makefile", [[" " * 300_000]])]  # one token lexed in quadratic time
    with pytest.raises(subprocess.TimeoutExpired):
        children.ask(_request(stuck, budget_s=5), 0.5)
    assert children._idle == []
    with pytest.raises(ProcessLookupError):
        os.kill(old, 0)  # killed and reaped, not left lexing
    assert _first_side(children.ask(_request(PAGE), 10)) is not None
    assert _idle_pids(children) != [old]


def test_a_child_that_died_while_idle_is_not_asked(children: _Children) -> None:
    children.ask(_request(PAGE), 10)
    (pid,) = _idle_pids(children)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert _first_side(children.ask(_request(PAGE), 10)) is not None
    assert _idle_pids(children) not in ([], [pid])


def test_a_child_that_dies_mid_page_fails_that_page_only(
    children: _Children, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its exit and the tail of its stderr are what the log says (``highlight.failed``)."""
    monkeypatch.setattr(
        highlighting._Child,
        "ARGV",
        ("/bin/sh", "-c", "echo ready; read line; echo broken >&2; exit 3"),
    )
    with pytest.raises(highlighting._Lost) as lost:
        children.ask(_request(PAGE), 10)
    assert (lost.value.why, lost.value.exit_code, lost.value.said) == ("failed", 3, "broken\n")
    assert children._idle == []


@pytest.mark.parametrize(
    "said",
    ["not json", "[1]\\n[2]", "x" * 100],
    ids=["not-json", "two-lines", "no-line-end-then-exit"],
)
def test_a_child_out_of_step_is_killed_never_asked_again(
    children: _Children, monkeypatch: pytest.MonkeyPatch, said: str
) -> None:
    script = f"echo ready; read line; printf '{said}\\n'; sleep 30"
    if said.startswith("x"):
        script = f"echo ready; read line; printf '{said}'; exit 0"
    monkeypatch.setattr(highlighting._Child, "ARGV", ("/bin/sh", "-c", script))
    with pytest.raises(highlighting._Lost):
        children.ask(_request(PAGE), 10)
    assert children._idle == []


def test_a_child_is_replaced_after_serving_its_pages(
    children: _Children, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever pages made a child hold goes with it."""
    monkeypatch.setattr(highlighting, "SERVED", 2)
    children.ask(_request(PAGE), 10)
    (pid,) = _idle_pids(children)
    children.ask(_request(PAGE), 10)
    assert children._idle == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_page_waits_for_a_busy_child_no_longer_than_its_deadline(
    children: _Children,
) -> None:
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        children._slots.acquire()
        held.set()
        release.wait(10)
        children._slots.release()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        started = time.monotonic()
        with pytest.raises(_Busy):
            children.ask(_request(PAGE), 0.3)
        assert time.monotonic() - started < 5
    finally:
        release.set()
        holder.join()


def test_a_busy_page_is_shown_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    class Busy:
        def ask(self, request: bytes, timeout_s: float) -> None:
            raise _Busy

    monkeypatch.setattr(highlighting, "_children", Busy())
    jobs: list[Job] = [("busy.py", [["x = 1"], ["y = 2", "z"]])]
    assert highlighted(jobs, timeout_s=0.3) == [[None, None]]


def test_the_child_answers_each_line_it_reads() -> None:
    """The protocol: one JSON request per line in, one JSON answer per line out."""
    said = answer(_request(PAGE))
    assert said.endswith(b"\n")
    assert said.count(b"\n") == 1
    assert json.loads(said)[0][1] == []


@pytest.mark.parametrize(
    "script",
    ["sleep 30", "echo hello; sleep 30", "exit 4"],
    ids=["never-ready", "says-something-else", "dies-starting"],
)
def test_a_child_that_never_says_it_is_ready_is_killed(
    children: _Children, monkeypatch: pytest.MonkeyPatch, script: str
) -> None:
    """A new child's start (Pygments loaded: half a second, over a second on a busy
    machine) is not the page's time; a child that never gets ready is killed."""
    monkeypatch.setattr(highlighting, "START_S", 0.5)
    monkeypatch.setattr(highlighting._Child, "ARGV", ("/bin/sh", "-c", script))
    with pytest.raises((highlighting._Lost, subprocess.TimeoutExpired)):
        children.ask(_request(PAGE), 10)
    assert children._idle == []


def test_a_page_s_deadline_starts_once_its_new_child_is_ready(
    children: _Children, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page whose deadline is shorter than its new child's start is still lexed."""
    slow_start = f"sleep 1; exec {sys.executable} -m services.api.lexing"
    monkeypatch.setattr(highlighting._Child, "ARGV", ("/bin/sh", "-c", slow_start))
    assert _first_side(children.ask(_request(PAGE, budget_s=0.4), 0.5)) is not None
