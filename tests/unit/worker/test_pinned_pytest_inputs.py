"""What a pinned runner reads from the checkout before any test (red-team helper-113).

Under a pinned ``python3 -m pytest`` a plan may not bring pytest's configuration or plugins.

CompileST refuses a plan adding ``pytest.py`` or ``pytest/`` (runner_shadows), since the
checkout is first on ``sys.path``. But pytest takes its options from the checkout too:
``pytest.ini``, ``tox.ini`` (``[pytest]``), ``setup.cfg`` (``[tool:pytest]``) and
``pyproject.toml`` (``[tool.pytest.ini_options]``), and loads every ``conftest.py`` as a
plugin. A plan adding ``pytest.ini`` with ``addopts = --co`` (it reads as "configure
pytest") makes the pinned command only *collect* the tests: pytest exits 0 with ``add``
broken (checked by hand: ``python3 -m pytest -q`` exits 1 on ``add = a - b``, 0 once the
ini is added). A ``conftest.py`` setting ``session.exitstatus = 0`` in
``pytest_sessionfinish`` does the same, and so does a top-level ``pluggy.py`` or
``iniconfig.py`` (pytest's own dependencies, imported with the checkout first on
``sys.path``; guarded_modules had known only the standard library's names). The sandbox
toolchain here has no pytest, so this is proved where the plan is judged: CompileST
refuses such a plan (rule verify_pinned) before it is shown for approval.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.worker.steps import compile as compile_step
from shared.domain.policy import Policy

BASE = ["README.md", "calc.py", "test_calc.py", ".kodo/policy.toml"]
PINNED = Policy(verify_commands=(("python3", "-m", "pytest", "-q"),))


def _plan(*files: tuple[str, str]) -> dict[str, object]:
    return {
        "design": "Tidy add; configure the tests.",
        "files": [{"path": p, "change": c, "why": "w"} for p, c in files],
        "risks": [],
        "tests": [],
    }


@pytest.fixture
def base_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    def names(_worktree: object, _revision: str) -> Iterator[str]:
        yield from BASE

    monkeypatch.setattr(compile_step, "tree_names", names)


@pytest.mark.parametrize(
    "added",
    [
        "pytest.ini",
        "tox.ini",
        "setup.cfg",
        "conftest.py",
        "pyproject.toml",
        # modules pytest itself imports after the checkout is on sys.path (a top-level
        # pluggy.py doing os._exit(0) makes the pinned command exit 0; checked by hand)
        "pluggy.py",
        "iniconfig.py",
        "_pytest/__init__.py",
    ],
)
@pytest.mark.usefixtures("base_tree")
def test_a_plan_bringing_pytest_config_or_plugins_under_a_pinned_pytest_is_refused(
    added: str,
) -> None:
    plan = _plan(("calc.py", "modify"), (added, "add"))

    verdict = compile_step._against_base(None, plan, PINNED.pinned_modules())  # type: ignore[arg-type]

    assert verdict.shadow is not None, (
        f"a plan adding {added} (read by pytest before any test: addopts = --co makes the"
        " pinned 'python3 -m pytest' exit 0 without running a test) passes CompileST"
    )
    assert verdict.shadow.rule == "verify_pinned"
    assert added in verdict.shadow.detail


@pytest.mark.usefixtures("base_tree")
@pytest.mark.parametrize("policy", [PINNED, Policy()], ids=["pinned", "unpinned"])
def test_a_package_shadowing_a_module_of_the_base_is_refused(policy: Policy) -> None:
    """``python3 -m unittest -q test_calc`` imports ``test_calc``; a new
    ``test_calc/__init__.py`` is found before the base's ``test_calc.py``, pinned or not."""
    plan = _plan(("calc.py", "modify"), ("test_calc/__init__.py", "add"))

    verdict = compile_step._against_base(None, plan, policy.pinned_modules())  # type: ignore[arg-type]

    assert verdict.hidden is not None, "test_calc/__init__.py shadows the base's test_calc.py"
    assert verdict.hidden.rule == "module_shadow"
    assert verdict.hidden.paths == ("test_calc/__init__.py",)


@pytest.mark.usefixtures("base_tree")
def test_a_module_made_a_package_in_one_plan_hides_nothing() -> None:
    plan = _plan(("calc.py", "delete"), ("calc/__init__.py", "add"))
    verdict = compile_step._against_base(None, plan, PINNED.pinned_modules())  # type: ignore[arg-type]
    assert verdict.hidden is None
