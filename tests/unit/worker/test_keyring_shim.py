"""The shim that gives every sandboxed command a session keyring of its own.

Run for real (no sandbox needed): the program it starts must hold a new session keyring,
never its parent's, whether Perl or the worker's own Python joined it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

import pytest

from services.worker.sandbox import keyring

SESSION_ID = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
print(libc.syscall({number}, 0, -3, 0))  # KEYCTL_GET_KEYRING_ID of @s, never created
"""


def session_keyring_here() -> int:
    number = keyring.KEYCTL_SYSCALL.get(os.uname().machine)
    if number is None:
        pytest.skip(f"no keyctl number known for {os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    found = int(libc.syscall(number, 0, -3, 0))
    if found < 0:
        pytest.skip(f"no keyrings here: errno {ctypes.get_errno()}")
    return found


@pytest.fixture(params=["perl", "python"])
def shim(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        monkeypatch.setattr(keyring, "PERL", "/nonexistent/perl")
    return str(request.param)


def test_perl_starts_the_command_where_the_system_has_it() -> None:
    argv = keyring.own_keyring_argv(["/usr/bin/true", "-x"])
    number = keyring.KEYCTL_SYSCALL[os.uname().machine]
    assert argv == [keyring.PERL, "-e", keyring.PERL_SHIM, "--", str(number), "/usr/bin/true", "-x"]


def test_without_perl_the_python_shim_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyring, "PERL", "/nonexistent/perl")
    argv = keyring.own_keyring_argv(["/usr/bin/true"])
    assert argv == [keyring.PYTHON, "-I", "-S", "-c", keyring.SHIM, "/usr/bin/true"]


def test_on_a_machine_without_a_known_keyctl_number_the_python_shim_decides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It names the machine and starts nothing (its own copy of the table says so)."""
    monkeypatch.setattr(keyring, "KEYCTL_SYSCALL", {})
    argv = keyring.own_keyring_argv(["/usr/bin/true"])
    assert argv == [keyring.PYTHON, "-I", "-S", "-c", keyring.SHIM, "/usr/bin/true"]


def test_the_command_holds_a_new_session_keyring(shim: str) -> None:
    mine = session_keyring_here()
    number = keyring.KEYCTL_SYSCALL[os.uname().machine]
    program = [sys.executable, "-I", "-S", "-c", SESSION_ID.format(number=number)]
    done = subprocess.run(
        keyring.own_keyring_argv(program), env={}, capture_output=True, text=True, check=True
    )
    theirs = int(done.stdout)
    assert theirs > 0, f"{shim}: the command holds no session keyring: {done.stderr}"
    assert theirs != mine, f"{shim}: the command holds its parent's session keyring"


def test_a_program_that_cannot_start_is_refused_with_the_shims_status(shim: str) -> None:
    done = subprocess.run(
        keyring.own_keyring_argv(["/nonexistent/program"]),
        env={},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    if shim == "perl":
        assert done.returncode == keyring.KEYRING_FAILED
        assert "cannot start /nonexistent/program" in done.stderr


def test_the_command_gets_sigpipe_and_sigxfsz_at_their_defaults(shim: str) -> None:
    """Python ignores both for itself, and an exec keeps an ignored signal ignored: behind
    the Python shim a pipeline's writer never died of its closed pipe, and a write past
    the file-size limit got EFBIG instead of SIGXFSZ (found by a review of the Perl shim,
    which never had it)."""
    done = subprocess.run(
        keyring.own_keyring_argv(["/bin/grep", "^SigIgn", "/proc/self/status"]),
        env={},
        capture_output=True,
        text=True,
        check=True,
    )
    ignored = int(done.stdout.split()[1], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), f"{shim}: {sig.name} ignored ({done.stdout})"


def test_a_program_is_started_by_absolute_path_only() -> None:
    """Perl's exec would look a bare name up on PATH; kodo always names the program."""
    with pytest.raises(ValueError, match="absolute path"):
        keyring.own_keyring_argv(["true"])
    with pytest.raises(ValueError, match="absolute path"):
        keyring.own_keyring_argv([])
