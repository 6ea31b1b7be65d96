"""Honest recipes: a few intents the scripted model really carries out.

"Add a multiply function to calc.py with a test" should end with a ``multiply`` that
multiplies and a test that checks it, made by the same edits a real model would make
(the function appended to the module, the test file's import extended and a test case
added). Everything else the scripted model does is a visible note, never a pretence.
An intent matches a recipe when it names the operation and a Python module that exists.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Operation:
    name: str
    expression: str  # of a and b
    example: tuple[int, int, int]  # a, b, expected


OPERATIONS = {
    op.name: op
    for op in (
        Operation("multiply", "a * b", (3, 4, 12)),
        Operation("subtract", "a - b", (7, 2, 5)),
        Operation("power", "a**b", (2, 5, 32)),
    )
}
WRONG = "a + b"
"""The body a buggy recipe writes: wrong for every operation's example."""
_ASKED = re.compile(r"\b(?:add|write|implement)\b.*?\b(" + "|".join(OPERATIONS) + r")\b", re.I)
_MODULE = re.compile(r"\b([A-Za-z_][A-Za-z0-9_/]*\.py)\b")


@dataclass(frozen=True)
class Recipe:
    """An operation to add to ``module``, tested in ``test_module``."""

    op: Operation
    module: str
    test_module: str
    buggy: bool = False  # ``[oc:buggy]``: the body is wrong until a repair prompt fixes it

    @property
    def function(self) -> str:
        body = WRONG if self.buggy else self.op.expression
        return (
            f"\n\ndef {self.op.name}(a: int, b: int) -> int:\n"
            f'    """Return {self.op.expression}."""\n'
            f"    return {body}\n"
        )

    @property
    def _wrong_body(self) -> str:
        return f'    """Return {self.op.expression}."""\n    return {WRONG}\n'

    @property
    def import_name(self) -> str:
        return PurePosixPath(self.module).stem

    @property
    def test_case(self) -> str:
        a, b, expected = self.op.example
        title = self.op.name.capitalize()
        return (
            f"class {title}Test(unittest.TestCase):\n"
            f"    def test_{self.op.name}(self) -> None:\n"
            f"        self.assertEqual({self.op.name}({a}, {b}), {expected})\n"
        )

    def edit_module(self, old: str) -> str:
        if f"def {self.op.name}(" in old:
            if not self.buggy and self._wrong_body in old:  # a repair: fix the body
                right = f'    """Return {self.op.expression}."""\n    return {self.op.expression}\n'
                return old.replace(self._wrong_body, right, 1)
            return old  # done already: the recipe never repeats itself
        return old.rstrip("\n") + "\n" + self.function

    def edit_tests(self, old: str) -> str:
        """Extend ``from calc import ...`` and put the test case before a ``__main__`` block."""
        if f"def test_{self.op.name}(" in old:
            return old
        new = old
        imported = re.search(rf"^from {re.escape(self.import_name)} import (.+)$", new, re.M)
        if imported:
            names = imported.group(1).rstrip()
            new = new.replace(
                imported.group(0), f"from {self.import_name} import {names}, {self.op.name}", 1
            )
        else:
            new = f"from {self.import_name} import {self.op.name}\n" + new
        main = new.find('\nif __name__ == "__main__":')
        case = self.test_case + "\n\n"
        if main < 0:
            return new.rstrip("\n") + "\n\n\n" + case.rstrip("\n") + "\n"
        return new[: main + 1] + case + new[main + 1 :]

    def new_tests(self) -> str:
        return (
            f"import unittest\n\nfrom {self.import_name} import {self.op.name}\n\n\n"
            + self.test_case
            + '\n\nif __name__ == "__main__":\n    unittest.main()\n'
        )

    def edits(self) -> dict[str, Callable[[str], str]]:
        """How each file the recipe touches goes from old text to new."""
        return {self.module: self.edit_module, self.test_module: self._tests}

    def _tests(self, old: str) -> str:
        return self.edit_tests(old) if old else self.new_tests()


def recipe_for(intent: str, existing: Callable[[str], bool]) -> Recipe | None:
    """The recipe ``intent`` asks for, if it names an operation and an existing module."""
    asked = _ASKED.search(intent)
    module = next((m for m in _MODULE.findall(intent) if existing(m)), None)
    if asked is None or module is None or PurePosixPath(module).name.startswith("test_"):
        return None
    path = PurePosixPath(module)
    test_module = str(path.with_name(f"test_{path.name}"))
    return Recipe(OPERATIONS[asked.group(1).lower()], module, test_module)
