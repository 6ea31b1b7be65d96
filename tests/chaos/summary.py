"""The chaos suite's summary table (scenario, runs, lost, duplicated calls, seconds).

Each scenario's row travels in its teardown report's ``user_properties``, so the table
is printed by the process that prints the session's results: the one pytest, or the
pytest-xdist controller, which never runs a test and never loads the chaos conftest
(``tests/conftest.py`` loads this plugin everywhere).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pytest

ROW = "kodo_chaos_row"


@dataclass
class ScenarioResult:
    name: str
    runs: int
    lost: int
    duplicated: int
    seconds: float
    outcome: str
    note: str

    def attach(self, item: pytest.Item) -> None:
        """Send this row with the test's teardown report (made after its fixtures end)."""
        item.user_properties.append((ROW, asdict(self)))


RESULTS: list[ScenarioResult] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown":
        return
    for key, value in report.user_properties:
        if key == ROW and isinstance(value, dict):
            RESULTS.append(ScenarioResult(**value))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    width = max(len("scenario"), *(min(len(r.name), 70) for r in RESULTS))
    head = f"{'scenario':<{width}}  {'runs':>5}  {'lost':>4}  {'dup calls':>9}  {'seconds':>7}"
    terminalreporter.section("chaos summary")
    terminalreporter.write_line(f"{head}  result  note")
    for r in RESULTS:
        terminalreporter.write_line(
            f"{r.name[:70]:<{width}}  {r.runs:>5}  {r.lost:>4}  {r.duplicated:>9}"
            f"  {r.seconds:>7.1f}  {r.outcome:<6}  {r.note}"
        )
