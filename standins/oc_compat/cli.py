"""``kodo oc-compat``: serve the OpenCode-compatible scripted model until signalled.

The process is monkey-patched for gevent first thing (see green.py): every held prompt
and event stream is a greenlet, not a thread. Never invoke this command inside a test
process; start it as a process (``devstack.kodo_procs.start_oc_compat``).
"""

from __future__ import annotations

from pathlib import Path

import click

from shared.config import Settings
from standins.oc_compat import green
from standins.oc_compat.app import CompatConfig


@click.command("oc-compat")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=4096, show_default=True, type=int, help="Port (0 = any free).")
@click.option("--seed", type=int, default=None, help="Answer seed [default: RANDOM_SEED].")
@click.option("--password", default=None, help="Basic-auth password [default: OC_PASSWORD].")
@click.option(
    "--fixtures-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of NAME.json answers for [oc:fixture=NAME] [default: OC_COMPAT_FIXTURES_DIR].",
)
def oc_compat(
    host: str, port: int, seed: int | None, password: str | None, fixtures_dir: Path | None
) -> None:
    """Serve OpenCode's HTTP API with a deterministic scripted model (for demos and tests)."""
    green.patch()
    settings = Settings.from_env()
    config = CompatConfig(
        seed=settings.random_seed if seed is None else seed,
        password=settings.oc_password if password is None else password,
        username=settings.oc_username,
        provider_id=settings.oc_provider_id,
        model_id=settings.oc_model_id,
        fixtures_dir=fixtures_dir.resolve() if fixtures_dir else settings.oc_compat_fixtures_dir,
    )
    green.serve(config, host, port, lambda url: click.echo(f"oc-compat listening on {url}"))
