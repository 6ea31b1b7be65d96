"""The process's lease renewer: one thread beats every running delivery's keeper."""

from __future__ import annotations

import threading

from services.worker.steps.base import _Renewer
from tests.waiting import wait_until


class Keeper:
    """Counts its beats; ``hold`` blocks a beat until released."""

    def __init__(self, every_s: float = 0.02, kept: bool = True) -> None:
        self.every_s = every_s
        self.kept = kept
        self.beats = 0
        self.beating = threading.Event()
        self.hold = threading.Event()
        self.hold.set()

    def beat(self) -> bool:
        self.beats += 1
        self.beating.set()
        self.hold.wait()
        return self.kept


def test_every_keeper_is_beaten_until_removed() -> None:
    renewer = _Renewer()
    a, b = Keeper(), Keeper()
    renewer.add(a)  # type: ignore[arg-type]
    renewer.add(b)  # type: ignore[arg-type]
    wait_until(lambda: a.beats >= 3 and b.beats >= 3, 5, "both keepers beaten")
    renewer.remove(a)  # type: ignore[arg-type]
    seen = a.beats
    wait_until(lambda: b.beats >= seen + 3, 5, "the other keeper beaten on")
    assert a.beats == seen


def test_a_lost_lease_is_no_longer_beaten() -> None:
    renewer = _Renewer()
    lost = Keeper(kept=False)
    renewer.add(lost)  # type: ignore[arg-type]
    wait_until(lambda: lost.beats >= 1, 5, "the lost lease's beat")
    other = Keeper()
    renewer.add(other)  # type: ignore[arg-type]
    wait_until(lambda: other.beats >= 3, 5, "another keeper beaten")
    assert lost.beats == 1


def test_removing_a_keeper_waits_for_its_beat_under_way() -> None:
    """The step parks right after: a renewal landing after the park would stretch it."""
    renewer = _Renewer()
    keeper = Keeper()
    keeper.hold.clear()
    renewer.add(keeper)  # type: ignore[arg-type]
    assert keeper.beating.wait(timeout=5)
    removed = threading.Event()
    remover = threading.Thread(target=lambda: (renewer.remove(keeper), removed.set()))  # type: ignore[arg-type]
    remover.start()
    assert not removed.wait(timeout=0.2)  # still beating: remove has not returned
    keeper.hold.set()
    assert removed.wait(timeout=5)
    remover.join()
