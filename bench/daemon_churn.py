"""``python -m bench.daemon_churn``: a long-lived ``opencode serve`` fed one worktree after
another, with and without kodo's release of each (``POST /instance/dispose``).

kodo gives every run a worktree of its own, and the daemon opens an instance for every
directory a request names and keeps it after the sessions are deleted. The think-time
phase opens all its worktrees at once, so it cannot show what a daemon that serves runs
for days goes through; this can. For each mode, a fresh daemon in its sandbox (as
``kodo oc up`` runs it) and kodo's scripted LLM: per worktree, one structured plan
prompt, the session deleted (as kodo does once the answer is recorded), and with
``dispose`` the worktree released (as kodo's reconciler does once the run rests). The
daemon's RSS and memory mappings (the most one of its processes holds: the kernel caps
each at ``vm.max_map_count``) are sampled every ``--every`` worktrees.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from devstack.oc_daemon import daemon
from devstack.oc_daemon.config import scripted_provider
from devstack.oc_daemon.daemon import Confinement
from devstack.sample_repo import create_sample_repo
from devstack.supervisor import free_port
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA
from shared.opencode.client import OpenCodeClient
from shared.opencode.messages import ModelRef
from shared.opencode.tools import permission_rules, tools_map
from standins.scripted_llm import running_llm

from .real_daemons import max_map_count, most_maps, opencode_binary, tree_rss_mb
from .report import Row, table

MODES = ("keep", "dispose")
PASSWORD = "churn"  # noqa: S105 - a throwaway daemon on loopback
MODEL = ModelRef("kodo", "kodo-scripted")


@dataclass
class Churn:
    """One mode's samples: (worktrees so far, RSS MB, most mappings, seconds so far)."""

    mode: str
    samples: list[tuple[int, float, int, float]] = field(default_factory=list)

    def rows(self) -> list[Row]:
        first, last = self.samples[0], self.samples[-1]
        span = last[0] - first[0]
        return [
            Row(f"{self.mode}: worktrees", last[0], unit="count"),
            Row(f"  RSS after {first[0]} worktrees", first[1], unit="MB"),
            Row(f"  RSS after {last[0]} worktrees", last[1], unit="MB"),
            Row("  RSS, most seen", max(s[1] for s in self.samples), unit="MB"),
            Row(
                f"  RSS growth per worktree (after the first {first[0]})",
                (last[1] - first[1]) / span if span else None,
                unit="MB",
            ),
            Row(
                "  memory mappings, most seen",
                max(s[2] for s in self.samples),
                target=f"< {max_map_count()} (vm.max_map_count)",
                unit="count",
            ),
            Row("  wall per worktree", 1000 * last[3] / last[0], unit="ms"),
        ]


def churn(mode: str, worktrees: int, every: int, root: Path) -> Churn:
    """Feed a fresh daemon ``worktrees`` worktrees one after another in ``mode``."""
    workspaces, state = root / "workspaces", root / "state"
    workspaces.mkdir(parents=True)
    found = Churn(mode)
    with running_llm(seed=0) as llm:
        served = daemon.start(
            opencode_binary(),
            state_dir=state,
            port=free_port(),
            provider=scripted_provider(llm),
            password=PASSWORD,
            confinement=Confinement(workspaces),
        )
        try:
            with OpenCodeClient(served.url, timeout_s=120.0, password=PASSWORD) as client:
                started = time.monotonic()
                for i in range(1, worktrees + 1):
                    directory = str(create_sample_repo(workspaces / f"w{i}" / "calc"))
                    _one_turn(client, directory)
                    if mode == "dispose":
                        client.dispose_instance(directory=directory)
                    if i % every == 0 or i == worktrees:
                        found.samples.append(
                            (
                                i,
                                tree_rss_mb(served.pid),
                                most_maps(served.pid),
                                time.monotonic() - started,
                            )
                        )
                        click.echo(f"  {mode}: {i} worktrees, {found.samples[-1][1]:.0f} MB")
        finally:
            daemon.stop(state)
    return found


def _one_turn(client: OpenCodeClient, directory: str) -> None:
    """What a kodo call does to the daemon: a session, a structured prompt, the delete."""
    session_id = str(
        client.create_session(
            directory=directory, title="kodo churn", permission=permission_rules("plan")
        )["id"]
    )
    client.prompt(
        session_id,
        directory=directory,
        agent="plan",
        model=MODEL,
        text="Plan a change to README.md",
        tools=tools_map("plan"),
        format={"type": "json_schema", "schema": PLAN_OUTPUT_SCHEMA, "retryCount": 1},
    )
    client.delete_session(session_id, directory=directory)


@click.command()
@click.option("--worktrees", default=100, show_default=True, help="Worktrees per mode.")
@click.option("--every", default=10, show_default=True, help="Sample every N worktrees.")
@click.option("--modes", default=",".join(MODES), show_default=True, help="keep, dispose, or both.")
def main(worktrees: int, every: int, modes: str) -> None:
    """Print each mode's RSS and mappings as the worktrees pile up."""
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = set(chosen) - set(MODES)
    if unknown or not chosen:
        raise click.BadParameter(f"choose among {','.join(MODES)}: got {modes!r}")
    rows: list[Row] = []
    for mode in chosen:
        root = Path(tempfile.mkdtemp(prefix=f"kodo-churn-{mode}-"))
        try:
            rows += churn(mode, worktrees, max(1, min(every, worktrees)), root).rows()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    click.echo(f"\none opencode daemon, {worktrees} worktrees one after another")
    click.echo(table(rows, baseline=None))


if __name__ == "__main__":
    main()
