"""A real kodo whose model is an attacker: the security suite's stack and its evidence.

Every process is real (oc-compat, a Celery worker, beat, the API under gunicorn) and
talks to a private Redis and the test Postgres database. The model answers from
fixture files (``[oc:fixture=NAME]``), so each attack is a plan, a patch and a
verification command written by the test. Around the stack sit the things an attacker
wants: a KODO_HOME with a 0600 token file and a state file, a canary folder outside
every worktree, a sibling "worktree" of another run, and a secret in the worker's
environment. The harness drives runs through the public API only and collects what a
run left behind, so tests assert outcomes, never read code.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis
from sqlalchemy import Engine, bindparam, text

from devstack.kodo_procs import BIN as KODO_BIN
from devstack.kodo_procs import (
    Stack,
    issue_token,
    ready_worker,
    start_api,
    start_beat,
    start_collector,
    start_oc_compat,
    start_together,
    start_worker,
)
from devstack.sample_repo import FILES as SAMPLE_FILES
from devstack.supervisor import Child
from services.worker.sandbox.layout import SETPRIV
from shared.db.engine import make_engine
from shared.domain.run_machine import AT_REST
from tests.security import attacks

WORKTREE_BYTES = 64 << 20
"""What a command may write to its worktree here (small, so the fill attack is quick)."""
TERMINAL = frozenset({"succeeded", "failed", "rejected", "cancelled"})
KNOWN_RULES = (
    "outside_plan",
    "plan_base",
    "module_shadow",
    "source_encoding",
    "verification_ran_nothing",
    "max_checkout_bytes",
    "max_checkout_files",
    "git_dir",
    "delivery_target",
    "forbidden_path",
    "confinement",
    "symlink",
    "submodule",
    "max_files",
    "max_lines",
    "exec_allowlist",
    "sandbox",
    "worktree_filter",
)
"""Rule names a fail-closed diagnostic uses (the defences agreed on these)."""

EXEC_TIMEOUT_S = 8
MARK = "KODO-HOSTILE"
"""In the command line of every process an attack starts, so the suite can find them."""
IN_KEYRING = Path(__file__).with_name("in_keyring.py")
KEYRING_KEY = "kodo-worker-secret"
"""The user key in the worker's session keyring (its value: the keyring canary)."""


@dataclass
class Outcome:
    """What one run left behind, read over the API after it ended."""

    run_id: str
    run: dict[str, Any]
    plan: dict[str, Any] | None
    artifacts: dict[str, bytes]  # "StepId/name" -> bytes
    calls: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.run["status"])

    def artifact(self, name: str) -> bytes | None:
        for key, body in self.artifacts.items():
            if key.endswith(f"/{name}"):
                return body
        return None

    def diagnostic(self) -> dict[str, Any]:
        raw = self.artifact("diagnostic.json")
        if raw is None:
            return {}
        value = json.loads(raw)
        return value if isinstance(value, dict) else {}

    def command_output(self) -> str:
        raw = self.artifact("command-output.txt")
        return raw.decode(errors="replace") if raw is not None else ""

    def rules(self) -> set[str]:
        """Rule names the failure gives: ``rule`` values anywhere in diagnostic.json, and
        known names in its ``error`` and the run's error text."""
        found: set[str] = set()

        def walk(value: object) -> None:
            if isinstance(value, dict):
                for key, item in value.items():
                    if key in ("rule", "rules"):
                        found.update(item if isinstance(item, list) else [item])
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        diagnostic = self.diagnostic()
        walk(diagnostic)
        prose = f"{diagnostic.get('error', '')}\n{self.run.get('error') or ''}"
        found.update(r for r in KNOWN_RULES if re.search(rf"\b{r}\b", prose))
        return {str(r) for r in found}

    def evidence(self) -> bytes:
        """Every byte an observer can read about the run: artifacts, ledger, run, plan."""
        parts = [json.dumps(self.run).encode(), json.dumps(self.calls).encode()]
        parts.append(json.dumps(self.plan).encode())
        parts.extend(self.artifacts.values())
        return b"\n".join(parts)

    def assert_unverified(self, marker: str, *, ran: str, read: str) -> None:
        """The pinned verification ran nothing that prints ``marker`` (``ran``: what that
        would have meant), and the run did not succeed while ``read`` is broken."""
        assert marker not in self.command_output(), f"{ran}\n{self.describe()}"
        assert self.status != "succeeded", (
            f"the run succeeded under the pinned tests while {read}\n{self.describe()}"
        )

    def describe(self) -> str:
        return (
            f"run {self.run_id} {self.status}: {self.run.get('error')}\n"
            f"diagnostic: {json.dumps(self.diagnostic())[:1500]}\n"
            f"output: {self.command_output()[:1500]}"
        )


@dataclass
class UserStack(Stack):
    """A stack whose every process runs as ``uid`` (gid the same, no supplementary
    groups), as the Dockerfile's ``kodo`` user or a developer's ``kodo up`` does: each
    argv is run by ``setpriv``, which keeps the environment the stack passes it.

    When this interpreter's installation lies behind a folder that uid cannot walk (a
    pyenv under root's 0700 home, as on CI), each process gets a mount namespace of its
    own whose ``hidden`` folder is an empty tmpfs but for the installation, bound
    read-only where it was: what a deployment has (its Python readable by its user),
    and nothing more of that folder.
    """

    uid: int = 0
    hidden: str | None = None

    def start(
        self, name: str, argv: list[str], extra_env: Mapping[str, str] | None = None
    ) -> Child:
        drop = [SETPRIV, f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", "--"]
        if self.hidden is not None:
            prefix = str(Path(sys.base_prefix).resolve())
            unshare = ["unshare", "--mount", "--propagation", "private", "--"]
            drop = [*unshare, "/bin/sh", "-c", EXPOSE, "kodo-as-user", prefix, self.hidden, *drop]
        return super().start(name, [*drop, *argv], extra_env)


EXPOSE = """set -eu
prefix=$1 hidden=$2
shift 2
stage=$(mktemp -d)
mount --bind "$prefix" "$stage"
mount -t tmpfs -o mode=0755,size=1m kodo-hidden "$hidden"
mkdir -p "$prefix"
mount --move "$stage" "$prefix"
mount -o remount,bind,ro "$prefix"
rmdir "$stage"
exec "$@"
"""


def unreachable_ancestor(uid: int) -> str | None:
    """The folder that keeps ``uid`` from this interpreter's installation, if any."""
    probe = [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    said = subprocess.run(
        [*probe, sys.executable, "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if said.returncode == 0 and said.stdout.strip() == sys.version:
        return None
    for folder in Path(sys.base_prefix).resolve().parents:
        if folder != Path("/") and not folder.stat().st_mode & 0o001:
            return str(folder)
    return str(Path(sys.base_prefix).resolve())


def can_run_as(uid: int) -> str | None:
    """Why a stack cannot run as ``uid`` here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root to run kodo's processes as another uid"
    if shutil.which("setpriv") is None or not os.access(SETPRIV, os.X_OK):
        return f"needs setpriv (util-linux) at {SETPRIV}"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    return None


@dataclass
class Hostile:
    """One stack and the attacker's targets around it.

    ``run_as``: every kodo process runs as this uid instead of the test's (root in CI),
    so the worker's sandbox is the one a non-root worker builds (a bounded copy of the
    checkout, no overlay, no cgroup of its own). Everything a real deployment gives that
    user is its own here: the repositories, the workspaces, KODO_HOME with its 0600
    token and state files, the canary folder and the sibling run (so only the sandbox,
    not file permissions, keeps a command from them), and a HOME of its own.
    """

    root: Path
    database_url: str
    redis_url: str
    nonce: str = field(default_factory=lambda: secrets.token_hex(6))
    run_as: int | None = None
    stack: Stack = field(init=False)
    engine: Engine = field(init=False)
    secrets: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = self.root / "kodo-home"
        self.outside = self.root / "outside"
        self.repos = self.root / "repos"
        self.workspaces = self.root / "workspaces"
        self.fixtures = self.root / "fixtures"
        self.markers = self.root / "markers"  # what a successful attack writes to prove it ran
        self.keyring_status = self.root / "keyring-status"
        self.user_home = self.root / "user-home"  # HOME of a stack that runs as run_as
        folders = (
            self.home,
            self.outside,
            self.repos,
            self.workspaces,
            self.fixtures,
            self.markers,
            self.user_home,
        )
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(mode=0o700, exist_ok=True)  # as spawn makes it
        self.engine = make_engine(self.database_url, pool_size=1)
        admin = issue_token(self.database_url, f"hostile-admin-{self.nonce}", "admin")
        self.submitter = issue_token(self.database_url, f"hostile-sub-{self.nonce}", "submitter")
        self.approver = issue_token(self.database_url, f"hostile-appr-{self.nonce}", "approver")
        self.secrets = {
            "admin token": admin,
            "submitter token": self.submitter,
            "approver token": self.approver,
            "env canary": f"envcanary{secrets.token_hex(12)}",
            "state canary": f"statecanary{secrets.token_hex(12)}",
            "outside canary": f"outsidecanary{secrets.token_hex(12)}",
            "sibling canary": f"siblingcanary{secrets.token_hex(12)}",
            "keyring canary": f"keyringcanary{secrets.token_hex(12)}",
            "database url": self.database_url,
        }
        self.token_file = self.home / "token"
        self.token_file.write_text(admin + "\n")
        self.token_file.chmod(0o600)
        self.state_file = self.home / "up.json"
        self.state_file.write_text(json.dumps({"secret": self.secrets["state canary"]}))
        self.state_file.chmod(0o600)
        self.canary = self.outside / "canary.txt"
        self.canary.write_text(self.secrets["outside canary"] + "\n")
        sibling = self.workspaces / "zz-another-run"
        sibling.mkdir()
        (sibling / "secret.txt").write_text(self.secrets["sibling canary"] + "\n")
        self.outside_snapshot = self._snapshot()
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "KODO_HOME": str(self.home),
            "KODO_REPO_ROOTS": str(self.repos),
            "KODO_WORKSPACE_DIR": str(self.workspaces),
            "OC_COMPAT_FIXTURES_DIR": str(self.fixtures),
            "KODO_SECURITY_CANARY": self.secrets["env canary"],
            "RANDOM_SEED": "5",
            "APPROVAL_POLL_S": "0.5",
            "OC_TIMEOUT_MS": "30000",
            "KODO_SCHEMA_RETRIES": "2",
            "KODO_EXEC_TIMEOUT_S": str(EXEC_TIMEOUT_S),
            "KODO_EXEC_WORKTREE_BYTES": str(WORKTREE_BYTES),
            # Each attack's command fails the run as it is; a repair round (whose edits
            # are judged like any build's) is attacked in tests/integration/worker.
            "KODO_MAX_REPAIRS": "0",
        }
        if self.run_as is None:
            self.stack = Stack(env=env, log_dir=self.root / "logs")
        else:
            user = pwd.getpwuid(self.run_as).pw_name
            env.update(
                {
                    "HOME": str(self.user_home),
                    "USER": user,
                    "LOGNAME": user,
                    # a deployment's PATH: nothing of root's home (a toolchain there)
                    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                }
            )
            self.stack = UserStack(
                env=env,
                log_dir=self.root / "logs",
                uid=self.run_as,
                hidden=unreachable_ancestor(self.run_as),
            )
            self.give(self.root)  # beat writes its schedule beside the logs
        self.http = httpx.Client(timeout=15.0)

    def give(self, path: Path) -> None:
        """Make ``path`` (and all under it) the stack's user's, as a deployment has it."""
        if self.run_as is not None:
            owner = f"{self.run_as}:{self.run_as}"
            subprocess.run(["chown", "-R", "-h", owner, "--", str(path)], check=True, timeout=60)

    # -- processes ---------------------------------------------------------------------

    def start(self) -> None:
        start_oc_compat(self.stack, seed=5)
        started = start_together(
            {
                "worker": lambda: ready_worker(self._start_worker("worker")),
                "beat": lambda: start_beat(self.stack),
                "collector": lambda: start_collector(self.stack),
                "api": lambda: start_api(self.stack),
            }
        )
        self.worker = started["worker"]
        self.http = httpx.Client(base_url=self.stack.api_url, timeout=15.0)

    def fresh_worker(self) -> Child:
        """Replace the worker with a new process (a clean memory high-water mark)."""
        self.worker.stop()
        self.stack.procs.remove(self.worker)
        self.worker = ready_worker(self._start_worker(f"worker-{secrets.token_hex(3)}"))
        return self.worker

    def _start_worker(self, name: str) -> Child:
        """A worker in a session keyring of its own holding the keyring canary (as under a
        login's or a systemd service's keyring), said in :meth:`keyring_state`."""
        through = [sys.executable, str(IN_KEYRING), str(self.keyring_status), KEYRING_KEY, "--"]
        return start_worker(
            self.stack,
            name,
            4,
            through=through,
            extra_env={"KODO_TEST_KEYRING_CANARY": self.secrets["keyring canary"]},
        )

    def keyring_state(self) -> str:
        """``joined`` when the worker holds the keyring canary, else why it could not."""
        return self.keyring_status.read_text(encoding="utf-8").strip()

    def stop(self) -> None:
        self.http.close()
        self.stack.stop()
        self._clean_up_attacks()
        self.engine.dispose()

    def begin_module(self) -> None:
        """Hand a running stack to the next module as a fresh one would be: its own
        submitter and approver tokens (an intent rate limit of their own; the old ones
        stay among the secrets) and the outside folders' snapshot taken now."""
        self.module_began = self._db_now()
        tag = secrets.token_hex(3)
        self.submitter = issue_token(
            self.database_url, f"hostile-sub-{self.nonce}-{tag}", "submitter"
        )
        self.approver = issue_token(
            self.database_url, f"hostile-appr-{self.nonce}-{tag}", "approver"
        )
        self.secrets[f"submitter token {tag}"] = self.submitter
        self.secrets[f"approver token {tag}"] = self.approver
        self.outside_snapshot = self._snapshot()

    def end_module(self, deadline_s: float = 120.0) -> None:
        """Leave the stack to the next module as a stop would: no run of this module still
        working (waiting for an approval is rest), no process an attack started, no token
        an attack planted."""
        end = time.monotonic() + deadline_s
        while (busy := self._busy_runs()) and time.monotonic() < end:
            time.sleep(0.2)
        self._clean_up_attacks()
        assert not busy, f"runs still working at the module's end: {busy}"

    def _db_now(self) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT now()")).scalar_one()

    def _busy_runs(self) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT id::text FROM app.runs WHERE created_at >= :t AND status NOT IN :rest"
                ).bindparams(bindparam("rest", expanding=True)),
                {"t": self.module_began, "rest": sorted(str(s) for s in AT_REST)},
            )
            return [str(r) for r in rows.scalars()]

    def _clean_up_attacks(self) -> None:
        # Only what this stack's attacks started: their command lines carry MARK and our nonce.
        for pid in set(self.attack_pids()) & set(self.attack_pids(self.nonce)):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with self.engine.begin() as conn:  # what a successful attack planted: never left live
            conn.execute(
                text("DELETE FROM app.api_tokens WHERE name LIKE :n"), {"n": f"pwned-{self.nonce}%"}
            )

    def attack_pids(self, marker: str = MARK) -> list[int]:
        """Processes whose command line carries ``marker`` (what attacks left running)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if marker.encode() in cmdline and stat.rpartition(")")[2].split()[:1] != ["Z"]:
                found.append(int(entry.name))
        return found

    def healthz(self) -> int:
        return self.http.get("/healthz", timeout=5.0).status_code

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in self.stack.log_dir.glob("*.log") if p.is_file()
        )

    # -- the attacker's script -----------------------------------------------------------

    def fixture(
        self, name: str, *, plan: object = None, patch: object = None, build: object = None
    ) -> str:
        """Write ``NAME.json`` for ``[oc:fixture=NAME]``; None kinds answer as usual."""
        body = {k: v for k, v in (("plan", plan), ("patch", patch), ("build", build)) if v}
        (self.fixtures / f"{name}.json").write_text(json.dumps(body))
        return name

    def repo(self, name: str, commits: list[dict[str, str | None]] | None = None) -> Path:
        """A git repository under KODO_REPO_ROOTS: the sample files, then ``commits``
        (each maps a path to content, None deletes, ``@symlink:TARGET`` makes a symlink)."""
        path = self.repos / name
        path.mkdir(parents=True)
        history: list[dict[str, str | None]] = [dict(SAMPLE_FILES), *(commits or [])]
        git(path, "init", "-q", "-b", "main")
        for n, files in enumerate(history):
            for rel, content in files.items():
                target = path / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if content is None:
                    target.unlink()
                elif content.startswith("@symlink:"):
                    target.symlink_to(content.removeprefix("@symlink:"))
                else:
                    target.write_text(content)
            git(path, "add", "-A")
            git(path, "commit", "-q", "-m", f"commit {n}")
        self.give(path)
        return path

    # -- the API, as a submitter and a separate approver ---------------------------------

    def as_(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def kodo(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The ``kodo`` CLI against this stack, as the approver, piped (no terminal)."""
        env = {
            **self.stack.env,
            "KODO_API_URL": self.stack.api_url,
            "KODO_API_TOKEN": self.approver,
        }
        return subprocess.run(
            [str(KODO_BIN / "kodo"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    @contextmanager
    def signed_in(self, token: str = "", timeout_s: float = 10) -> Iterator[httpx.Client]:
        """A browser session of the web UI, signed in with ``token`` (the approver's)."""
        with httpx.Client(base_url=self.stack.api_url, timeout=timeout_s) as browser:
            form = browser.get("/ui/login")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert csrf is not None, form.text[:500]
            signed = browser.post(
                "/ui/login", data={"token": token or self.approver, "csrf_token": csrf.group(1)}
            )
            assert signed.status_code in (200, 303), signed.text[:500]
            yield browser

    def submit(self, repo: Path, fixture: str, *, base_ref: str = "HEAD") -> str:
        goal = f"Tidy the project a little [oc:fixture={fixture}]"
        reply = self.http.post(
            "/intents",
            json={"repo": str(repo), "goal": goal, "base_ref": base_ref},
            headers=self.as_(self.submitter),
        )
        assert reply.status_code == 201, reply.text
        intent_id = str(reply.json()["intentId"])
        started = self.http.post(f"/intents/{intent_id}/run", headers=self.as_(self.submitter))
        assert started.status_code == 202, started.text
        return str(started.json()["runId"])

    def outside_repo(self, name: str, secret: str) -> Path:
        """A committed repository under no root of KODO_REPO_ROOTS: the sample files and a
        ``SECRET.txt`` holding ``secret``, which no worktree of kodo's may ever show."""
        victim = self.root / name / "victim"
        victim.mkdir(parents=True)
        git(victim, "init", "-q", "-b", "main")
        for rel, content in {**SAMPLE_FILES, "SECRET.txt": secret}.items():
            target = victim / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        git(victim, "add", "-A")
        git(victim, "commit", "-q", "-m", "victim")
        self.give(victim)
        return victim

    def try_to_plan(self, repo: Path, fixture: str) -> httpx.Response:
        """Submit ``repo`` at HEAD with the fixture's goal and, if it is accepted, start its
        run and wait until it has planned or failed; the submit's answer."""
        goal = f"Tidy the project a little [oc:fixture={fixture}]"
        reply = self.http.post(
            "/intents",
            json={"repo": str(repo), "goal": goal, "base_ref": "HEAD"},
            headers=self.as_(self.submitter),
        )
        if reply.status_code == 201:
            started = self.http.post(
                f"/intents/{reply.json()['intentId']}/run", headers=self.as_(self.submitter)
            )
            if started.status_code == 202:
                self.wait(str(started.json()["runId"]), {"waiting_input", "failed"}, 60)
                time.sleep(0.5)
        return reply

    def checked_out_secrets(self) -> list[str]:
        """Every worktree's ``SECRET.txt`` (relative to the workspaces folder)."""
        return sorted(
            str(p.relative_to(self.workspaces)) for p in self.workspaces.glob("*/SECRET.txt")
        )

    def run(self, run_id: str) -> dict[str, Any]:
        reply = self.http.get(f"/runs/{run_id}", headers=self.as_(self.approver))
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def plan_of(self, run_id: str) -> dict[str, Any] | None:
        reply = self.http.get(f"/runs/{run_id}/plan", headers=self.as_(self.approver))
        if reply.status_code != 200:
            return None
        body: dict[str, Any] = reply.json()
        return body

    def approve(self, run_id: str, digest: str | None = None, *, token: str = "") -> httpx.Response:
        if digest is None:
            plan = self.plan_of(run_id)
            assert plan is not None, f"run {run_id} has no plan to approve"
            digest = str(plan["planSha256"])
        return self.http.post(
            f"/runs/{run_id}/approve-plan",
            json={"plan_sha256": digest},
            headers=self.as_(token or self.approver),
        )

    def wait_for(self, done: Callable[[], bool], run_id: str, deadline_s: float) -> bool:
        """Whether ``done`` came true before ``run_id`` ended and the deadline passed."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if done():
                return True
            if self.run(run_id)["status"] in TERMINAL:
                return done()
            time.sleep(0.1)
        return done()

    def describe(self, run_id: str) -> str:
        """Where ``run_id`` is, with the tail of every process's log (for a failure)."""
        run = self.run(run_id)
        if run["status"] in TERMINAL:
            return self.collect(run_id).describe()
        logs = "\n".join(f"== {p.name}\n{p.log_tail(20)}" for p in self.stack.procs)
        return f"run {run_id} still {run['status']} (last step {run.get('lastStep')})\n{logs}"

    def wait(self, run_id: str, statuses: set[str], deadline_s: float = 60.0) -> dict[str, Any]:
        """The run once its status is in ``statuses`` or terminal (whichever comes first)."""
        end = time.monotonic() + deadline_s
        while True:
            run = self.run(run_id)
            if run["status"] in statuses or run["status"] in TERMINAL:
                return run
            if time.monotonic() > end:
                logs = "\n".join(f"== {p.name}\n{p.log_tail(20)}" for p in self.stack.procs)
                raise TimeoutError(f"run {run_id} still {run['status']}\n{logs}")
            time.sleep(0.2)

    def drive(
        self,
        repo: Path,
        fixture: str,
        *,
        base_ref: str = "HEAD",
        approve: bool = True,
        deadline_s: float = 90.0,
    ) -> Outcome:
        """Submit, approve whatever plan comes (as a separate approver), run to the end."""
        run_id = self.submit(repo, fixture, base_ref=base_ref)
        run = self.wait(run_id, {"waiting_input"}, deadline_s)
        if run["status"] == "waiting_input" and approve:
            reply = self.approve(run_id)
            assert reply.status_code == 200, reply.text
            run = self.wait(run_id, set(), deadline_s)
        return self.collect(run_id)

    def collect(self, run_id: str) -> Outcome:
        headers = self.as_(self.approver)
        listing = self.http.get(f"/runs/{run_id}/artifacts", headers=headers)
        assert listing.status_code == 200, listing.text
        artifacts: dict[str, bytes] = {}
        for item in listing.json():
            body = self.http.get(
                f"/runs/{run_id}/artifacts/{item['name']}",
                params={"step": item["stepId"]},
                headers=headers,
            )
            assert body.status_code == 200, body.text
            artifacts[f"{item['stepId']}/{item['name']}"] = body.content
        calls = self.http.get(f"/runs/{run_id}/calls", headers=headers).json()
        return Outcome(run_id, self.run(run_id), self.plan_of(run_id), artifacts, calls)

    # -- the evidence ------------------------------------------------------------------

    def leaks(self, evidence: bytes) -> list[str]:
        """Secrets found in ``evidence``, as written or hex-encoded (as an attacker would)."""
        found = []
        for name, value in self.secrets.items():
            raw = value.encode()
            if raw in evidence or raw.hex().encode() in evidence:
                found.append(name)
        return found

    def _snapshot(self) -> dict[str, bytes]:
        watched = [self.outside, self.home, self.workspaces / "zz-another-run"]
        return {
            str(p): p.read_bytes()
            for folder in watched
            for p in sorted(folder.rglob("*"))
            if p.is_file() or p.is_symlink()
        }

    def outside_changes(self) -> list[str]:
        """Files added, removed or changed outside every worktree since the stack began."""
        now = self._snapshot()
        before = self.outside_snapshot
        changed = [p for p in now if p not in before or now[p] != before[p]]
        return sorted(changed + [p for p in before if p not in now])

    def api_token_rows(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM app.api_tokens")).scalar_one())

    def redis_keys(self, pattern: str) -> list[bytes]:
        client = redis.Redis.from_url(self.redis_url)
        try:
            return list(client.scan_iter(match=pattern))
        finally:
            client.close()

    def worker_peak_rss_mb(self) -> float:
        """The worker's resident-memory high-water mark (VmHWM), in MB."""
        status = Path(f"/proc/{self.worker.popen.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None, status
        return int(match.group(1)) / 1024

    def branch_files(self, repo: Path, run_id: str) -> dict[str, str]:
        """``path -> mode`` on the run's branch (empty if the branch does not exist)."""
        done = subprocess.run(
            ["git", *TRUST, "-c", "core.hooksPath=/dev/null", "ls-tree", "-r", f"kodo/{run_id}"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        files = {}
        for line in done.stdout.splitlines():
            meta, _, path = line.partition("\t")
            files[path] = meta.split()[0]
        return files


TRUST = ("-c", "safe.directory=*")
"""The suite's own git (root) reads repositories a non-root stack's user owns."""


def git(cwd: Path, *args: str) -> str:
    ident = [
        "-c",
        "user.name=hostile",
        "-c",
        "user.email=h@localhost",
        "-c",
        "commit.gpgsign=false",
    ]
    done = subprocess.run(
        ["git", *TRUST, "-c", "core.hooksPath=/dev/null", *ident, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout


@dataclass
class Campaign:
    """Attacks started together (the worker runs four steps at once), awaited one by one."""

    futures: dict[str, Future[Outcome]]

    def outcome(self, name: str, timeout_s: float = 240.0) -> Outcome:
        return self.futures[name].result(timeout=timeout_s)


@contextmanager
def campaign(
    stack: Hostile, attacks: Mapping[str, Callable[[Hostile], Outcome]]
) -> Iterator[Campaign]:
    with ThreadPoolExecutor(max_workers=max(1, min(6, len(attacks)))) as pool:
        yield Campaign({name: pool.submit(run, stack) for name, run in attacks.items()})


def assert_fails_closed(outcome: Outcome, *rules: str) -> None:
    """The run failed and its diagnostic names one of ``rules``."""
    assert outcome.status == "failed", f"expected a closed failure\n{outcome.describe()}"
    named = outcome.rules()
    assert named & set(rules), f"diagnostic names {sorted(named)}, wanted one of {rules}\n" + (
        outcome.describe()
    )


SCRIPT = "check_env.py"


def script_attack(
    stack: Hostile, name: str, body: str, *, args: tuple[str, ...] = (), **extra: object
) -> Outcome:
    """A plan adding ``check_env.py`` (exactly what the patch adds) and running it."""
    repo = stack.repo(name)
    pg = urlsplit(stack.database_url.replace("+psycopg", ""))
    redis_url = urlsplit(stack.redis_url)
    api = urlsplit(stack.stack.api_url)
    source = attacks.program(
        body,
        nonce=stack.nonce,
        token_file=str(stack.token_file),
        state_file=str(stack.state_file),
        home=str(stack.home),
        canary=str(stack.canary),
        outside=str(stack.outside),
        sibling=str(stack.workspaces / "zz-another-run" / "secret.txt"),
        repo=str(repo),
        db=pg.path.lstrip("/"),
        host=pg.hostname,
        port=pg.port or 5432,
        redis_host=redis_url.hostname,
        redis_port=redis_url.port,
        api_host=api.hostname,
        api_port=api.port,
        **extra,
    )
    fixture = stack.fixture(
        name,
        plan=attacks.plan((SCRIPT, "add")),
        patch=attacks.patch(attacks.add_file(SCRIPT, source)),
        build=attacks.build("python3", SCRIPT, *args),
    )
    return stack.drive(repo, fixture)
