"""ExecuteST: run the decided argv without a shell, allowlisted, time- and output-capped.

The run succeeds iff the command exits 0; its output is an artifact either way.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from services.worker.steps.base import ArtifactOut, StepContext, StepOutcome, Stopwatch
from shared.domain.run_machine import StepId

PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "PYENV_ROOT", "TMPDIR")
"""The only variables a verification command inherits: no tokens, no keys."""


@dataclass(frozen=True)
class Completed:
    exit_code: int | None
    output: bytes
    timed_out: bool
    truncated: bool


def program_allowed(argv: list[str], allowlist: tuple[str, ...]) -> str | None:
    """None if argv[0] is a bare allowlisted program name, else why not."""
    program = argv[0] if argv else ""
    if not program or "/" in program or "\\" in program:
        return f"program {program!r} must be a bare name from the allowlist"
    if program not in allowlist:
        return f"program {program!r} is not on the allowlist ({', '.join(allowlist)})"
    return None


def scrubbed_env(source: dict[str, str]) -> dict[str, str]:
    env = {k: source[k] for k in PASSED_ENV if k in source}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_capped(
    argv: list[str], cwd: Path, *, timeout_s: int, cap: int, env: dict[str, str]
) -> Completed:
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output if isinstance(exc.output, bytes) else b""
        return Completed(None, out[:cap], timed_out=True, truncated=len(out) > cap)
    except OSError as exc:
        return Completed(
            127, f"cannot run {argv[0]}: {exc}".encode(), timed_out=False, truncated=False
        )
    return Completed(
        proc.returncode, proc.stdout[:cap], timed_out=False, truncated=len(proc.stdout) > cap
    )


def execute_step(ctx: StepContext) -> StepOutcome:
    decided = ctx.outputs.get(StepId.DECIDE.value)
    if ctx.worktree_path is None or decided is None or ctx.approved_at is None:
        return StepOutcome.failed("execute needs an approved, decided run with a worktree", {})
    argv = [str(a) for a in decided.get("argv", [])]
    settings = ctx.rt.settings
    refusal = program_allowed(argv, settings.exec_allowlist)
    if refusal is not None:
        return StepOutcome.failed(
            refusal, {"argv": argv, "allowlist": list(settings.exec_allowlist)}
        )
    watch = Stopwatch(ctx)
    with watch.measure():
        done = run_capped(
            argv,
            ctx.worktree_path,
            timeout_s=settings.exec_timeout_s,
            cap=settings.exec_output_cap,
            env=scrubbed_env(dict(os.environ)),
        )
    output = {
        "argv": argv,
        "command_ms": watch.ms,
        "exit_code": done.exit_code,
        "timed_out": done.timed_out,
        "truncated": done.truncated,
    }
    artifact = ArtifactOut(
        "command_output", "command-output.txt", done.output, "text/plain; charset=utf-8"
    )
    if done.exit_code == 0:
        return StepOutcome(ok=True, output=output, artifacts=[artifact])
    reason = "timed out" if done.timed_out else f"exited {done.exit_code}"
    failure = StepOutcome.failed(f"verification {reason}: {' '.join(argv)}", output)
    failure.output = output
    failure.artifacts.append(artifact)
    return failure
