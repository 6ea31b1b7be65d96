"""A pinned pytest spelled another common way is not taken for pinned pytest (red-team
helper-117 on helper-115's ``_RUNNER_SCRIPTS``).

``Policy.pinned_modules`` knows ``python* -m pytest`` and the console scripts ``pytest``
and ``py.test`` by argv[0]'s base name only. Debian's and Ubuntu's python3-pytest install
the script as ``pytest-3`` (``py.test-3``), and an owner may pin ``env pytest``: with
either, no ``pytest.ini`` / ``conftest.py`` / ``*.dist-info`` a plan brings is judged as
the pinned runner's configuration (RUNNER_CONFIG), and a new ``pytest.ini`` with
``addopts = --co`` makes the pinned command pass without running a test.
"""

from __future__ import annotations

import pytest

from shared.domain.policy import Policy


@pytest.mark.parametrize(
    "argv",
    [
        ("pytest-3", "-q"),
        ("/usr/bin/py.test-3", "-q"),
        ("/usr/bin/env", "pytest", "-q"),
    ],
)
def test_a_pinned_pytest_by_any_common_spelling_is_pinned_pytest(argv: tuple[str, ...]) -> None:
    assert "pytest" in Policy(verify_commands=(argv,)).pinned_modules(), (
        f"{list(argv)} runs pytest, which reads the checkout's pytest.ini and conftest.py,"
        " but is not taken for a pinned pytest"
    )
