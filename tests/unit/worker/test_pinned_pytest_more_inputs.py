"""More of what a pinned ``python3 -m pytest`` reads from the checkout (red-team helper-115).

Helper-113's fix lists pytest's configuration files (RUNNER_CONFIG) and its dependencies
(RUNNER_MODULES). Three inputs the installed pytest (9.1.1) honours are missing; each was
checked by hand in a folder holding ``calc.py`` (``add = a - b``) and ``test_calc.py``:
``python -m pytest -q`` exits 1, and 0 once the plan's file is added:

- ``pytest.toml`` / ``.pytest.toml`` (pytest 9: ``[pytest]\naddopts = ["--co"]``), which
  pytest looks for *first*, before pytest.ini;
- a ``<name>.dist-info/entry_points.txt`` (or ``.egg-info``) naming a ``[pytest11]``
  plugin: the checkout is first on ``sys.path`` under ``python -m``, importlib.metadata
  finds the distribution there, and pytest autoloads the plugin module (a
  ``pytest_sessionfinish`` setting ``session.exitstatus = 0``); the sandbox sets no
  ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``;
- pytest's default ``prepend`` import mode puts a test file's first folder without
  ``__init__.py`` at ``sys.path[0]``: a new ``tests/calc.py`` beside the base's
  ``tests/test_calc.py`` is what ``from calc import add`` imports, not the patched
  top-level ``calc.py`` (the approver reads calc.py's change; the tests run another add).

- ``pygments`` (``pygments.py`` or ``pygments/__init__.py``): a hard dependency of
  pytest 9 (``Requires-Dist: pygments``), imported by ``_pytest/_io/terminalwriter.py``
  at start-up with the checkout first on ``sys.path``, and missing from
  RUNNER_MODULES: a ``pygments/__init__.py`` doing ``os._exit(0)`` makes the pinned
  command exit 0 (checked by hand: 1 -> 0).

Each plan below should be refused by CompileST before approval (rule verify_pinned, or
module_shadow for the last), like the ``pytest.ini`` / ``conftest.py`` ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.worker.steps import compile as compile_step
from shared.domain.policy import Policy

PINNED = Policy(verify_commands=(("python3", "-m", "pytest", "-q"),))


def _plan(*files: tuple[str, str]) -> dict[str, object]:
    return {
        "design": "Tidy add; configure the tests.",
        "files": [{"path": p, "change": c, "why": "w"} for p, c in files],
        "risks": [],
        "tests": [],
    }


def _base(monkeypatch: pytest.MonkeyPatch, names: list[str]) -> None:
    def tree(_worktree: object, _revision: str) -> Iterator[str]:
        yield from names

    monkeypatch.setattr(compile_step, "tree_names", tree)


def _refused(verdict: compile_step._BaseVerdict) -> list[str]:
    return [v.rule for v in (verdict.twins, verdict.shadow, verdict.hidden) if v is not None]


@pytest.mark.parametrize(
    "added",
    [
        ("pytest.toml",),
        (".pytest.toml",),
        ("evil-1.0.dist-info/METADATA", "evil-1.0.dist-info/entry_points.txt", "evilplug.py"),
        ("evil.egg-info/PKG-INFO", "evil.egg-info/entry_points.txt", "evilplug.py"),
        ("pygments/__init__.py",),
        ("pygments.py",),
        ("docs/test_notes.txt",),  # collected as a doctest by default (helper-120)
        ("Test-Notes.TXT",),
    ],
    ids=[
        "pytest.toml",
        ".pytest.toml",
        "dist-info-plugin",
        "egg-info-plugin",
        "pygments-package",
        "pygments-module",
        "doctest-text",
        "doctest-text-folded",
    ],
)
def test_pytest_config_or_plugin_pytest_9_reads_is_refused_under_a_pinned_pytest(
    monkeypatch: pytest.MonkeyPatch, added: tuple[str, ...]
) -> None:
    _base(monkeypatch, ["README.md", "calc.py", "test_calc.py", ".kodo/policy.toml"])
    plan = _plan(("calc.py", "modify"), *((a, "add") for a in added))

    verdict = compile_step._against_base(None, plan, PINNED.pinned_modules())  # type: ignore[arg-type]

    assert verdict.shadow is not None, (
        f"a plan adding {', '.join(added)} (read by pytest 9 before any test: addopts ="
        " --co, or an autoloaded pytest11 plugin setting exitstatus 0, makes the pinned"
        " 'python3 -m pytest' exit 0 over a broken add; checked by hand) passes CompileST;"
        f" refused: {_refused(verdict)}"
    )
    assert verdict.shadow.rule == "verify_pinned"


@pytest.mark.parametrize("policy", [PINNED, Policy()], ids=["pinned", "unpinned"])
def test_a_module_beside_the_tests_pytest_prepends_shadows_the_top_level_one(
    monkeypatch: pytest.MonkeyPatch, policy: Policy
) -> None:
    """pytest (prepend mode) inserts ``tests/`` at sys.path[0]; ``from calc import add``
    in tests/test_calc.py then imports the plan's ``tests/calc.py``, not the base's
    ``calc.py`` the patch modifies (checked by hand: exit 1 -> 0)."""
    _base(monkeypatch, ["README.md", "calc.py", "tests/test_calc.py", ".kodo/policy.toml"])
    plan = _plan(("calc.py", "modify"), ("tests/calc.py", "add"))

    verdict = compile_step._against_base(None, plan, policy.pinned_modules())  # type: ignore[arg-type]

    assert _refused(verdict), (
        "tests/calc.py is imported in place of the base's calc.py by the tests in tests/"
        " (pytest prepends the test file's folder to sys.path), yet CompileST shows the plan"
    )


@pytest.mark.parametrize(
    "argv",
    [("pytest", "-q"), ("py.test", "-q"), ("/usr/bin/pytest", "-q")],
    ids=["pytest", "py.test", "abs-pytest"],
)
def test_pytest_config_is_refused_under_a_pinned_pytest_console_script(
    monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...]
) -> None:
    """``pytest -q`` reads ``pytest.ini``'s ``addopts = --co`` exactly as ``python3 -m
    pytest -q`` does (checked by hand: exit 1 -> 0 with add broken), but
    ``Policy.pinned_modules`` knows only ``python -m`` argv, so runner_configuration sees
    no pinned pytest and the plan is shown."""
    _base(monkeypatch, ["README.md", "calc.py", "test_calc.py", ".kodo/policy.toml"])
    policy = Policy(verify_commands=(argv,))
    plan = _plan(("calc.py", "modify"), ("pytest.ini", "add"))

    verdict = compile_step._against_base(None, plan, policy.pinned_modules())  # type: ignore[arg-type]

    assert verdict.shadow is not None, (
        f"under a pinned {' '.join(argv)!r} a plan adding pytest.ini (addopts = --co) passes"
        f" CompileST; pinned modules: {sorted(policy.pinned_modules())}"
    )
    assert verdict.shadow.rule == "verify_pinned"
