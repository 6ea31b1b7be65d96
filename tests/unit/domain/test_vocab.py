"""The stored vocabularies: what each enum allows and how a late call reads."""

from __future__ import annotations

from shared.domain.vocab import LATE, ArtifactKind, CallStatus, values


def test_only_the_two_late_call_statuses_are_late() -> None:
    late = {CallStatus.SUCCEEDED_LATE, CallStatus.FAILED_LATE}
    assert {s for s in CallStatus if s.is_late} == late
    assert late == LATE


def test_values_are_the_stored_spellings_in_declaration_order() -> None:
    kinds = ("plan_card", "patch", "decision", "command_output", "diagnostic")
    assert values(ArtifactKind) == kinds
    assert values(CallStatus)[:2] == ("claimed", "succeeded")
