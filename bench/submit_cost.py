"""``python -m bench.submit_cost``: what one ``POST /intents`` costs the API, in process.

The think-time phase submits every run at once, so the API's intake is paid N times in a
burst. This prints, per submit (sequential, after a warm-up, the same repository and
commit each time as in the burst): the API process's own CPU, the CPU of its git
children, and how many git processes it started. ``--profile`` adds the top of a
cProfile of the same requests. Against a database of your own (it is written to).
``python -m bench.submit_cost_gevent`` runs it in a gevent-patched process, as the
API's workers are (git is started differently there: see ``shared.cospawn``).
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from devstack.database import migrate, recreate_database
from devstack.sample_repo import create_sample_repo
from services.api.app import create_app
from services.api.state import state_of
from shared.config import Settings
from shared.service.tokens import Role, create_token
from shared.service.uow import UnitOfWork


class GitCounter:
    """Counts the git processes started while installed, by ``subprocess.run`` or by
    ``os.posix_spawn`` (how a gevent-patched process starts them)."""

    def __init__(self) -> None:
        self.count = 0
        self._run: Callable[..., Any] = subprocess.run
        self._spawn: Callable[..., Any] = os.posix_spawn

    def _counting(self, real: Callable[..., Any], at: int) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            argv = args[at] if len(args) > at else None
            if isinstance(argv, list | tuple) and argv and argv[0] == "git":
                self.count += 1
            return real(*args, **kwargs)

        return counted

    def __enter__(self) -> GitCounter:
        # setattr: mypy refuses assigning to an overloaded function
        setattr(subprocess, "run", self._counting(self._run, 0))  # noqa: B010
        setattr(os, "posix_spawn", self._counting(self._spawn, 1))  # noqa: B010
        return self

    def __exit__(self, *_exc: object) -> None:
        setattr(subprocess, "run", self._run)  # noqa: B010
        setattr(os, "posix_spawn", self._spawn)  # noqa: B010


def _children_cpu_s() -> float:
    t = os.times()
    return t.children_user + t.children_system


@click.command()
@click.option("--database-url", required=True, help="A database of your own (recreated).")
@click.option("--redis-url", default="redis://127.0.0.1:6379/13", show_default=True)
@click.option("--submits", default=200, show_default=True)
@click.option("--policy/--no-policy", default=True, show_default=True, help="A .kodo/policy.toml.")
@click.option("--profile", is_flag=True, help="Print the top of a cProfile of the submits.")
def main(database_url: str, redis_url: str, submits: int, policy: bool, profile: bool) -> None:
    recreate_database(database_url)
    migrate(database_url)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        repo = create_sample_repo(root / "calc")
        if policy:
            (repo / ".kodo").mkdir()
            (repo / ".kodo" / "policy.toml").write_text("[policy]\nmax_lines = 400\n")
            subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
            subprocess.run(
                ["git", "-c", "user.name=b", "-c", "user.email=b@localhost", "commit", "-qm", "p"],
                cwd=repo,
                check=True,
            )
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            repo_roots=(root,),
            intent_rate="1000000/minute",
            redis_key_prefix=f"kodo-submit-cost-{os.getpid()}",
        )
        app = create_app(settings)
        try:
            with UnitOfWork(state_of(app).sessions) as uow:
                token = create_token(uow, "cost", Role.ADMIN)
            http = app.test_client()
            http.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
            body = {"repo": str(repo), "goal": "measure the intake"}

            def submit() -> None:
                reply = http.post("/intents", json=body)
                if reply.status_code != 201:
                    raise click.ClickException(f"POST /intents: {reply.status_code} {reply.text}")

            for _ in range(10):
                submit()  # imports, pools, caches
            profiler = cProfile.Profile() if profile else None
            with GitCounter() as git:
                cpu0, kids0, wall0 = time.process_time(), _children_cpu_s(), time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                for _ in range(submits):
                    submit()
                if profiler is not None:
                    profiler.disable()
                cpu1, kids1, wall1 = time.process_time(), _children_cpu_s(), time.perf_counter()
        finally:
            state_of(app).close()
    click.echo(f"{submits} sequential POST /intents (policy file: {policy})")
    click.echo(f"  API CPU per submit        {(cpu1 - cpu0) / submits * 1000:8.2f} ms")
    click.echo(f"  git children CPU / submit {(kids1 - kids0) / submits * 1000:8.2f} ms")
    click.echo(f"  git processes per submit  {git.count / submits:8.2f}")
    click.echo(f"  wall per submit           {(wall1 - wall0) / submits * 1000:8.2f} ms")
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
        click.echo(out.getvalue())


if __name__ == "__main__":
    main()
