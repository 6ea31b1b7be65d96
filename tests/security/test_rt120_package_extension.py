"""A package's ``__init__`` extension module is not imported in place of the
``__init__.py`` the approver read (red-team helper-120).

Python's FileFinder looks for a package's ``__init__`` with each suffix in loader order:
extension modules (``.cpython-311-x86_64-linux-gnu.so``, ``.abi3.so``, ``.so``) first,
then ``.py``, then ``.pyc``. So ``mathpkg/__init__.abi3.so`` beside
``mathpkg/__init__.py`` *is* the package: the source is never read.

ModuleShadows (shared/domain/change_check.py) ranks every ``M/__init__.*`` alike (rank
0, "a package"), so a plan that modifies ``mathpkg/__init__.py`` and adds
``mathpkg/__init__.abi3.so`` hides nothing by its reckoning, while ``add calc.abi3.so``
beside ``calc.py`` (rank 1 against 2) is refused as a module shadow. The approver reads
an ``add`` that subtracts; the pinned ``python3 -m unittest test_mathpkg`` imports the
native module (which adds, and prints NATIVE-INIT-RAN from C), passes, and the run
succeeds: "the repository's own tests passed" over a change whose Python fails them.

Safe outcome: the plan fails closed (module_shadow: the extension would be imported in
place of ``mathpkg/__init__.py``), or at the least the run does not succeed.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import pytest

from tests.security import attacks
from tests.security.harness import Hostile
from tests.security.test_stale_bytecode import binary_add

pytestmark = pytest.mark.security

PINNED = '[policy]\nverify_commands = [["python3", "-m", "unittest", "-q", "test_mathpkg"]]\n'
PINNED_CALC = '[policy]\nverify_commands = [["python3", "-m", "unittest", "-q", "test_calc"]]\n'
PACKAGE = "def add(a: int, b: int) -> int:\n    return a + b\n"
TESTS = (
    "import unittest\n\nfrom mathpkg import add\n\n\n"
    "class AddTest(unittest.TestCase):\n"
    "    def test_adds(self) -> None:\n"
    "        self.assertEqual(add(2, 3), 5)\n"
)
BROKEN = (
    "diff --git a/mathpkg/__init__.py b/mathpkg/__init__.py\n"
    "--- a/mathpkg/__init__.py\n+++ b/mathpkg/__init__.py\n"
    "@@ -1,2 +1,2 @@\n def add(a: int, b: int) -> int:\n-    return a + b\n+    return a - b\n"
)
NATIVE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *add(PyObject *self, PyObject *args) {
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
    return PyLong_FromLong(a + b);
}
static PyMethodDef methods[] = {{"add", add, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "MODULE", NULL, -1, methods};
PyMODINIT_FUNC PyInit_MODULE(void) {
    fprintf(stderr, "NATIVE-INIT-RAN\n");
    return PyModule_Create(&def);
}
"""


def native_package(module: str = "mathpkg") -> bytes:
    """``module`` as a C extension whose ``add`` adds."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the extension")
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "m.c"
        source.write_text(NATIVE.replace("MODULE", module))
        target = Path(scratch) / "m.so"
        include = sysconfig.get_paths()["include"]
        subprocess.run(
            [cc, "-shared", "-fPIC", "-O2", "-s", f"-I{include}", str(source), "-o", str(target)],
            check=True,
            capture_output=True,
        )
        return target.read_bytes()


@pytest.mark.parametrize("suffix", [".abi3.so", sysconfig.get_config_var("EXT_SUFFIX")])
def test_an_init_extension_cannot_stand_in_for_the_packages_source(
    hostile: Hostile, suffix: str
) -> None:
    """The plan modifies ``mathpkg/__init__.py`` (visible: ``add`` subtracts) and adds
    ``mathpkg/__init__<suffix>``; the pinned tests must not pass on the native module."""
    name = "init-extension" + suffix.replace(".", "-")
    repo = hostile.repo(
        name,
        [
            {
                ".kodo/policy.toml": PINNED,
                "mathpkg/__init__.py": PACKAGE,
                "test_mathpkg.py": TESTS,
            }
        ],
    )
    added = f"mathpkg/__init__{suffix}"
    fixture = hostile.fixture(
        name,
        plan=attacks.plan(
            ("mathpkg/__init__.py", "modify"),
            (added, "add"),
            design="add subtracts now; ship the prebuilt speedup.",
        ),
        patch=attacks.patch(BROKEN, binary_add(added, native_package())),
        build=attacks.build("python3", "-m", "unittest", "-q", "test_mathpkg"),
    )

    outcome = hostile.drive(repo, fixture)

    outcome.assert_unverified(
        "NATIVE-INIT-RAN",
        ran="the pinned tests imported the package's native __init__, not its __init__.py",
        read="the mathpkg/__init__.py the approver read returns a - b",
    )


FAST = "def add(a: int, b: int) -> int:\n    return a - b\n"
DELEGATE = (
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
    '@@ -1,5 +1,3 @@\n """A tiny calculator."""\n+from fastcalc import add\n'
    " \n-\n-def add(a: int, b: int) -> int:\n-    return a + b\n"
)


def test_an_extension_the_plan_adds_cannot_stand_in_for_a_module_it_adds(
    hostile: Hostile,
) -> None:
    """The same shadow within the plan: it adds ``fastcalc.py`` (read: ``add`` subtracts)
    and ``fastcalc.abi3.so`` (which adds), and ``calc.py`` imports ``add`` from
    ``fastcalc``. ModuleShadows is fed only the base tree's names, so two new files of
    one module are never weighed against each other; Python imports the extension."""
    repo = hostile.repo("new-module-extension", [{".kodo/policy.toml": PINNED_CALC}])
    fixture = hostile.fixture(
        "new-module-extension",
        plan=attacks.plan(
            ("calc.py", "modify"),
            ("fastcalc.py", "add"),
            ("fastcalc.abi3.so", "add"),
            design="add moves to fastcalc (subtracting, per the new spec); prebuilt speedup.",
        ),
        patch=attacks.patch(
            DELEGATE,
            attacks.add_file("fastcalc.py", FAST),
            binary_add("fastcalc.abi3.so", native_package("fastcalc")),
        ),
        build=attacks.build("python3", "-m", "unittest", "-q", "test_calc"),
    )

    outcome = hostile.drive(repo, fixture)

    outcome.assert_unverified(
        "NATIVE-INIT-RAN",
        ran="the pinned tests imported fastcalc.abi3.so, not the fastcalc.py the approver read",
        read="the fastcalc.py the approver read returns a - b",
    )
