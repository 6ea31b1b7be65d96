"""Red-team helper-117 on helper-115's cross-folder ``module_shadow``: a folder with an
``__init__.py`` is still a ``sys.path`` entry when a runner puts it there.

``ModuleShadows._on_a_path`` assumes a package folder is never first on ``sys.path``.
But ``python -m unittest discover -s tests`` inserts its start directory (the default
top-level directory) at ``sys.path[0]`` whether or not it holds ``__init__.py``
(``unittest.loader.TestLoader.discover``: ``sys.path.insert(0, top_level_dir)`` with no
package test when start == top). So with the tests in a package ``tests/`` (a common
layout), or with a plan that adds ``tests/__init__.py`` itself, a new ``tests/calc.py``
is what ``from calc import add`` imports, in place of the patched ``calc.py``. And a
regular package added beside the tests takes the place of a base *namespace* package
(``app/util.py`` with no ``__init__.py``) of the same name.
"""

from __future__ import annotations

from shared.domain.change_check import ModuleShadows


def _hidden(base: list[str], *entries: tuple[str, ...]) -> dict[str, str]:
    files = [{"path": e[0], "change": e[1], "why": ""} for e in entries]
    shadows = ModuleShadows({"files": files})
    for name in base:
        shadows.feed(name)
    return shadows.hidden()


def test_a_module_beside_tests_in_a_base_package_hides_the_one_it_is_named_like() -> None:
    """``unittest discover -s tests`` puts ``tests/`` first though it is a package."""
    base = ["calc.py", "tests/__init__.py", "tests/test_calc.py"]
    assert _hidden(base, ("calc.py", "modify"), ("tests/calc.py", "add")) == {
        "tests/calc.py": "calc.py"
    }


def test_an_init_the_plan_adds_beside_the_double_does_not_excuse_it() -> None:
    """Adding ``tests/__init__.py`` in the same plan made the double invisible to the rule;
    unittest still imports ``tests/calc.py`` as ``calc``."""
    base = ["calc.py", "tests/test_calc.py"]
    hidden = _hidden(
        base, ("calc.py", "modify"), ("tests/__init__.py", "add"), ("tests/calc.py", "add")
    )
    assert hidden == {"tests/calc.py": "calc.py"}


def test_a_new_regular_package_hides_a_base_namespace_package_of_its_name() -> None:
    """``tests/app/__init__.py`` (a regular package, first on ``sys.path``) is imported as
    ``app`` before the base's namespace package ``app/`` (no ``__init__.py``), so
    ``from app.util import add`` reads the plan's ``tests/app/util.py``."""
    base = ["app/util.py", "tests/test_util.py"]
    hidden = _hidden(
        base,
        ("app/util.py", "modify"),
        ("tests/app/__init__.py", "add"),
        ("tests/app/util.py", "add"),
    )
    assert hidden, "a regular package beside the tests stands in for the namespace app/"
