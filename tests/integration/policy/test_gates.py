"""Each policy gate passes on the repository and its good fixture, and fails closed on bad.

The gates are the scripts CI runs (scripts/policy/*.py, via scripts/policy-check); the
op_key gate builds scratch databases on the test database's Postgres server.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
POLICY = ROOT / "scripts" / "policy"
GATES = ["core_determinism", "import_contracts", "no_cast", "op_key_unique"]


def gate(name: str, target: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(POLICY / f"{name}.py"), "--target", str(target)]
    if name == "op_key_unique":
        argv += ["--database-url", database_url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_every_gate_has_a_good_and_a_bad_fixture() -> None:
    found = sorted(p.stem for p in POLICY.glob("*.py") if not p.name.startswith("_"))
    assert found == GATES
    for name in GATES:
        assert (POLICY / "fixtures" / name / "good").is_dir()
        assert (POLICY / "fixtures" / name / "bad").is_dir()


@pytest.mark.parametrize("name", GATES)
def test_the_gate_passes_on_the_repository(name: str, database_url: str) -> None:
    done = gate(name, ROOT, database_url)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", GATES)
def test_the_gate_passes_on_its_good_fixture(name: str, database_url: str) -> None:
    done = gate(name, POLICY / "fixtures" / name / "good", database_url)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", GATES)
def test_the_gate_fails_closed_on_its_bad_fixture(name: str, database_url: str) -> None:
    done = gate(name, POLICY / "fixtures" / name / "bad", database_url)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL" in done.stdout


def test_a_gate_given_nothing_to_check_fails_closed(tmp_path: Path, database_url: str) -> None:
    assert gate("core_determinism", tmp_path, database_url).returncode == 1
    assert gate("import_contracts", tmp_path, database_url).returncode == 1
    assert gate("op_key_unique", tmp_path, database_url).returncode == 1


def test_the_runner_checks_every_gate_three_ways() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "policy-check"), "--gate", "no_cast"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout
    assert [ln.split()[2] for ln in done.stdout.splitlines()[:3]] == ["repository", "good", "bad"]


def test_the_bad_import_fixture_breaks_every_layering_contract(database_url: str) -> None:
    """Each contract in pyproject.toml is proven able to fail, not only the gate as a whole."""
    done = gate("import_contracts", POLICY / "fixtures" / "import_contracts" / "bad", database_url)
    assert "Contracts: 0 kept, 9 broken." in done.stdout, done.stdout
