"""ExecuteST: run the decided argv, allowlisted, in the sandbox (services/worker/sandbox/).

The run succeeds iff the command exits 0; its output (the first KODO_EXEC_OUTPUT_CAP
bytes) is an artifact either way. Without a working sandbox the step refuses to run
the command, unless the operator set KODO_SANDBOX=off (logged on every execution and
recorded in the step's output). While the command runs the step checks its lease and
the run's status every second: a cancel kills the whole sandbox.

The command runs on the commit ApplyPatchST judged, nothing else: every worktree lies
in the daemon's one writable folder, so a daemon still writing after its answer, or
another run's agent, may change it at any time, even while the command runs. So the
command gets a private checkout of the judged commit (``<workspaces>.exec/<run>``, out
of the daemon's sight, removed after). The run's worktree is still checked first (rule
``worktree_matches_commit``): on the first delivery it must be HEAD exactly, else the
step fails naming what differs, since something wrote there after the judgement; a
redelivery resets it to HEAD first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import structlog

from services.worker.git_ops import (
    UNFAITHFUL_RULE,
    CheckoutBounds,
    UnfaithfulCheckout,
    Worktree,
    exec_root,
    pinned,
    private_checkout,
    quarantine_root,
    reset_worktree,
    stage_root,
    trash_root,
    tree_git_bytes,
    weigh_checkout,
)
from services.worker.sandbox import (
    Finished,
    SandboxUnavailable,
    limits_of,
    run_unsandboxed,
    sandbox_cgroup_warning,
    sandbox_of,
)
from services.worker.sandbox.cgroup import CgroupUnavailable
from services.worker.sandbox.layout import PYCACHE_PREFIX, VERDICT_ENV
from services.worker.steps.base import (
    ArtifactOut,
    StepContext,
    StepOutcome,
    Stopwatch,
    judged_commit,
    opened_worktree,
    run_policy,
)
from services.worker.worktree_guard import names_below, shown_path, special_files_problem
from shared.config import Settings
from shared.domain.exec_rules import argv_violation
from shared.domain.policy import effective_allowlist
from shared.domain.ran_tests import ran_nothing
from shared.domain.run_machine import StepId
from shared.domain.vocab import ArtifactKind
from shared.real_path import resolved

log = structlog.get_logger("kodo.execute")

PASSED_ENV = ("PATH", "LANG", "LC_ALL")
"""The only host variables an unsandboxed (opted-out) command inherits: no tokens, no keys."""
POLL_S = 1.0
"""How often a running command's step checks its lease (and so notices a cancel)."""


def scrubbed_env(source: dict[str, str], *, hide_bytecode: bool = True) -> dict[str, str]:
    env = {k: source[k] for k in PASSED_ENV if k in source}
    env.update({"PYTHONDONTWRITEBYTECODE": "1", **VERDICT_ENV, "HOME": "/nonexistent"})
    if hide_bytecode:  # (a checkout's __pycache__ is never read: see PYCACHE_PREFIX)
        env["PYTHONPYCACHEPREFIX"] = PYCACHE_PREFIX
    return env


def announce_sandbox(settings: Settings, environ: dict[str, str]) -> None:
    """At worker start: say loudly if commands will run unsandboxed or not at all."""
    if not settings.sandbox:
        log.warning(
            "sandbox.OFF",
            detail="KODO_SANDBOX=off: agent-chosen commands run UNSANDBOXED on this host",
        )
        return
    why_not = sandbox_of(settings, environ).unavailable()
    if why_not is not None:
        log.error("sandbox.unavailable", reason=why_not, detail="ExecuteST will refuse to run")
        return
    log.info("sandbox.ready", bwrap=settings.sandbox_bwrap, network=settings.sandbox_network)
    if settings.sandbox_cgroup == "required":
        no_cgroup = sandbox_of(settings, environ).cgroup_unavailable()
        if no_cgroup is not None:
            log.error(
                "sandbox.cgroup_unavailable", reason=no_cgroup, detail="ExecuteST will refuse"
            )
        return
    warning = sandbox_cgroup_warning(settings, environ)
    if warning is not None:
        log.warning("sandbox.CGROUP_UNAVAILABLE", detail=warning)


def protected_paths(ctx: StepContext) -> list[str]:
    """Host paths no bind may expose (besides sandbox.layout.ALWAYS_PROTECTED)."""
    workspaces = ctx.rt.settings.workspace_dir
    paths = [
        workspaces,
        exec_root(workspaces),
        stage_root(workspaces),
        trash_root(workspaces),
        quarantine_root(workspaces),
        ctx.repo_path,
        Path.home(),
        Path.cwd(),
    ]
    return [str(resolved(p)) for p in paths]


def _artifact(done: Finished, cap: int) -> ArtifactOut:
    body = done.head
    if done.truncated:
        body += (
            f"\n[kodo: output truncated: {done.total_bytes} bytes written, the first {cap} kept]\n"
        ).encode()
    return ArtifactOut(
        ArtifactKind.COMMAND_OUTPUT, "command-output.txt", body, "text/plain; charset=utf-8"
    )


def _cgroup_refusal(argv: list[str], why: str) -> StepOutcome:
    return StepOutcome.failed(
        f"sandbox_cgroup: {why}; KODO_SANDBOX_CGROUP=required runs commands only in a"
        " memory-bounded cgroup (delegate one to the worker, or set it to auto)",
        {"rule": "sandbox_cgroup", "argv": argv, "memory_cgroup": f"unavailable: {why}"},
    )


WORKTREE_RULE = "worktree_matches_commit"


def worktree_problem(ctx: StepContext, worktree: Worktree) -> str | None:
    """Why ``worktree`` is not exactly the commit ApplyPatchST judged, or None: its HEAD
    and its files, from one ``git status`` (``--porcelain=v2 --branch`` names HEAD's
    commit)."""
    commit = judged_commit(ctx)
    if commit is None:
        return f"{WORKTREE_RULE}: no judged commit"
    if not ctx.first_delivery:
        reset_worktree(worktree)  # an earlier delivery's command may have left files
    with pinned(worktree) as folder:
        special = special_files_problem(folder)
    if special is not None:
        return f"{WORKTREE_RULE}: {special[0]}"
    status = tree_git_bytes(  # nothing writable: status refreshes the index only if it may
        worktree,
        "status", "--porcelain=v2", "-z", "--branch", "--untracked-files=all", "--ignored",
    )  # fmt: skip
    head, changed = status_v2(os.fsdecode(status))
    if head != commit:
        return f"{WORKTREE_RULE}: the worktree is at {head}, the judged commit is {commit}"
    if changed:
        with pinned(worktree) as folder:
            shown, hidden = names_below(folder, changed, 20)
        unseen = f" ({hidden} more names read through a link, not shown)" if hidden else ""
        return (
            f"{WORKTREE_RULE}: the worktree differs from the judged commit:"
            f" {', '.join(shown_path(p) for p in shown)}{unseen}"
        )
    return None


_V2_PATH_AT = {"1": 8, "2": 9, "u": 10, "?": 1, "!": 1}
"""Where an entry of ``git status --porcelain=v2`` names its path: after that many
space-separated fields."""


def status_v2(status: str) -> tuple[str | None, list[str]]:
    """HEAD's commit (``# branch.oid``; None before the first commit) and the paths of
    the entries of ``git status --porcelain=v2 -z``: each record ends in a NUL, names are
    as the filesystem holds them (never quoted), and a rename's record is followed by
    one holding its original path."""
    head: str | None = None
    paths = []
    records = iter(status.split("\0"))
    for record in records:
        if record.startswith("# branch.oid "):
            oid = record.removeprefix("# branch.oid ").strip()
            head = None if oid == "(initial)" else oid
        elif record and not record.startswith("#"):
            paths.append(record.split(" ", _V2_PATH_AT.get(record[0], 0))[-1])
            if record[0] == "2":
                next(records, None)  # the original path
    return head, paths


def execute_step(ctx: StepContext) -> StepOutcome:
    decided = ctx.outputs.get(StepId.DECIDE.value)
    if ctx.worktree_path is None or decided is None or ctx.approved_at is None:
        return StepOutcome.failed(
            "approved_plan_required: execute needs an approved, decided run with a worktree",
            {"rule": "approved_plan_required", "plan_sha256": ctx.plan_sha256},
        )
    argv = [str(a) for a in decided.get("argv", [])]
    settings = ctx.rt.settings
    policy = run_policy(ctx)
    allowlist = effective_allowlist(policy, settings.exec_allowlist)
    refused = policy.verification_refusal(argv) or argv_violation(argv, allowlist)
    if refused is not None:
        return StepOutcome.failed(
            f"{refused.rule}: {refused.detail}",
            {"rule": refused.rule, "argv": argv, "allowlist": list(allowlist)},
        )
    git = Stopwatch(ctx)  # the worktree's check, the private checkout made and removed
    with git.measure():
        tampered = worktree_problem(ctx, opened_worktree(ctx, ctx.worktree_path))
    commit = judged_commit(ctx)
    if tampered is not None or commit is None:  # no judged commit is a problem it names
        said = tampered or f"{WORKTREE_RULE}: no judged commit"
        return StepOutcome.failed(said, {"rule": WORKTREE_RULE, "argv": argv})
    with git.measure():  # (the agent's change too: every file under its bound, not all)
        bounds = CheckoutBounds.of_worktree(settings.exec_worktree_bytes)
        weighed = weigh_checkout(ctx.repo_path, commit, bounds)
    if weighed.refusal is not None:
        rule, detail = weighed.refusal
        return StepOutcome.failed(detail, {"rule": rule, "argv": argv})
    try:
        with private_checkout(
            ctx.repo_path,
            settings.workspace_dir,
            ctx.run_id,
            commit,
            timed=git.measure,
            weighed=weighed,
        ) as tree:
            outcome = _run_on(ctx, argv, allowlist, tree, weighed.carries_bytecode)
    except UnfaithfulCheckout as exc:
        return StepOutcome.failed(
            str(exc),
            {"rule": UNFAITHFUL_RULE, "argv": argv, "paths": [shown_path(p) for p in exc.paths]},
        )
    if "command_ms" in outcome.output:  # the command ran (passed or failed)
        outcome.output["git_ms"] = git.ms
    return outcome


def _run_on(
    ctx: StepContext, argv: list[str], allowlist: tuple[str, ...], tree: Path, bytecode: bool
) -> StepOutcome:
    """Run ``argv`` on ``tree`` (the private checkout of the judged commit); ``bytecode``:
    the tree carries a ``__pycache__``, which Python is kept from reading."""
    settings = ctx.rt.settings
    environ = dict(os.environ)
    watch = Stopwatch(ctx, carried=False)
    sandbox_note: dict[str, Any]
    if settings.sandbox:
        sandbox = sandbox_of(settings, environ)
        why_not = sandbox.unavailable()
        if why_not is not None:
            return StepOutcome.failed(
                f"sandbox_required: {why_not}; agent-chosen commands only run in a sandbox"
                " (install bubblewrap: scripts/bootstrap does; or set KODO_SANDBOX=off to"
                " run them unsandboxed)",
                {"rule": "sandbox_required", "argv": argv, "bwrap": settings.sandbox_bwrap},
            )
        if settings.sandbox_cgroup == "required":
            no_cgroup = sandbox.cgroup_unavailable()
            if no_cgroup is not None:
                return _cgroup_refusal(argv, no_cgroup)
        protected = protected_paths(ctx)  # resolved once: the toolchain's binds and the
        tools = sandbox.toolchain(allowlist, protected)  # sandbox's are judged alike
        program = tools.programs.get(argv[0])
        if program is None:
            return StepOutcome.failed(
                f"sandbox_toolchain: no usable {argv[0]!r} for the sandbox",
                {"argv": argv, "skipped": tools.skipped.get(argv[0], [])},
            )
        sandbox_note = {
            "mode": "bubblewrap",
            "network": settings.sandbox_network,
            "worktree": sandbox.worktree_note(),
        }
        try:
            with watch.measure():
                done = sandbox.run(
                    [program, *argv[1:]],
                    tree,
                    timeout_s=settings.exec_timeout_s,
                    cap=settings.exec_output_cap,
                    protected=protected,
                    toolchain=tools,
                    on_poll=ctx.keep_lease,
                    poll_s=POLL_S,
                    label=str(ctx.run_id),
                    disposable=True,  # the private checkout goes right after
                    hide_bytecode=bytecode,
                )
        except CgroupUnavailable as exc:
            return _cgroup_refusal(argv, str(exc))
        except SandboxUnavailable as exc:  # e.g. the tree the command left cannot be taken back
            return StepOutcome.failed(f"sandbox: {exc}", {"rule": "sandbox", "argv": argv})
    else:
        log.warning("sandbox.OFF", run_id=ctx.run_id, argv=argv, detail="running UNSANDBOXED")
        sandbox_note = {"mode": "off", "warning": "KODO_SANDBOX=off: ran UNSANDBOXED"}
        with watch.measure():
            done = run_unsandboxed(
                argv,
                tree,
                env=scrubbed_env(environ, hide_bytecode=bytecode),
                limits=limits_of(settings),
                timeout_s=settings.exec_timeout_s,
                cap=settings.exec_output_cap,
                on_poll=ctx.keep_lease,
                poll_s=POLL_S,
            )
    output = {
        "argv": argv,
        "command_ms": watch.ms,
        "exit_code": done.exit_code,
        "timed_out": done.timed_out,
        "truncated": done.truncated,
        "output_bytes": done.total_bytes,
        "sandbox": sandbox_note,
        "bytecode_hidden": bytecode,
        "memory_cgroup": done.memory_cgroup,
    }
    artifact = _artifact(done, settings.exec_output_cap)
    empty = None if done.exit_code != 0 else ran_nothing(argv, done.tail.decode("utf-8", "replace"))
    if done.exit_code == 0 and empty is None:
        return StepOutcome(ok=True, output=output, artifacts=[artifact])
    if empty is not None:  # exited 0, yet its runner says no test ran to a verdict
        output["rule"] = empty.rule
        reason = f"ran nothing ({empty.rule}): {empty.detail}"
    elif done.timed_out:
        reason = "timed out"
    elif done.oom_killed:
        reason = (
            f"killed: memory limit ({settings.exec_memory_bytes} bytes, exited {done.exit_code})"
        )
    else:
        reason = f"exited {done.exit_code}"
    said = reason if empty is not None else f"{reason}: {' '.join(argv)}"
    failure = StepOutcome.failed(f"verification {said}", output)
    failure.output = output
    failure.artifacts.append(artifact)
    failure.verification_failed = True  # the router may send it back for a repair
    return failure
