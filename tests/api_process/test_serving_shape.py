"""The API's gunicorn opens nothing beyond its listening socket.

gunicorn 25+ opens a control socket (reload, shutdown, worker count) at one fixed
per-user path by default, so every API on a host, a test's or another deployment's,
would bind the same path and the last one started would answer for all of them. kodo
never uses it, so the serving shape disables it.
"""

from __future__ import annotations

from devstack.kodo_procs import Stack


def test_the_api_opens_no_control_socket_that_another_instance_could_take_over(
    api_stack: Stack,
) -> None:
    log = api_stack.proc("api").log_tail(400)
    assert "Listening at: http://127.0.0.1:" in log
    assert "Control socket" not in log, log
