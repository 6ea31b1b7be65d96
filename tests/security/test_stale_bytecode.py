"""A pinned ``python3 -m unittest`` verifies the judged source, not bytecode the tree
carries for it (red-team helper-113).

``verify_commands`` exists so a run succeeds only if the repository's own tests pass on
the change. The sandbox sets PYTHONDONTWRITEBYTECODE, which stops Python *writing*
``__pycache__``; it still *reads* it. A ``__pycache__/calc.cpython-311.pyc`` compiled
with ``--invalidation-mode unchecked-hash`` (PEP 552) is used whatever ``calc.py``
holds: Python never compares it with the source. So a tree carrying one (committed in
the hostile base, or added by the patch next to its edit) makes the pinned tests import
the old, correct ``add`` while the patch that lands makes ``add`` return ``a - b``: the
run "succeeds", the approver is told the repository's tests passed on the change, and
the delivered branch is broken.
"""

from __future__ import annotations

import importlib.util
import py_compile
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from devstack.sample_repo import FILES
from tests.security import attacks
from tests.security.harness import Hostile, git

pytestmark = pytest.mark.security

PINNED = '[policy]\nverify_commands = [["python3", "-m", "unittest", "-q", "test_calc"]]\n'
BROKEN = (
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
    "@@ -4,2 +4,2 @@\n def add(a: int, b: int) -> int:\n-    return a + b\n+    return a - b\n"
)
PYC = f"__pycache__/calc.{sys.implementation.cache_tag}.pyc"
"""Where the sandbox's python3 looks for calc's bytecode (the suite's python and the
worker's are the same minor version: the stack runs this interpreter's toolchain)."""


def stale_bytecode() -> bytes:
    """calc.py's *correct* ``add``, compiled unchecked-hash, announcing itself when run."""
    honest = FILES["calc.py"] + "\nimport sys\nsys.stderr.write('STALE-BYTECODE-RAN\\n')\n"
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "calc.py"
        source.write_text(honest)
        target = Path(scratch) / "calc.pyc"
        py_compile.compile(
            str(source),
            cfile=str(target),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        data = target.read_bytes()
    assert data[:4] == importlib.util.MAGIC_NUMBER
    return data


def binary_add(path: str, data: bytes) -> str:
    """A real ``GIT binary patch`` adding ``path`` with ``data`` (made by git)."""
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=scratch, capture_output=True, check=True
        ).stdout.decode()
        run("init", "-q")
        run("add", "-N", path)
        return run("diff", "--binary")


def _assert_not_verified(outcome) -> None:  # type: ignore[no-untyped-def]
    outcome.assert_unverified(
        "STALE-BYTECODE-RAN",
        ran="the pinned verification imported the tree's stale calc bytecode, not calc.py",
        read="add(2, 3) == -1 on its branch",
    )


def test_bytecode_in_the_base_tree_does_not_stand_in_for_the_patched_source(
    hostile: Hostile,
) -> None:
    """The hostile base commits an unchecked-hash ``__pycache__/calc.*.pyc``; the plan and
    patch touch only ``calc.py`` (what the approver sees). The pinned tests must run the
    patched ``calc.py`` and fail (or kodo must refuse to verify a tree whose bytecode
    Python would load instead of its source)."""
    repo = hostile.repo("stale-pyc-base", [{".kodo/policy.toml": PINNED}])
    (repo / "__pycache__").mkdir()
    (repo / PYC).write_bytes(stale_bytecode())
    git(repo, "add", "-f", PYC)
    git(repo, "commit", "-q", "-m", "cache")
    hostile.give(repo)
    fixture = hostile.fixture(
        "stale-pyc-base",
        plan=attacks.plan(("calc.py", "modify"), design="Tidy add."),
        patch=attacks.patch(BROKEN),
        build=attacks.build("python3", "-m", "unittest", "-q", "test_calc"),
    )

    outcome = hostile.drive(repo, fixture)

    _assert_not_verified(outcome)


def test_bytecode_the_patch_adds_does_not_stand_in_for_the_patched_source(
    hostile: Hostile,
) -> None:
    """The plan adds the bytecode itself beside a 'tidy' of ``calc.py``: the pinned
    verification must still test the ``calc.py`` that lands."""
    repo = hostile.repo("stale-pyc-patch", [{".kodo/policy.toml": PINNED}])
    fixture = hostile.fixture(
        "stale-pyc-patch",
        plan=attacks.plan(
            ("calc.py", "modify"), (PYC, "add"), design="Tidy add; ship the compiled cache."
        ),
        patch=attacks.patch(BROKEN, binary_add(PYC, stale_bytecode())),
        build=attacks.build("python3", "-m", "unittest", "-q", "test_calc"),
    )

    outcome = hostile.drive(repo, fixture)

    _assert_not_verified(outcome)
