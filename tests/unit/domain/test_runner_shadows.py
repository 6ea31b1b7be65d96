"""A plan may not bring a module in front of a pinned ``python -m`` verification runner:
the checkout is first on ``sys.path``, so ``unittest.py`` would run in the runner's place."""

from __future__ import annotations

import pytest

from shared.domain.change_check import (
    guarded_modules,
    runner_configuration,
    runner_shadows,
    top_level_module,
)
from shared.domain.policy import Policy


def _pinned(*argv: tuple[str, ...]) -> Policy:
    return Policy(verify_commands=tuple(argv))


@pytest.mark.parametrize(
    ("argv", "modules"),
    [
        (("python3", "-m", "unittest", "-q", "test_calc"), {"unittest"}),
        (("/usr/bin/python3.11", "-B", "-m", "pytest", "-q"), {"pytest"}),
        (("python", "-mpytest"), {"pytest"}),
        (("python3", "-Bm", "unittest"), {"unittest"}),
        (("python3", "-W", "ignore", "-m", "pkg.tests.run"), {"pkg"}),
        (("python3", "-X", "dev", "-m", "unittest"), {"unittest"}),
        (("python3", "check.py"), set()),
        (("python3", "-c", "import x"), set()),
        # a console script reads the same configuration and, once pytest puts the tests'
        # folder first on sys.path, imports what the checkout holds (helper-115)
        (("pytest", "-q"), {"pytest"}),
        (("/usr/bin/py.test",), {"pytest"}),
        (("node", "-m", "x"), set()),
    ],
)
def test_the_modules_pinned_commands_run_with_python_m(
    argv: tuple[str, ...], modules: set[str]
) -> None:
    assert _pinned(argv).pinned_modules() == modules


def test_no_pins_pin_no_module() -> None:
    assert Policy().pinned_modules() == frozenset()


def _plan(*files: tuple[str, str]) -> dict[str, object]:
    return {"files": [{"path": p, "change": c, "why": "w"} for p, c in files]}


def test_a_plan_adding_a_shadow_of_a_pinned_runner_is_found() -> None:
    plan = _plan(
        ("unittest.py", "add"),
        ("pytest/__init__.py", "add"),
        ("unittest.cpython-311-x86_64-linux-gnu.so", "add"),
        ("calc.py", "modify"),
        ("src/unittest.py", "add"),  # not on sys.path
        ("unittest.txt", "add"),  # not importable
    )
    found = runner_shadows(plan, frozenset({"unittest", "pytest"}))
    assert found == {
        "unittest.py": "unittest",
        "pytest/__init__.py": "pytest",
        "unittest.cpython-311-x86_64-linux-gnu.so": "unittest",
    }


def test_a_rename_to_a_shadow_is_found_too() -> None:
    plan = {"files": [{"path": "unittest.py", "change": "rename", "from": "helper.py"}]}
    assert runner_shadows(plan, frozenset({"unittest"})) == {"unittest.py": "unittest"}


@pytest.mark.parametrize(
    ("name", "module"),
    [("pkg/tests/run.py", "pkg"), ("calc.py", "calc"), ("README.md", "README.md")],
)
def test_a_base_tree_name_s_top_level_module(name: str, module: str) -> None:
    assert top_level_module(name) == module


def test_with_a_runner_pinned_the_standard_library_is_guarded_too() -> None:
    """The runner imports difflib, pprint, argparse... once the checkout is on sys.path
    (red-team helper-105); the standard library's own ``test`` suite it never imports."""
    guarded = guarded_modules(frozenset({"unittest"}))
    assert {"unittest", "difflib", "pprint", "argparse"} <= guarded
    assert "test" not in guarded
    assert guarded_modules(frozenset()) == frozenset()
    plan = _plan(("difflib.py", "add"), ("test/test_calc.py", "add"))
    assert runner_shadows(plan, guarded) == {"difflib.py": "difflib"}


@pytest.mark.parametrize(
    ("argv", "programs"),
    [
        (("make", "test"), {"make"}),
        (("/usr/bin/gmake", "-C", "src", "check"), {"make"}),
        (("env", "CI=1", "make", "test"), {"make"}),
        (("python3", "-m", "pytest"), set()),
        (("makefile-lint",), set()),
    ],
)
def test_a_pinned_make_is_a_program_whose_makefiles_a_change_must_leave_alone(
    argv: tuple[str, ...], programs: set[str]
) -> None:
    assert _pinned(argv).pinned_programs() == programs
    assert "make" not in _pinned(argv).pinned_modules(), "no make.py is refused for it"


def test_with_make_pinned_its_makefiles_and_mk_files_are_its_configuration() -> None:
    """GNU make reads GNUmakefile before Makefile: an added one replaced every rule of
    the Makefile the pin was made against (red-team helper-130)."""
    plan = _plan(
        ("GNUmakefile", "add"),
        ("sub/Makefile", "modify"),
        ("rules.mk", "add"),
        ("Makefile.local", "add"),
        ("build/common.mak", "modify"),
        ("make.py", "add"),
        ("calc.py", "modify"),
    )
    found = runner_configuration(plan, frozenset({"make"}))
    assert found == {
        "GNUmakefile": "make",
        "sub/Makefile": "make",
        "rules.mk": "make",
        "Makefile.local": "make",  # what a makefile includes by the usual names (helper-132)
        "build/common.mak": "make",
    }
    assert runner_configuration(plan, frozenset({"pytest"})) == {}
