"""runner_shadows names every plan entry a pinned ``python -m M`` would import in place
of the toolchain's (rule verify_pinned; red-team helper-105)."""

from __future__ import annotations

from shared.domain.change_check import runner_shadows


def _plan(*files: tuple[str, str]) -> dict[str, object]:
    return {
        "design": "d",
        "files": [{"path": p, "change": c, "why": "w"} for p, c in files],
        "risks": [],
        "tests": [],
    }


def test_a_top_level_entry_named_like_the_module_with_no_suffix_shadows_it() -> None:
    """Rule verify_pinned: a top-level entry named exactly ``M`` (a symlink to a folder
    holding ``__init__.py``/``__main__.py``, which the policy may allow) is imported by
    ``python -m M`` like ``M/``; today only ``M.py``-like names and ``M/...`` count."""
    shadows = runner_shadows(
        _plan(("impl/__init__.py", "add"), ("impl/__main__.py", "add"), ("unittest", "add")),
        frozenset({"unittest"}),
    )
    assert "unittest" in shadows, shadows
