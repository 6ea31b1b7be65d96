"""``--opencode real``: refused before anything starts when it cannot be honoured, and
the figures it derives (prompts held at once) counted right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.__main__ import main
from bench.real_daemons import most_at_once
from devstack.oc_daemon.install import CACHE_ENV


def test_a_missing_opencode_stops_the_bench_saying_how_to_install_it(tmp_path: Path) -> None:
    argv = ["--phases", "think", "--opencode", "real", "--database-url", "postgresql://x/y"]
    result = CliRunner().invoke(main, argv, env={CACHE_ENV: str(tmp_path / "none")})
    assert result.exit_code == 1
    assert "is not installed" in result.output
    assert "kodo oc install" in result.output


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--opencode", "real"], "--phases think"),
        (["--phases", "think", "--daemons", "2"], "--daemons is for --opencode real"),
    ],
)
def test_real_daemons_are_for_the_think_phase_only(argv: list[str], said: str) -> None:
    result = CliRunner().invoke(main, [*argv, "--database-url", "postgresql://x/y"])
    assert result.exit_code == 2
    assert said in result.output


def test_prompts_held_at_once_count_overlapping_spans_only() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(s: float) -> datetime:
        return t0 + timedelta(seconds=s)

    spans = [(at(0), at(10)), (at(1), at(5)), (at(5), at(6)), (at(20), at(21))]
    assert most_at_once(spans) == 2  # one ends as another begins: not three at once
    assert most_at_once([]) == 0
