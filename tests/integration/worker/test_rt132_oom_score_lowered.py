"""A sandboxed command lowers its own oom_score_adj (red-team helper-132).

helper-130's fix: the keyring shim sets ``oom_score_adj`` 1000, "inherited by
everything in the sandbox and never lowered inside it" (README; keyring.py). The kernel
lets a process lower its ``oom_score_adj`` without CAP_SYS_RESOURCE down to its
``oom_score_adj_min``, which only a write by a process holding CAP_SYS_RESOURCE (in the
initial user namespace) raises; the shim's write leaves it at the worker's (0). Measured
here (root worker, the default sandbox): the command reads 1000, writes 0 and reads 0.
A command holding its memory in memfds then writes 0 first and is again ranked below
the worker (RSS) by the OOM killer: helper-130's rt130_oom_victim attack with one more
line.

Safe outcome: the write is refused (EACCES), e.g. the shim raising
``oom_score_adj_min`` too (write it while holding CAP_SYS_RESOURCE: the root worker's
shim before any capability is dropped; a non-root worker cannot, and must then not
promise it), or the value read back 1000.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.worker.test_sandbox import run_python, said, worktree  # noqa: F401

pytestmark = pytest.mark.integration

LOWER = """
def adj():
    return open("/proc/self/oom_score_adj").read().strip()
print("BEFORE", adj())
try:
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("0")
    print("WROTE")
except OSError as exc:
    print("REFUSED", exc.errno)
print("AFTER", adj(), flush=True)
"""


CAP_SYS_RESOURCE = 24


def _holds_cap_sys_resource() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


@pytest.mark.xfail(
    not _holds_cap_sys_resource(),
    strict=True,
    reason=(
        "open where the worker lacks CAP_SYS_RESOURCE (this machine's root, a container's,"
        " a non-root worker): only a write holding it raises oom_score_adj_min"
    ),
)
def test_a_sandboxed_command_cannot_lower_its_oom_score_adj(worktree: Path) -> None:  # noqa: F811
    done = run_python(LOWER, worktree, label="rt132-oom")
    out = said(done)
    assert "BEFORE 1000" in out, out  # the shim did set it
    assert "AFTER 1000" in out, (
        "the sandboxed command lowered its oom_score_adj from 1000 and is no longer the"
        f" OOM killer's first choice:\n{out}"
    )
