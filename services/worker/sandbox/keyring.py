"""A session keyring of the sandbox's own (pure: the shim's argv).

A process inherits its parent's session keyring, and possessing a keyring grants what
its keys allow their possessor (by default: everything), whatever the uid or user
namespace. So every sandboxed command possessed the worker's session keyring: under a
login session (``kodo up`` from a desktop, pam_keyinit) or a systemd service (a private
keyring per service) it read the keys there (Kerberos tickets, tokens) and left keys of
its own for the next run's command to read. bubblewrap, setpriv and unshare change no
keyring, so bubblewrap is started through :data:`SHIM`, which joins a new anonymous
session keyring (``KEYCTL_JOIN_SESSION_KEYRING``) and execs it: the command's keyring
is empty, its own, and gone with the sandbox.

The shim is also what first makes the sandbox's processes the OOM killer's first choice
(``oom_score_adj`` 1000, inherited by everything it starts; written while the worker
holds CAP_SYS_RESOURCE, as root on a host does, it is also the floor no process in the
sandbox may go below; without it, a command may write it back down to 0, red-team
helper-132): what a command holds in memfds, its ``/tmp`` and its worktree's tmpfs is
in no process's RSS, and when the host or the worker's container ran out, the kernel
killed the worker, the largest process, and left the command holding the memory
(red-team helper-130). A shim that cannot set it starts nothing.

The shim is Perl where the system has it (Debian's perl-base is Essential, so every
image kodo ships): about 2 ms of CPU per command against 8 ms for an interpreter of the
worker's own, paid on every verification. The Python shim, the standard library only,
is the same rule where there is no Perl.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

KEYCTL_SYSCALL = {
    "x86_64": 250,
    "aarch64": 219,
    "arm64": 219,
    "riscv64": 219,
    "loongarch64": 219,
    "s390x": 280,
    "ppc64le": 355,
    "ppc64": 355,
    "i386": 288,
    "i686": 288,
    "armv7l": 311,
}
"""keyctl(2)'s number per machine (the C library has no wrapper; libkeyutils may be
absent)."""
OOM_SCORE_ADJ = 1000
"""The sandbox's processes are the OOM killer's first choice (the most a process may say)."""
KEYRING_FAILED = 125
"""The shim's exit status when it could not join a keyring of its own (nothing ran)."""
SHIM = f"""
import ctypes, errno, os, signal, sys
number = {KEYCTL_SYSCALL!r}.get(os.uname().machine)
if number is None:
    print("kodo-sandbox: no keyctl number known for", os.uname().machine, file=sys.stderr)
    sys.exit({KEYRING_FAILED})
try:
    with open("/proc/self/oom_score_adj", "w") as adj:
        adj.write("{OOM_SCORE_ADJ}\\n")
except OSError as exc:
    print("kodo-sandbox: cannot set its oom_score_adj:", exc, file=sys.stderr)
    sys.exit({KEYRING_FAILED})
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
if libc.syscall(number, 1, None) < 0:
    # no keys in this kernel, or a seccomp filter forbidding keyctl (which the sandbox
    # inherits): there is no keyring to reach
    if ctypes.get_errno() not in (errno.ENOSYS, errno.EPERM):
        said = os.strerror(ctypes.get_errno())
        print("kodo-sandbox: cannot join a session keyring of its own:", said, file=sys.stderr)
        sys.exit({KEYRING_FAILED})
# Python ignores these two for itself and an exec keeps an ignored signal ignored: the
# command gets them at their defaults, as from any other parent (and from PERL_SHIM).
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])
"""


PYTHON = "/proc/self/exe"
"""The interpreter the shim runs on: the worker's own binary, which the worker can always
start again (its path may sit behind a folder its user cannot walk, or be gone after an
upgrade); ``-I -S``: no site, no environment, standard library only."""


PERL = "/usr/bin/perl"
PERL_SHIM = f"""
my $number = shift @ARGV;
my $adj;  # (declared apart: a my is seen only from the next statement on)
unless (open($adj, '>', '/proc/self/oom_score_adj')
        and print({{$adj}} "{OOM_SCORE_ADJ}\\n") and close($adj)) {{
    print STDERR "kodo-sandbox: cannot set its oom_score_adj: $!\\n";
    exit {KEYRING_FAILED};
}}
if (syscall($number, 1, 0) < 0 && !$!{{ENOSYS}} && !$!{{EPERM}}) {{
    print STDERR "kodo-sandbox: cannot join a session keyring of its own: $!\\n";
    exit {KEYRING_FAILED};
}}
exec {{ $ARGV[0] }} @ARGV;
print STDERR "kodo-sandbox: cannot start $ARGV[0]: $!\\n";
exit {KEYRING_FAILED};
"""
"""The same rule as :data:`SHIM` in Perl, keyctl's number its first argument: a literal
``0`` is passed as a null pointer (an anonymous keyring), ``ENOSYS`` and ``EPERM`` mean
no keyring can be reached (the sandbox inherits the seccomp filter that said so), and
``exec { $ARGV[0] }`` runs the program itself, never through a shell. Started with
no environment (no ``PERL5LIB``, no ``PERL5OPT``), as every sandbox process is."""


def own_keyring_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` (argv[0] an absolute path) started with a new, empty session keyring:
    through :data:`PERL` when it is an executable and keyctl's number here is known, else
    through the Python shim (which names an unknown machine and starts nothing)."""
    if not argv or not os.path.isabs(argv[0]):
        # Perl's exec would search PATH (and hand a file that is no program to /bin/sh)
        raise ValueError(f"the keyring shim starts a program by absolute path: {argv[:1]!r}")
    number = KEYCTL_SYSCALL.get(os.uname().machine)
    if number is not None and os.access(PERL, os.X_OK):
        return [PERL, "-e", PERL_SHIM, "--", str(number), *argv]
    return [PYTHON, "-I", "-S", "-c", SHIM, *argv]
