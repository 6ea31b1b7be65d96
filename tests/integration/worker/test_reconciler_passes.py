"""The reconciler's pass runs each of its parts whatever the others did, and still
fails visibly when one of them failed."""

from __future__ import annotations

import pytest

from services.worker import reconciler
from services.worker.reconciler import reconcile
from services.worker.runtime import Runtime

pytestmark = pytest.mark.integration


def test_a_part_that_fails_every_pass_does_not_starve_the_parts_after_it(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []

    def broken(_rt: Runtime) -> list[str]:
        ran.append("deliver")
        raise TimeoutError("git push took longer than 120s")

    def noting(name: str) -> object:
        def part(*_args: object) -> list[str]:
            ran.append(name)
            return []

        return part

    monkeypatch.setattr(reconciler, "deliver", broken)
    for name in ("clean", "sweep_webhooks", "release_instances"):
        monkeypatch.setattr(reconciler, name, noting(name))

    with pytest.raises(TimeoutError, match="git push"):
        reconcile(rt)
    assert ran == ["deliver", "clean", "sweep_webhooks", "release_instances"]
