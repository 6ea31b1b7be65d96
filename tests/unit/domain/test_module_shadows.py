"""A plan never adds a file Python would import in place of a module the base holds."""

from __future__ import annotations

import pytest

from shared.domain.change_check import ModuleShadows


def _hidden(base: list[str], *entries: tuple[str, ...]) -> dict[str, str]:
    files = [
        {"path": e[0], "change": e[1], "why": "", **({"from": e[2]} if e[2:] else {})}
        for e in entries
    ]
    shadows = ModuleShadows({"files": files})
    for name in base:
        shadows.feed(name)
    return shadows.found


@pytest.mark.parametrize(
    ("added", "hides"),
    [
        ("tests/test_calc/__init__.py", "tests/test_calc.py"),  # a package before a module
        ("calc.cpython-311-x86_64-linux-gnu.so", "calc.py"),  # an extension before source
        ("calc.abi3.so", "calc.py"),
        ("pkg/mod.py", "pkg/mod.pyc"),  # source before sourceless bytecode
        ("calc/__init__.so", "calc.py"),
    ],
)
def test_a_new_file_taken_before_a_base_module_of_its_name_hides_it(added: str, hides: str) -> None:
    assert _hidden(["README.md", hides], (added, "add")) == {added: hides}


def test_what_python_takes_after_a_base_module_hides_nothing() -> None:
    assert _hidden(["calc/__init__.py"], ("calc.py", "add")) == {}
    assert _hidden(["calc.py"], ("calc.pyc", "add")) == {}
    assert _hidden(["calc.py"], ("other/calc/__init__.py", "add")) == {}  # another folder
    assert _hidden(["calc.py"], ("calc.py.bak", "add"), ("calc.txt", "add")) == {}


def test_a_module_the_plan_deletes_or_renames_away_is_hidden_by_nothing() -> None:
    assert _hidden(["calc.py"], ("calc.py", "delete"), ("calc/__init__.py", "add")) == {}
    moved = _hidden(["calc.py"], ("old_calc.py", "rename", "calc.py"), ("calc/__init__.py", "add"))
    assert moved == {}
