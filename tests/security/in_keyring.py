"""Start a program inside a new session keyring that holds one user key.

The security suite starts its worker through this, as a login session (pam_keyinit) or
a systemd service starts ``kodo up``'s: the worker then possesses a keyring with a
secret in it, and an attack on the keyring from a sandboxed command has something of
the worker's to steal. Usage: ``in_keyring.py STATUS_FILE KEY_NAME -- PROGRAM ARGS...``
with the key's value in ``KODO_TEST_KEYRING_CANARY`` (removed before the program
starts, so it is in the keyring only). STATUS_FILE says ``joined``, or why not
(``unavailable: ...``: no keyrings in this kernel, a seccomp filter); the program is
started either way. The standard library only: it runs before anything of kodo.
"""

from __future__ import annotations

import ctypes
import os
import sys

KEYCTL = {"x86_64": 250, "aarch64": 219}
ADD_KEY = {"x86_64": 248, "aarch64": 217}
KEYCTL_JOIN_SESSION_KEYRING = 1
KEY_SPEC_SESSION_KEYRING = -3
SESSION_NAME = b"kodo-security-worker"


def join_with_key(name: bytes, secret: bytes) -> str:
    machine = os.uname().machine
    if machine not in KEYCTL:
        return f"unavailable: no keyctl number known for {machine}"
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(KEYCTL[machine], KEYCTL_JOIN_SESSION_KEYRING, SESSION_NAME) < 0:
        return f"unavailable: keyctl join: {os.strerror(ctypes.get_errno())}"
    added = libc.syscall(
        ADD_KEY[machine],
        b"user",
        name,
        secret,
        ctypes.c_size_t(len(secret)),
        ctypes.c_long(KEY_SPEC_SESSION_KEYRING),
    )
    if added < 0:
        return f"unavailable: add_key: {os.strerror(ctypes.get_errno())}"
    return "joined"


def main() -> None:
    status_file, name, dashes, *argv = sys.argv[1:]
    if dashes != "--" or not argv:
        sys.exit("usage: in_keyring.py STATUS_FILE KEY_NAME -- PROGRAM ARGS...")
    secret = os.environ.pop("KODO_TEST_KEYRING_CANARY").encode()
    with open(status_file, "w", encoding="utf-8") as out:
        out.write(join_with_key(name.encode(), secret) + "\n")
    os.execv(argv[0], argv)  # noqa: S606 (the argv the harness gives, no shell)


if __name__ == "__main__":
    main()
