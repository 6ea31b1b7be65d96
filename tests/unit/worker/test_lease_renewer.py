"""The process's lease renewer: one thread beats every running delivery's keeper."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from sqlalchemy.exc import InterfaceError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.worker.steps.base import LeaseKeeper, _Renewer
from shared.domain.run_machine import StepId
from shared.domain.step_lease import StepLease
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


def test_a_keeper_due_sooner_than_the_renewer_looks_wakes_it() -> None:
    """The renewer sleeps until its soonest keeper is due; a keeper due before that (a
    shorter lease) is beaten on its own time, not at the slow keeper's."""
    renewer = _Renewer()
    slow = Keeper(every_s=30.0)
    renewer.add(slow)  # type: ignore[arg-type]
    wait_until(lambda: renewer._wakes_at > 0, 5, "the renewer asleep until the slow keeper")
    fast = Keeper(every_s=0.02)
    renewer.add(fast)  # type: ignore[arg-type]
    wait_until(lambda: fast.beats >= 3, 5, "the fast keeper beaten")
    assert slow.beats == 0


def test_a_keeper_due_later_leaves_the_renewer_asleep_and_is_beaten_in_its_turn() -> None:
    renewer = _Renewer()
    first = Keeper(every_s=2.0)
    renewer.add(first)  # type: ignore[arg-type]
    wait_until(lambda: renewer._wakes_at > 0, 5, "the renewer asleep until the first keeper")
    asleep_until = renewer._wakes_at
    later = Keeper(every_s=2.5)
    renewer.add(later)  # type: ignore[arg-type]
    assert renewer._wakes_at == asleep_until  # not woken: it looks at `first`'s time
    wait_until(lambda: later.beats >= 1, 10, "the later keeper beaten all the same")


class FlakyLeases:
    """Renewals that fail with each of ``errors`` in turn, then succeed."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.renewed = 0

    def renew(self, lease: StepLease) -> bool:
        if self.errors:
            raise self.errors.pop(0)
        self.renewed += 1
        return True


def test_a_renewal_that_fails_is_tried_again_and_the_renewer_lives_on() -> None:
    """The pool exhausted, a broken connection, anything else: one renewer serves every
    delivery of the process, so none of these may end it (every lease would lapse and
    ``remove`` would wait for a beat that never ends)."""
    leases = FlakyLeases(
        PoolTimeout("QueuePool limit reached"),
        InterfaceError("SELECT 1", {}, Exception("connection already closed")),
        RuntimeError("unexpected"),
    )
    ctx = SimpleNamespace(lease=StepLease("run", StepId.COMPILE, 1, 0.06), leases=leases)
    keeper = LeaseKeeper(ctx)  # type: ignore[arg-type]
    renewer = _Renewer()
    renewer.add(keeper)
    wait_until(lambda: leases.renewed >= 2, 5, "renewals after three failures")
    renewer.remove(keeper)
    assert leases.errors == []
