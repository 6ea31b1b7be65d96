"""One typed settings object, read from the environment at the edges only.

Nothing in the project reads ``os.environ`` elsewhere: entry points call
:func:`Settings.from_env` and pass the result down.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.domain.budget import Estimate, call_estimate
from shared.domain.webhooks import Endpoint, EndpointError, endpoint, repository_endpoints

DEFAULTS: dict[str, str] = {
    "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/kodo",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "OC_BASE_URL": "http://127.0.0.1:4096",
    "OC_TIMEOUT_MS": "120000",
    "OC_PROVIDER_ID": "kodo",
    "OC_MODEL_ID": "kodo-scripted",
    "OC_USERNAME": "opencode",
    "OC_PASSWORD": "",
    # 1: keep each call's daemon session after its outcome is recorded (debugging); by
    # default it is deleted, since the daemon's memory grows with every session it holds.
    "OC_KEEP_SESSIONS": "0",
    # 1: prompts are sent with prompt_async and no worker thread waits on the model (the
    # collector wakes the step when the session ends); 0: each call blocks its thread.
    "OC_ASYNC": "1",
    # Seconds a daemon may refuse connections before its collector records its sent calls
    # failed (DaemonLost) so their steps' next attempts go to the daemons that answer.
    "OC_DAEMON_LOST_S": "60",
    "RANDOM_SEED": "0",
    # oc-compat only: the folder of NAME.json files that ``[oc:fixture=NAME]`` answers from.
    "OC_COMPAT_FIXTURES_DIR": "",
    "KODO_REPO_ROOTS": "",
    "KODO_WORKSPACE_DIR": ".kodo/workspaces",
    "KODO_EXEC_ALLOWLIST": "python,python3,pytest,make",
    "KODO_EXEC_TIMEOUT_S": "120",
    "KODO_EXEC_OUTPUT_CAP": "65536",
    # The verification sandbox (services/worker/sandbox/) and its per-command limits.
    "KODO_SANDBOX": "on",
    "KODO_SANDBOX_BWRAP": "bwrap",
    "KODO_SANDBOX_NETWORK": "off",
    "KODO_SANDBOX_UID": "65534",
    "KODO_SANDBOX_CGROUP": "auto",
    "KODO_EXEC_CPU_S": "120",
    "KODO_EXEC_MEMORY_BYTES": str(4 << 30),
    "KODO_EXEC_NPROC": "256",
    # CPUs' time one verification may use (its cgroup's quota); 0: half of the CPUs the
    # worker may run on, at least one.
    "KODO_EXEC_CPUS": "0",
    "KODO_EXEC_FSIZE_BYTES": str(256 << 20),
    "KODO_EXEC_TMP_BYTES": str(256 << 20),
    "KODO_EXEC_WORKTREE_BYTES": str(1 << 30),
    "KODO_SCHEMA_RETRIES": "3",
    # Plans a run may have: the first and each revision an approver asks for.
    "KODO_MAX_REVISIONS": "5",
    # Times a failed verification goes back to the build agent before the run fails.
    "KODO_MAX_REPAIRS": "2",
    # Questions DecideST may ask the approver in one run (each answer is another paid round
    # whose prompt quotes every exchange so far); past them it may only decide.
    "KODO_MAX_QUESTIONS": "3",
    # Budgets: each provider call reserves KODO_CALL_TOKEN_BOUND tokens at the model's
    # price (USD per million tokens) before it is sent; an intent without a budget of its
    # own gets these (empty: no budget).
    "KODO_CALL_TOKEN_BOUND": "200000",
    "KODO_PRICE_USD_PER_MTOK": "15",
    "KODO_BUDGET_USD": "",
    "KODO_BUDGET_TOKENS": "",
    # Delivery: a succeeded run's branch kodo/<run id> is pushed to this remote of its
    # source repository (a name in the repository's git config; empty: no delivery),
    # over these protocols only.
    "KODO_DELIVER_REMOTE": "",
    "KODO_DELIVER_PROTOCOLS": "file",
    # Cleanup: finished runs' worktrees are removed this long after they ended; the
    # branches of rejected, cancelled and failed runs too, unless kept.
    "KODO_WORKTREE_GRACE_S": "86400",
    # A daemon lets go of a run's worktree once the run rested (waits for a person, is
    # parked, or ended) this long: opening it again costs the daemon about 1 s of CPU.
    "KODO_INSTANCE_RELEASE_S": "30",
    # A release a daemon did not answer (or found a turn still running) waits this long.
    "KODO_INSTANCE_RETRY_S": "600",
    "KODO_KEEP_BRANCHES": "0",
    "KODO_MAX_BODY_BYTES": "65536",
    "APPROVAL_POLL_S": "2.0",
    "KODO_STEP_LEASE_S": "900",
    "KODO_REDISPATCH_AFTER_S": "30",
    "KODO_RECONCILE_S": "10",
    "KODO_RETRY_BACKOFF_S": "1.0",
    # The ref a repository's trusted .kodo/policy.toml is read from at submit; empty means
    # the branch the source repository's HEAD names (its default branch).
    "KODO_POLICY_REF": "",
    # Bounds on what a client or an agent can make kodo hold (issue 10, item 8).
    "KODO_MAX_ANSWER_BYTES": "8388608",
    "KODO_SSE_PER_TOKEN": "8",
    "KODO_SSE_MAX_STREAMS": "1000",
    "KODO_INTENT_RATE": "30/minute",
    "KODO_HEADER_TIMEOUT_S": "10",
    "KODO_BODY_TIMEOUT_S": "10",
    "KODO_SEND_TIMEOUT_S": "60",
    "KODO_SSE_MAX_S": "1800",
    "KODO_API_WORKERS": "2",
    "KODO_API_CONNECTIONS": "2000",
    # Each API worker's database pool: connections kept, more opened under load, and how
    # long a request waits for a free one before it is answered 503 with Retry-After.
    # Kept: one per request KODO_API_ACTIVE lets work at once, since a connection over
    # the kept number is closed when returned and opened again by the next request
    # (about 4 ms of CPU each, the Postgres backend's start most of it).
    "KODO_API_DB_POOL": "16",
    "KODO_API_DB_OVERFLOW": "4",
    "KODO_API_DB_WAIT_S": "10",
    "KODO_DB_PING_IDLE_S": "1",
    # Requests one API worker handles at once (the rest queue), and how long one may queue.
    "KODO_API_ACTIVE": "16",
    "KODO_API_QUEUE_S": "30",
    "KODO_REDIS_KEY_PREFIX": "kodo",
    "KODO_UI_SESSION_TTL_S": "28800",
    "KODO_ALLOW_SELF_APPROVAL": "0",
    # json: one JSON object a line (for machines, the default); console: for a person.
    "KODO_LOG_FORMAT": "json",
    # Webhooks (README "Webhooks"): the global endpoint and its signing secret, and
    # per-repository ones, JSON {repo_path: {url, secret}} (a repository's own replaces
    # the global one); each delivery is tried KODO_WEBHOOK_MAX_ATTEMPTS times, with
    # exponential backoff from KODO_WEBHOOK_BACKOFF_S up to KODO_WEBHOOK_BACKOFF_MAX_S.
    "KODO_WEBHOOK_URL": "",
    "KODO_WEBHOOK_SECRET": "",
    "KODO_WEBHOOKS": "",
    "KODO_WEBHOOK_TIMEOUT_S": "10",
    "KODO_WEBHOOK_MAX_ATTEMPTS": "8",
    "KODO_WEBHOOK_BACKOFF_S": "10",
    "KODO_WEBHOOK_BACKOFF_MAX_S": "3600",
    # The API's base URL as people reach it, for links in webhooks (empty: paths only).
    "KODO_PUBLIC_URL": "",
}


_RATE = re.compile(r"^\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day)s?$")
_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class ConfigError(ValueError):
    """A setting is present but unusable: fail at start, never later."""


def _int(env: Mapping[str, str], key: str) -> int:
    raw = env.get(key, DEFAULTS[key])
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{key} must be an integer, got {raw!r}") from exc


def _optional(env: Mapping[str, str], key: str) -> str | None:
    raw = env.get(key, DEFAULTS[key]).strip()
    return raw or None


def _optional_int(env: Mapping[str, str], key: str) -> int | None:
    raw = _optional(env, key)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{key} must be an integer or empty, got {raw!r}") from exc


def _optional_float(env: Mapping[str, str], key: str) -> float | None:
    raw = _optional(env, key)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{key} must be a number or empty, got {raw!r}") from exc


def _float(env: Mapping[str, str], key: str) -> float:
    raw = env.get(key, DEFAULTS[key])
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{key} must be a number, got {raw!r}") from exc


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _daemons(env: Mapping[str, str]) -> tuple[str, ...]:
    """``OC_BASE_URL``: one daemon's base URL, or several separated by commas."""
    raw = env.get("OC_BASE_URL", DEFAULTS["OC_BASE_URL"])
    urls = tuple(part.strip().rstrip("/") for part in raw.split(","))
    if not urls or any(not url for url in urls):
        raise ConfigError(f"OC_BASE_URL must list daemon URLs separated by commas, got {raw!r}")
    if len(set(urls)) != len(urls):
        raise ConfigError(f"OC_BASE_URL names a daemon twice: {raw!r}")
    return urls


def _bool(env: Mapping[str, str], key: str) -> bool:
    """A yes/no setting; anything else (an empty value included) is an error, not a guess."""
    raw = env.get(key, DEFAULTS[key]).strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{key} must be on or off (1/0, true/false, yes/no), got {raw!r}")


def _list(env: Mapping[str, str], key: str, sep: str) -> tuple[str, ...]:
    raw = env.get(key, DEFAULTS[key])
    return tuple(part.strip() for part in raw.split(sep) if part.strip())


def _webhook(env: Mapping[str, str]) -> Endpoint | None:
    """The global webhook: KODO_WEBHOOK_URL with KODO_WEBHOOK_SECRET, or none."""
    url = env.get("KODO_WEBHOOK_URL", DEFAULTS["KODO_WEBHOOK_URL"]).strip()
    if not url:
        return None
    try:
        return endpoint(url, env.get("KODO_WEBHOOK_SECRET", ""), "global")
    except EndpointError as exc:
        raise ConfigError(f"KODO_WEBHOOK_URL/KODO_WEBHOOK_SECRET: {exc}") from exc


def _repository_webhooks(env: Mapping[str, str]) -> tuple[tuple[str, Endpoint], ...]:
    """KODO_WEBHOOKS, keyed by each repository's real path (what intents record)."""
    try:
        found = repository_endpoints(env.get("KODO_WEBHOOKS", DEFAULTS["KODO_WEBHOOKS"]))
    except EndpointError as exc:
        raise ConfigError(str(exc)) from exc
    return tuple((str(Path(repo).resolve()), hook) for repo, hook in found.items())


def _optional_path(env: Mapping[str, str], key: str) -> Path | None:
    raw = env.get(key, DEFAULTS[key]).strip()
    return Path(raw).resolve() if raw else None


@dataclass(frozen=True)
class Settings:
    """Every knob kodo has; see README "Configuration" for the meaning of each."""

    database_url: str = DEFAULTS["DATABASE_URL"]
    redis_url: str = DEFAULTS["REDIS_URL"]
    oc_base_url: str = DEFAULTS["OC_BASE_URL"]  # the first daemon of OC_BASE_URL
    oc_more_daemons: tuple[str, ...] = ()  # the others (OC_BASE_URL is a comma list)
    oc_timeout_ms: int = int(DEFAULTS["OC_TIMEOUT_MS"])
    oc_keep_sessions: bool = False
    oc_async: bool = True
    oc_daemon_lost_s: float = float(DEFAULTS["OC_DAEMON_LOST_S"])
    oc_provider_id: str = DEFAULTS["OC_PROVIDER_ID"]
    oc_model_id: str = DEFAULTS["OC_MODEL_ID"]
    oc_username: str = DEFAULTS["OC_USERNAME"]
    oc_password: str = DEFAULTS["OC_PASSWORD"]
    random_seed: int = int(DEFAULTS["RANDOM_SEED"])
    oc_compat_fixtures_dir: Path | None = None
    repo_roots: tuple[Path, ...] = ()
    workspace_dir: Path = Path(DEFAULTS["KODO_WORKSPACE_DIR"])
    exec_allowlist: tuple[str, ...] = field(
        default_factory=lambda: tuple(DEFAULTS["KODO_EXEC_ALLOWLIST"].split(","))
    )
    exec_timeout_s: int = int(DEFAULTS["KODO_EXEC_TIMEOUT_S"])
    exec_output_cap: int = int(DEFAULTS["KODO_EXEC_OUTPUT_CAP"])
    sandbox: bool = True  # False only by the operator's explicit KODO_SANDBOX=off
    sandbox_bwrap: str = DEFAULTS["KODO_SANDBOX_BWRAP"]
    sandbox_network: bool = False
    sandbox_uid: int = int(DEFAULTS["KODO_SANDBOX_UID"])
    sandbox_cgroup: str = DEFAULTS["KODO_SANDBOX_CGROUP"]  # auto | required | off
    # Test-only (never read from the environment): where cgroup hierarchies are looked for.
    sandbox_cgroup_mounts: Path = Path("/sys/fs/cgroup")
    exec_cpu_s: int = int(DEFAULTS["KODO_EXEC_CPU_S"])
    exec_memory_bytes: int = int(DEFAULTS["KODO_EXEC_MEMORY_BYTES"])
    exec_nproc: int = int(DEFAULTS["KODO_EXEC_NPROC"])
    exec_cpus: float = float(DEFAULTS["KODO_EXEC_CPUS"])
    exec_fsize_bytes: int = int(DEFAULTS["KODO_EXEC_FSIZE_BYTES"])
    exec_tmp_bytes: int = int(DEFAULTS["KODO_EXEC_TMP_BYTES"])
    exec_worktree_bytes: int = int(DEFAULTS["KODO_EXEC_WORKTREE_BYTES"])
    schema_retries: int = int(DEFAULTS["KODO_SCHEMA_RETRIES"])
    max_revisions: int = int(DEFAULTS["KODO_MAX_REVISIONS"])
    max_repairs: int = int(DEFAULTS["KODO_MAX_REPAIRS"])
    max_questions: int = int(DEFAULTS["KODO_MAX_QUESTIONS"])
    call_token_bound: int = int(DEFAULTS["KODO_CALL_TOKEN_BOUND"])
    price_usd_per_mtok: float = float(DEFAULTS["KODO_PRICE_USD_PER_MTOK"])
    budget_usd: float | None = None
    budget_tokens: int | None = None
    deliver_remote: str = ""
    deliver_protocols: tuple[str, ...] = ("file",)
    worktree_grace_s: float = float(DEFAULTS["KODO_WORKTREE_GRACE_S"])
    instance_release_s: float = float(DEFAULTS["KODO_INSTANCE_RELEASE_S"])
    instance_retry_s: float = float(DEFAULTS["KODO_INSTANCE_RETRY_S"])
    keep_branches: bool = False
    max_body_bytes: int = int(DEFAULTS["KODO_MAX_BODY_BYTES"])
    approval_poll_s: float = float(DEFAULTS["APPROVAL_POLL_S"])
    step_lease_s: float = float(DEFAULTS["KODO_STEP_LEASE_S"])
    redispatch_after_s: float = float(DEFAULTS["KODO_REDISPATCH_AFTER_S"])
    reconcile_s: float = float(DEFAULTS["KODO_RECONCILE_S"])
    retry_backoff_s: float = float(DEFAULTS["KODO_RETRY_BACKOFF_S"])
    max_answer_bytes: int = int(DEFAULTS["KODO_MAX_ANSWER_BYTES"])
    sse_per_token: int = int(DEFAULTS["KODO_SSE_PER_TOKEN"])
    sse_max_streams: int = int(DEFAULTS["KODO_SSE_MAX_STREAMS"])
    intent_rate: str = DEFAULTS["KODO_INTENT_RATE"]
    header_timeout_s: float = float(DEFAULTS["KODO_HEADER_TIMEOUT_S"])
    body_timeout_s: float = float(DEFAULTS["KODO_BODY_TIMEOUT_S"])
    send_timeout_s: float = float(DEFAULTS["KODO_SEND_TIMEOUT_S"])
    sse_max_s: float = float(DEFAULTS["KODO_SSE_MAX_S"])
    api_workers: int = int(DEFAULTS["KODO_API_WORKERS"])
    api_connections: int = int(DEFAULTS["KODO_API_CONNECTIONS"])
    api_db_pool: int = int(DEFAULTS["KODO_API_DB_POOL"])
    api_db_overflow: int = int(DEFAULTS["KODO_API_DB_OVERFLOW"])
    api_db_wait_s: float = float(DEFAULTS["KODO_API_DB_WAIT_S"])
    db_ping_idle_s: float = float(DEFAULTS["KODO_DB_PING_IDLE_S"])  # 0: ping every checkout
    api_active: int = int(DEFAULTS["KODO_API_ACTIVE"])
    api_queue_s: float = float(DEFAULTS["KODO_API_QUEUE_S"])
    redis_key_prefix: str = DEFAULTS["KODO_REDIS_KEY_PREFIX"]
    policy_ref: str = DEFAULTS["KODO_POLICY_REF"]  # empty: the repository's default branch
    ui_session_ttl_s: int = int(DEFAULTS["KODO_UI_SESSION_TTL_S"])
    allow_self_approval: bool = False  # a token may approve what it submitted (off: refused)
    log_format: str = DEFAULTS["KODO_LOG_FORMAT"]  # json or console
    webhook: Endpoint | None = None  # KODO_WEBHOOK_URL + KODO_WEBHOOK_SECRET
    repository_webhooks: tuple[tuple[str, Endpoint], ...] = ()  # KODO_WEBHOOKS
    webhook_timeout_s: float = float(DEFAULTS["KODO_WEBHOOK_TIMEOUT_S"])
    webhook_max_attempts: int = int(DEFAULTS["KODO_WEBHOOK_MAX_ATTEMPTS"])
    webhook_backoff_s: float = float(DEFAULTS["KODO_WEBHOOK_BACKOFF_S"])
    webhook_backoff_max_s: float = float(DEFAULTS["KODO_WEBHOOK_BACKOFF_MAX_S"])
    public_url: str = DEFAULTS["KODO_PUBLIC_URL"]

    @property
    def webhooks_configured(self) -> bool:
        """Whether any webhook is set (a global one, or one for some repository)."""
        return self.webhook is not None or bool(self.repository_webhooks)

    @property
    def oc_base_urls(self) -> tuple[str, ...]:
        """Every daemon of ``OC_BASE_URL``: calls are spread over them, one collector
        follows each."""
        return (self.oc_base_url, *self.oc_more_daemons)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        daemons = _daemons(env)
        settings = cls(
            database_url=env.get("DATABASE_URL", DEFAULTS["DATABASE_URL"]),
            redis_url=env.get("REDIS_URL", DEFAULTS["REDIS_URL"]),
            oc_base_url=daemons[0],
            oc_more_daemons=daemons[1:],
            oc_timeout_ms=_int(env, "OC_TIMEOUT_MS"),
            oc_keep_sessions=_bool(env, "OC_KEEP_SESSIONS"),
            oc_async=_bool(env, "OC_ASYNC"),
            oc_daemon_lost_s=_float(env, "OC_DAEMON_LOST_S"),
            oc_provider_id=env.get("OC_PROVIDER_ID", DEFAULTS["OC_PROVIDER_ID"]),
            oc_model_id=env.get("OC_MODEL_ID", DEFAULTS["OC_MODEL_ID"]),
            oc_username=env.get("OC_USERNAME", DEFAULTS["OC_USERNAME"]),
            oc_password=env.get("OC_PASSWORD", DEFAULTS["OC_PASSWORD"]),
            random_seed=_int(env, "RANDOM_SEED"),
            oc_compat_fixtures_dir=_optional_path(env, "OC_COMPAT_FIXTURES_DIR"),
            repo_roots=tuple(Path(p).resolve() for p in _list(env, "KODO_REPO_ROOTS", os.pathsep)),
            workspace_dir=Path(
                env.get("KODO_WORKSPACE_DIR", DEFAULTS["KODO_WORKSPACE_DIR"])
            ).resolve(),
            exec_allowlist=_list(env, "KODO_EXEC_ALLOWLIST", ","),
            exec_timeout_s=_int(env, "KODO_EXEC_TIMEOUT_S"),
            exec_output_cap=_int(env, "KODO_EXEC_OUTPUT_CAP"),
            sandbox=_bool(env, "KODO_SANDBOX"),
            sandbox_bwrap=env.get("KODO_SANDBOX_BWRAP", DEFAULTS["KODO_SANDBOX_BWRAP"]),
            sandbox_network=_bool(env, "KODO_SANDBOX_NETWORK"),
            sandbox_uid=_int(env, "KODO_SANDBOX_UID"),
            sandbox_cgroup=env.get("KODO_SANDBOX_CGROUP", DEFAULTS["KODO_SANDBOX_CGROUP"])
            .strip()
            .lower(),
            exec_cpu_s=_int(env, "KODO_EXEC_CPU_S"),
            exec_memory_bytes=_int(env, "KODO_EXEC_MEMORY_BYTES"),
            exec_nproc=_int(env, "KODO_EXEC_NPROC"),
            exec_cpus=_float(env, "KODO_EXEC_CPUS"),
            exec_fsize_bytes=_int(env, "KODO_EXEC_FSIZE_BYTES"),
            exec_tmp_bytes=_int(env, "KODO_EXEC_TMP_BYTES"),
            exec_worktree_bytes=_int(env, "KODO_EXEC_WORKTREE_BYTES"),
            schema_retries=_int(env, "KODO_SCHEMA_RETRIES"),
            max_revisions=_int(env, "KODO_MAX_REVISIONS"),
            max_repairs=_int(env, "KODO_MAX_REPAIRS"),
            max_questions=_int(env, "KODO_MAX_QUESTIONS"),
            call_token_bound=_int(env, "KODO_CALL_TOKEN_BOUND"),
            price_usd_per_mtok=_float(env, "KODO_PRICE_USD_PER_MTOK"),
            budget_usd=_optional_float(env, "KODO_BUDGET_USD"),
            budget_tokens=_optional_int(env, "KODO_BUDGET_TOKENS"),
            deliver_remote=env.get("KODO_DELIVER_REMOTE", DEFAULTS["KODO_DELIVER_REMOTE"]).strip(),
            deliver_protocols=tuple(
                p.strip()
                for p in env.get(
                    "KODO_DELIVER_PROTOCOLS", DEFAULTS["KODO_DELIVER_PROTOCOLS"]
                ).split(",")
                if p.strip()
            ),
            worktree_grace_s=_float(env, "KODO_WORKTREE_GRACE_S"),
            instance_release_s=_float(env, "KODO_INSTANCE_RELEASE_S"),
            instance_retry_s=_float(env, "KODO_INSTANCE_RETRY_S"),
            keep_branches=_bool(env, "KODO_KEEP_BRANCHES"),
            max_body_bytes=_int(env, "KODO_MAX_BODY_BYTES"),
            approval_poll_s=_float(env, "APPROVAL_POLL_S"),
            step_lease_s=_float(env, "KODO_STEP_LEASE_S"),
            redispatch_after_s=_float(env, "KODO_REDISPATCH_AFTER_S"),
            reconcile_s=_float(env, "KODO_RECONCILE_S"),
            retry_backoff_s=_float(env, "KODO_RETRY_BACKOFF_S"),
            max_answer_bytes=_int(env, "KODO_MAX_ANSWER_BYTES"),
            sse_per_token=_int(env, "KODO_SSE_PER_TOKEN"),
            sse_max_streams=_int(env, "KODO_SSE_MAX_STREAMS"),
            intent_rate=env.get("KODO_INTENT_RATE", DEFAULTS["KODO_INTENT_RATE"]).strip(),
            header_timeout_s=_float(env, "KODO_HEADER_TIMEOUT_S"),
            body_timeout_s=_float(env, "KODO_BODY_TIMEOUT_S"),
            send_timeout_s=_float(env, "KODO_SEND_TIMEOUT_S"),
            sse_max_s=_float(env, "KODO_SSE_MAX_S"),
            api_workers=_int(env, "KODO_API_WORKERS"),
            api_connections=_int(env, "KODO_API_CONNECTIONS"),
            api_db_pool=_int(env, "KODO_API_DB_POOL"),
            api_db_overflow=_int(env, "KODO_API_DB_OVERFLOW"),
            api_db_wait_s=_float(env, "KODO_API_DB_WAIT_S"),
            db_ping_idle_s=_float(env, "KODO_DB_PING_IDLE_S"),
            api_active=_int(env, "KODO_API_ACTIVE"),
            api_queue_s=_float(env, "KODO_API_QUEUE_S"),
            redis_key_prefix=env.get("KODO_REDIS_KEY_PREFIX", DEFAULTS["KODO_REDIS_KEY_PREFIX"]),
            policy_ref=env.get("KODO_POLICY_REF", DEFAULTS["KODO_POLICY_REF"]).strip(),
            ui_session_ttl_s=_int(env, "KODO_UI_SESSION_TTL_S"),
            allow_self_approval=_bool(env, "KODO_ALLOW_SELF_APPROVAL"),
            log_format=env.get("KODO_LOG_FORMAT", DEFAULTS["KODO_LOG_FORMAT"]).strip().lower(),
            webhook=_webhook(env),
            repository_webhooks=_repository_webhooks(env),
            webhook_timeout_s=_float(env, "KODO_WEBHOOK_TIMEOUT_S"),
            webhook_max_attempts=_int(env, "KODO_WEBHOOK_MAX_ATTEMPTS"),
            webhook_backoff_s=_float(env, "KODO_WEBHOOK_BACKOFF_S"),
            webhook_backoff_max_s=_float(env, "KODO_WEBHOOK_BACKOFF_MAX_S"),
            public_url=env.get("KODO_PUBLIC_URL", DEFAULTS["KODO_PUBLIC_URL"]).strip(),
        )
        settings.validate()
        return settings

    @property
    def log_json(self) -> bool:
        """Whether log lines are JSON (the default) rather than rendered for a person."""
        return self.log_format == "json"

    def call_estimate(self) -> Estimate:
        """What each provider call reserves on its run's budget."""
        return call_estimate(self.call_token_bound, self.price_usd_per_mtok)

    def validate(self) -> None:
        """Refuse settings that could only fail later, in the middle of a run."""
        if self.oc_timeout_ms <= 0:
            raise ConfigError("OC_TIMEOUT_MS must be positive")
        if self.schema_retries < 1:
            raise ConfigError("KODO_SCHEMA_RETRIES must be at least 1")
        if self.max_revisions < 1:
            raise ConfigError("KODO_MAX_REVISIONS must be at least 1 (the first plan)")
        if self.max_repairs < 0:
            raise ConfigError("KODO_MAX_REPAIRS must be 0 (no repairs) or more")
        if self.max_questions < 0:
            raise ConfigError("KODO_MAX_QUESTIONS must be 0 (never ask) or more")
        if self.call_token_bound < 1:
            raise ConfigError("KODO_CALL_TOKEN_BOUND must be at least 1")
        if not 0 <= self.price_usd_per_mtok < 1e6:
            raise ConfigError("KODO_PRICE_USD_PER_MTOK must be a price, 0 or more")
        if self.budget_usd is not None and not 0 <= self.budget_usd <= 1e9:
            raise ConfigError("KODO_BUDGET_USD must be empty or an amount, 0 or more")
        if self.budget_tokens is not None and self.budget_tokens < 0:
            raise ConfigError("KODO_BUDGET_TOKENS must be empty or 0 or more")
        if self.deliver_remote and not re.fullmatch(
            r"[A-Za-z0-9][A-Za-z0-9._-]*", self.deliver_remote
        ):
            raise ConfigError("KODO_DELIVER_REMOTE must name a remote (letters, digits, . _ -)")
        unknown = set(self.deliver_protocols) - {"file", "https", "ssh", "git", "http"}
        if unknown:
            raise ConfigError(f"KODO_DELIVER_PROTOCOLS names unknown protocols: {sorted(unknown)}")
        if self.worktree_grace_s < 0:
            raise ConfigError("KODO_WORKTREE_GRACE_S must be 0 or more")
        if self.instance_release_s < 0:
            raise ConfigError("KODO_INSTANCE_RELEASE_S must be 0 or more")
        if self.instance_retry_s < 0:
            raise ConfigError("KODO_INSTANCE_RETRY_S must be 0 or more")
        for name, value in (
            ("APPROVAL_POLL_S", self.approval_poll_s),
            ("KODO_STEP_LEASE_S", self.step_lease_s),
            ("KODO_REDISPATCH_AFTER_S", self.redispatch_after_s),
            ("KODO_RECONCILE_S", self.reconcile_s),
            ("KODO_RETRY_BACKOFF_S", self.retry_backoff_s),
            ("KODO_HEADER_TIMEOUT_S", self.header_timeout_s),
            ("KODO_BODY_TIMEOUT_S", self.body_timeout_s),
            ("KODO_SEND_TIMEOUT_S", self.send_timeout_s),
            ("KODO_SSE_MAX_S", self.sse_max_s),
            ("KODO_MAX_ANSWER_BYTES", self.max_answer_bytes),
            ("KODO_SSE_PER_TOKEN", self.sse_per_token),
            ("KODO_SSE_MAX_STREAMS", self.sse_max_streams),
            ("KODO_API_WORKERS", self.api_workers),
            ("KODO_API_CONNECTIONS", self.api_connections),
            ("KODO_API_DB_POOL", self.api_db_pool),
            ("KODO_API_DB_WAIT_S", self.api_db_wait_s),
            ("KODO_API_ACTIVE", self.api_active),
            ("KODO_API_QUEUE_S", self.api_queue_s),
            ("OC_DAEMON_LOST_S", self.oc_daemon_lost_s),
            ("KODO_WEBHOOK_TIMEOUT_S", self.webhook_timeout_s),
            ("KODO_WEBHOOK_MAX_ATTEMPTS", self.webhook_max_attempts),
            ("KODO_WEBHOOK_BACKOFF_S", self.webhook_backoff_s),
            ("KODO_WEBHOOK_BACKOFF_MAX_S", self.webhook_backoff_max_s),
        ):
            if value <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.db_ping_idle_s < 0:
            raise ConfigError("KODO_DB_PING_IDLE_S must not be negative")
        if not (math.isfinite(self.exec_cpus) and 0 <= self.exec_cpus <= 4096):
            raise ConfigError("KODO_EXEC_CPUS must be 0 (half the CPUs) or a number of CPUs")
        for name, limit in (
            ("KODO_EXEC_TIMEOUT_S", self.exec_timeout_s),
            ("KODO_EXEC_OUTPUT_CAP", self.exec_output_cap),
            ("KODO_EXEC_CPU_S", self.exec_cpu_s),
            ("KODO_EXEC_MEMORY_BYTES", self.exec_memory_bytes),
            ("KODO_EXEC_NPROC", self.exec_nproc),
            ("KODO_EXEC_FSIZE_BYTES", self.exec_fsize_bytes),
            ("KODO_EXEC_TMP_BYTES", self.exec_tmp_bytes),
            ("KODO_EXEC_WORKTREE_BYTES", self.exec_worktree_bytes),
        ):
            if limit <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.sandbox_cgroup not in ("auto", "required", "off"):
            raise ConfigError("KODO_SANDBOX_CGROUP must be auto, required or off")
        if not 0 < self.sandbox_uid < 2**32 - 1:
            raise ConfigError("KODO_SANDBOX_UID must be a non-root uid")
        if not _RATE.match(self.intent_rate):
            raise ConfigError(
                "KODO_INTENT_RATE must read like 30/minute or 5 per second, "
                f"got {self.intent_rate!r}"
            )
        if not _PREFIX.match(self.redis_key_prefix):
            raise ConfigError("KODO_REDIS_KEY_PREFIX must be 1-64 of A-Z a-z 0-9 _ . : -")
        if self.ui_session_ttl_s <= 0:
            raise ConfigError("KODO_UI_SESSION_TTL_S must be positive")
        if self.api_db_overflow < 0:
            raise ConfigError("KODO_API_DB_OVERFLOW must be 0 or more")
        if self.policy_ref.startswith("-"):
            raise ConfigError("KODO_POLICY_REF must be a git ref, not an option")
        if self.log_format not in ("json", "console"):
            raise ConfigError("KODO_LOG_FORMAT must be json or console")
        if not self.database_url.startswith("postgresql"):
            raise ConfigError("DATABASE_URL must be a PostgreSQL URL")
