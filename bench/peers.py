"""``--peers DIR``: kodo's base rows against the durable-execution reference (DBOS).

DIR is a result folder of ``../shared/peers/run_all.sh DIR``: one JSON file per peer,
``DIR/dbos.json`` for DBOS 3.4 in-process (steps checkpointed in Postgres, the provider a
stub that answers at once). Only the figures are read here, never the peers' code. The
machine's speed drifts, so the folder should come from the same minutes as this run.

Comparable rows: submit->waiting p50 and approve->done p50 (kodo's with and without the
run's git and verification, which the reference's stub steps do not do), runs/s with
the same number at once, and CPU per run (DBOS's all-in figure: its one process,
Postgres, Redis; kodo's own, and kodo's all-in).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .floor import FLOOR_ROW
from .report import Row, at_most

PEER = "dbos"
WAITING_RATIO = 1.0  # issue 11: without git, submit->waiting p50 <= 1.0x DBOS
DONE_RATIO = 1.5  # and approve->done p50 <= 1.5x DBOS
OWN_CPU_MS = 40.0  # kodo's own CPU per run <= 40 ms


class PeerError(ValueError):
    """The folder holds no usable DBOS result."""


@dataclass(frozen=True)
class Peer:
    """The figures of one peer's run that kodo's rows compare with."""

    path: Path
    submit_to_waiting_p50: float
    approve_to_done_p50: float
    runs_per_s: float
    in_flight: int
    cpu_ms_per_run: float
    other_load_pct: float | None

    @classmethod
    def load(cls, folder: Path, peer: str = PEER) -> Peer:
        path = folder / f"{peer}.json"
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise PeerError(f"{path}: {exc}") from exc
        try:
            lat, put = body["latency_ms"], body["throughput"]
            other = put.get("cpu_ms_per_run", {}).get("foreign_busy_pct")
            return cls(
                path,
                float(lat["submit_to_waiting"]["p50"]),
                float(lat["approve_to_done"]["p50"]),
                float(put["runs_per_s"]),
                int(put["n"]),
                float(put["cpu_ms_per_run"]["total"]),
                None if other is None else float(other),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PeerError(f"{path}: not a peer result ({exc!r})") from exc


def _row(rows: dict[str, Row], metric: str) -> Row:
    found = rows.get(metric)
    if found is None:
        raise KeyError(f"the base table has no row {metric!r}")
    return found


def _ratio_met(ours: float | None, theirs: float, limit: float) -> bool | None:
    return None if ours is None or not theirs else ours / theirs <= limit


def peer_rows(base: list[Row], peer: Peer) -> list[Row]:
    """Each comparable base row beside the DBOS figure (the ratio column is kodo/DBOS)."""
    rows = {r.metric: r for r in base}
    waiting = _row(rows, "submit->waiting p50").ours
    waiting_bare = _row(rows, "  without git (like the reference's stub steps) p50").ours
    done = _row(rows, "approve->done p50").ours
    done_bare = _row(rows, "  without git and verification (like the reference) p50").ours
    own_cpu = _row(rows, "  of which kodo itself (API, workers, Postgres, Redis)").ours
    all_cpu = _row(rows, "CPU per run, all processes").ours
    out = [
        Row("submit->waiting p50", waiting, peer.submit_to_waiting_p50),
        Row(
            "  without git p50",
            waiting_bare,
            peer.submit_to_waiting_p50,
            f"<= {WAITING_RATIO:g}x",
            _ratio_met(waiting_bare, peer.submit_to_waiting_p50, WAITING_RATIO),
        ),
        Row("approve->done p50", done, peer.approve_to_done_p50),
        Row(
            "  without git and verification p50",
            done_bare,
            peer.approve_to_done_p50,
            f"<= {DONE_RATIO:g}x",
            _ratio_met(done_bare, peer.approve_to_done_p50, DONE_RATIO),
        ),
    ]
    out += [
        Row(f"{r.metric} (DBOS: {peer.in_flight} at once)", r.ours, peer.runs_per_s, unit="runs/s")
        for r in base
        if r.metric.startswith("runs/s, ")
    ]
    out += [
        Row(
            "CPU per run, kodo itself vs DBOS all-in",
            own_cpu,
            peer.cpu_ms_per_run,
            f"<= {OWN_CPU_MS:g} ms",
            at_most(own_cpu, OWN_CPU_MS),
        ),
        Row("CPU per run, kodo all-in (git, tests, provider too)", all_cpu, peer.cpu_ms_per_run),
    ]
    floor = rows.get(FLOOR_ROW)
    if floor is not None:  # kodo's own CPU with every hop at its cheapest (bench.floor)
        out.append(
            Row(
                "  floor at today's hop counts (each at its cheapest)",
                floor.ours,
                peer.cpu_ms_per_run,
                f"<= {OWN_CPU_MS:g} ms",
                at_most(floor.ours, OWN_CPU_MS),
            )
        )
    return out


def describe(peer: Peer) -> dict[str, Any]:
    return {
        "file": str(peer.path),
        "submit_to_waiting_p50_ms": peer.submit_to_waiting_p50,
        "approve_to_done_p50_ms": peer.approve_to_done_p50,
        "runs_per_s": peer.runs_per_s,
        "in_flight": peer.in_flight,
        "cpu_ms_per_run": peer.cpu_ms_per_run,
        "other_load_pct": peer.other_load_pct,
    }
