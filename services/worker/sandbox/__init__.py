"""A bubblewrap sandbox for every command an agent chose (see README "Security").

The command gets its own PID, mount, network, IPC, UTS and user namespaces (and may
make no user namespace of its own), an
unprivileged uid with no capabilities, a read-only system (``/usr`` and the prefixes of
the allowlisted programs), a minimal ``/etc``, a fresh ``/proc``, a minimal ``/dev``, a
private ``/tmp``, and the checkout to verify as its worktree, read-only on the host:
what the command writes there lands in a tmpfs of bounded size (an overlay when the
worker is root; without root, a copy of the checkout) and is gone with the sandbox, so
no host directory is writable to it. Nothing else of the host is mounted: not ``/root``, ``/home``,
``/run``, ``/var``, kodo's state or workspace, other worktrees or the source repository.
rlimits bound CPU time, address space, processes and file size; a child cgroup per
execution (:mod:`.cgroup`) bounds the whole tree's memory, shared
memory and tmpfs included, and its process count. When the command ends (or is killed)
the PID namespace's init dies and the kernel kills every process left; the cgroup is
then emptied and removed.

RLIMIT_NPROC never binds host uid 0, so a worker running as root maps the sandbox to
``KODO_SANDBOX_UID`` itself (bubblewrap's ``--userns-block-fd``), drops to it with
``setpriv`` and lends the worktree to that uid for the command's lifetime.

Modules: :mod:`.layout` (the bubblewrap argv, pure), :mod:`.toolchain` (which programs
and host directories to bind), :mod:`.capture` (a run with capped output),
:mod:`.cgroup_plan` and :mod:`.cgroup` (the per-execution cgroup, pure and IO),
:mod:`.runner` (the :class:`Sandbox` and its settings adapters).
"""

from services.worker.sandbox.capture import Finished
from services.worker.sandbox.layout import (
    HostSystem,
    Layout,
    Limits,
    Toolchain,
    bwrap_argv,
    id_map,
    sandbox_env,
    unsafe_bind,
)
from services.worker.sandbox.runner import (
    Sandbox,
    SandboxUnavailable,
    limits_of,
    run_unsandboxed,
    sandbox_cgroup_warning,
    sandbox_of,
    sandbox_problem,
)

__all__ = [
    "Finished",
    "HostSystem",
    "Layout",
    "Limits",
    "Sandbox",
    "SandboxUnavailable",
    "Toolchain",
    "bwrap_argv",
    "id_map",
    "limits_of",
    "run_unsandboxed",
    "sandbox_cgroup_warning",
    "sandbox_env",
    "sandbox_of",
    "sandbox_problem",
    "unsafe_bind",
]
