"""bench.fn_cpu: each named function's CPU, summed per call, in the calling thread."""

from __future__ import annotations

import json
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import fn_cpu


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


class Probe:
    def method(self, n: int) -> int:
        return _spin(n)

    @staticmethod
    def static(n: int) -> int:
        return _spin(n)

    @classmethod
    def klass(cls, n: int) -> int:
        return _spin(n)


@pytest.fixture
def probe_module() -> Iterator[types.ModuleType]:
    module = types.ModuleType("fn_cpu_probe")
    module.spin = _spin  # type: ignore[attr-defined]
    module.Probe = type("Probe", (Probe,), {})  # type: ignore[attr-defined]
    module.fails = lambda: 1 / 0  # type: ignore[attr-defined]
    sys.modules["fn_cpu_probe"] = module
    yield module
    del sys.modules["fn_cpu_probe"]


def test_each_wrapped_function_keeps_its_behaviour_and_is_charged_its_cpu(
    probe_module: types.ModuleType,
) -> None:
    totals: fn_cpu.Totals = {}
    lock = threading.Lock()
    for spec in ("spin", "Probe.method", "Probe.static", "Probe.klass", "fails"):
        fn_cpu.wrap(f"fn_cpu_probe:{spec}", totals, lock)

    assert probe_module.spin(10) == _spin(10)
    probe = probe_module.Probe()
    assert probe.method(200_000) == probe_module.Probe.static(10) + _spin(200_000) - _spin(10)
    assert probe_module.Probe.klass(10) == _spin(10)
    with pytest.raises(ZeroDivisionError):
        probe_module.fails()

    assert {label: calls for label, (_, calls) in totals.items()} == {
        "fn_cpu_probe:spin": 1,
        "fn_cpu_probe:Probe.method": 1,
        "fn_cpu_probe:Probe.static": 1,
        "fn_cpu_probe:Probe.klass": 1,
        "fn_cpu_probe:fails": 1,
    }
    method, static = totals["fn_cpu_probe:Probe.method"], totals["fn_cpu_probe:Probe.static"]
    assert method[0] > static[0]  # 200,000 rounds, not 10


def test_a_name_that_is_not_there_is_refused_naming_it(probe_module: types.ModuleType) -> None:
    with pytest.raises(ValueError, match="fn_cpu_probe:nothing"):
        fn_cpu.wrap("fn_cpu_probe:nothing", {}, threading.Lock())
    with pytest.raises(ValueError, match="module:qualname"):
        fn_cpu.wrap("no-colon", {}, threading.Lock())


def test_the_report_sums_every_process_and_divides_by_the_runs(tmp_path: Path) -> None:
    (tmp_path / "worker-1.fncpu.json").write_text(json.dumps({"f": [0.2, 10], "g": [0.1, 5]}))
    (tmp_path / "worker-2.fncpu.json").write_text(json.dumps({"f": [0.2, 10]}))
    (tmp_path / "broken.fncpu.json").write_text("{")

    lines = fn_cpu.report(fn_cpu.collect(tmp_path), per=10)

    assert lines[1].split() == ["f", "40.00", "2.00", "20000.0"]
    assert lines[2].split() == ["g", "10.00", "0.50", "20000.0"]
    (tmp_path / "api-3.fncpu.json").write_text(json.dumps({"h": [1.0, 1]}))
    assert set(fn_cpu.collect(tmp_path, "api")) == {"h"}
