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
    return shadows.hidden()


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
    inside = ["calc.py", "other/__init__.py"]  # other.calc, in a package: never calc
    assert _hidden(inside, ("other/calc/__init__.py", "add")) == {}
    assert _hidden(["calc.py"], ("calc.py.bak", "add"), ("calc.txt", "add")) == {}


def test_a_module_the_plan_deletes_or_renames_away_is_hidden_by_nothing() -> None:
    assert _hidden(["calc.py"], ("calc.py", "delete"), ("calc/__init__.py", "add")) == {}
    moved = _hidden(["calc.py"], ("old_calc.py", "rename", "calc.py"), ("calc/__init__.py", "add"))
    assert moved == {}


def test_a_module_in_a_folder_a_runner_puts_first_hides_one_of_its_name_elsewhere() -> None:
    base = ["calc.py", "tests/test_calc.py"]
    assert _hidden(base, ("tests/calc.py", "add")) == {"tests/calc.py": "calc.py"}
    assert _hidden(["lib/calc.py"], ("calc/__init__.py", "add")) == {
        "calc/__init__.py": "lib/calc.py"
    }


def test_modules_inside_packages_or_found_by_their_path_hide_nothing_elsewhere() -> None:
    package = ["pkg/__init__.py", "pkg/calc.py", "tests/test_calc.py"]
    assert _hidden(package, ("tests/calc.py", "add")) == {}  # pkg.calc, not calc
    assert _hidden(["calc.py"], ("pkg/__init__.py", "add"), ("pkg/calc.py", "add")) == {}
    assert _hidden(["tests/conftest.py"], ("tests/unit/conftest.py", "add")) == {}


def test_a_name_with_no_suffix_beside_a_module_hides_it() -> None:
    """A link ``test_calc -> helpers`` is a package Python takes first."""
    assert _hidden(["test_calc.py"], ("test_calc", "add")) == {"test_calc": "test_calc.py"}


@pytest.mark.parametrize(
    "extension", ["mathpkg/__init__.abi3.so", "mathpkg/__init__.cpython-311-x86_64-linux-gnu.so"]
)
def test_a_packages_extension_init_hides_its_source_init(extension: str) -> None:
    """Python looks for a package's ``__init__`` as for a module: extension first
    (red-team helper-120)."""
    base = ["mathpkg/__init__.py", "test_mathpkg.py"]
    hidden = _hidden(base, ("mathpkg/__init__.py", "modify"), (extension, "add"))
    assert hidden == {extension: "mathpkg/__init__.py"}


@pytest.mark.parametrize(
    ("taken", "unread"),
    [
        ("fastcalc.abi3.so", "fastcalc.py"),
        ("fastcalc/__init__.py", "fastcalc.py"),
        ("newpkg/__init__.so", "newpkg/__init__.py"),
    ],
)
def test_of_two_files_one_plan_adds_for_one_module_the_one_never_read_is_named(
    taken: str, unread: str
) -> None:
    """Both new: the approver reads ``fastcalc.py``, Python imports the extension."""
    assert _hidden(["README.md"], (unread, "add"), (taken, "add")) == {taken: unread}
