"""CPU per call of chosen functions, read per thread: where a worker's CPU goes.

``KODO_FN_CPU=module:qualname,...`` with ``KODO_FN_CPU_DIR=DIR`` wraps each named
function (a module's function, or a class's method, static and class methods too) in
the bench's instrumented worker and API. Each call adds the calling thread's CPU time
(``time.thread_time``: a thread the OS preempted is not charged, as a sampling profiler
charges it on this busy 2-core machine) to the function's total, inclusive of what it
calls, and a daemon thread writes the totals to ``DIR/<role>-<pid>.fncpu.json``. Two
clock reads per call: cheap enough for a dozen functions, not for a thousand.

A function another module imported by name (``from x import f``) is timed only where
it is looked up through its module or class; wrap the name where it is used.

``python -m bench.fn_cpu DIR --per N [--role worker]`` prints each function's CPU per N
(runs) and per call. Session 41 found its cuts this way: a provider request cost 481 us under load.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

SPECS = "KODO_FN_CPU"
DIRECTORY = "KODO_FN_CPU_DIR"
FLUSH_S = 1.0

Totals = dict[str, list[float]]
"""label -> [CPU seconds, calls]"""


def _resolve(spec: str) -> tuple[Any, str, Any]:
    """``module:a.b.c`` -> (the object holding ``c``, ``c``, its raw attribute)."""
    module_name, colon, qualname = spec.partition(":")
    if not colon or not module_name or not qualname:
        raise ValueError(f"{SPECS}: {spec!r} is not module:qualname")
    try:
        owner: Any = importlib.import_module(module_name)
        *path, name = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        # a class's own view, inherited names too, static and class methods unbound
        raw = (
            inspect.getattr_static(owner, name) if isinstance(owner, type) else getattr(owner, name)
        )
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{SPECS}: cannot find {spec!r}: {exc}") from exc
    return owner, name, raw


def _timed(function: Callable[..., Any], label: str, totals: Totals, lock: threading.Lock) -> Any:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent = time.thread_time() - began
            with lock:
                entry = totals.setdefault(label, [0.0, 0])
                entry[0] += spent
                entry[1] += 1

    return timed


def wrap(spec: str, totals: Totals, lock: threading.Lock) -> None:
    """Time every call of the function ``spec`` names from now on, into ``totals``."""
    owner, name, raw = _resolve(spec)
    label = spec
    if isinstance(raw, staticmethod):
        setattr(owner, name, staticmethod(_timed(raw.__func__, label, totals, lock)))
    elif isinstance(raw, classmethod):
        setattr(owner, name, classmethod(_timed(raw.__func__, label, totals, lock)))
    elif callable(raw):
        setattr(owner, name, _timed(raw, label, totals, lock))
    else:
        raise ValueError(f"{SPECS}: {spec!r} is not a function")


def _flush_forever(path: Path, totals: Totals, lock: threading.Lock) -> None:
    while True:
        time.sleep(FLUSH_S)
        with lock:
            shown = {label: list(entry) for label, entry in totals.items()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(shown))
        tmp.replace(path)


def install(specs: list[str], directory: Path, role: str) -> Totals:
    """Wrap ``specs`` and write their totals under ``directory`` until the process ends."""
    totals: Totals = {}
    lock = threading.Lock()
    for spec in specs:
        wrap(spec, totals, lock)
    path = directory / f"{role}-{os.getpid()}.fncpu.json"
    threading.Thread(
        target=_flush_forever, args=(path, totals, lock), name="kodo-fn-cpu", daemon=True
    ).start()
    return totals


def install_from_env(role: str) -> None:
    """Install iff ``KODO_FN_CPU`` and ``KODO_FN_CPU_DIR`` are set (each forked child
    installs again: threads do not survive a fork)."""
    specs = [s.strip() for s in os.environ.get(SPECS, "").split(",") if s.strip()]
    directory = os.environ.get(DIRECTORY)
    if specs and directory:
        install(specs, Path(directory), role)


def collect(directory: Path, role: str = "") -> Totals:
    """Every process's latest totals (of ``role``'s processes, if named), by function."""
    summed: Totals = {}
    for path in sorted(directory.glob(f"{role}*.fncpu.json")):
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for label, (seconds, calls) in found.items():
            entry = summed.setdefault(label, [0.0, 0])
            entry[0] += float(seconds)
            entry[1] += int(calls)
    return summed


def report(totals: Totals, per: float) -> list[str]:
    """One line per function, most CPU first: ms per ``per``, calls per ``per``, us per call."""
    lines = [f"{'function':60s} {'ms/unit':>9s} {'calls/unit':>11s} {'us/call':>9s}"]
    for label, (seconds, calls) in sorted(totals.items(), key=lambda item: -item[1][0]):
        each = seconds / calls * 1e6 if calls else 0.0
        lines.append(f"{label[:60]:60s} {seconds / per * 1e3:9.2f} {calls / per:11.2f} {each:9.1f}")
    return lines


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--per", default=1.0, show_default=True, help="Divide by this (the runs).")
@click.option("--role", default="", help="Only these processes: worker or api.")
def main(directory: Path, per: float, role: str) -> None:
    """Print the functions' CPU from DIRECTORY's totals."""
    for line in report(collect(directory, role), per):
        click.echo(line)


if __name__ == "__main__":
    main()
