"""Prompt directives script the compat model's failures."""

from __future__ import annotations

from standins.oc_compat.directives import parse, strip


def test_a_plain_prompt_has_no_directives_and_is_attempt_one() -> None:
    directives = parse("Add a greeting to README.md")
    assert not directives.wants_invalid
    assert directives.slow_ms == 0
    assert directives.tools == ()
    assert directives.attempt == 1


def test_invalid_attempts_stop_after_the_named_attempt() -> None:
    assert parse("[oc:invalid-attempts=2]\nkodo-attempt: 1").wants_invalid
    assert parse("[oc:invalid-attempts=2]\nkodo-attempt: 2").wants_invalid
    assert not parse("[oc:invalid-attempts=2]\nkodo-attempt: 3").wants_invalid


def test_http500_attempts_answer_500_up_to_the_named_attempt_only() -> None:
    assert parse("[oc:http500-attempts=2]\nkodo-attempt: 1").wants_http500
    assert parse("[oc:http500-attempts=2]\nkodo-attempt: 2").wants_http500
    assert not parse("[oc:http500-attempts=2]\nkodo-attempt: 3").wants_http500
    assert parse("[oc:http500]\nkodo-attempt: 9").wants_http500
    assert not parse("plain\nkodo-attempt: 1").wants_http500


def test_every_directive_is_read() -> None:
    directives = parse(
        "[oc:invalid] [oc:no-structured] [oc:api-error=retryable] [oc:slow=250] "
        "[oc:http500] [oc:fail-verify] [oc:tool=bash] [oc:tool=write]"
    )
    assert directives.invalid
    assert directives.no_structured
    assert directives.api_error == "retryable"
    assert directives.slow_ms == 250
    assert directives.http500
    assert directives.fail_verify
    assert directives.tools == ("bash", "write")


def test_a_bare_api_error_means_the_non_retryable_kind() -> None:
    assert parse("[oc:api-error]").api_error == ""


def test_stripping_removes_directives_so_echoes_do_not_re_arm_them() -> None:
    assert strip("fix it [oc:fail-verify] now") == "fix it  now"
