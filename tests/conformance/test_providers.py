"""Real provider paths of the real daemon, offline: config, key, Messages API, prices.

Every provider kind ``kodo oc up --provider`` offers is started on the real
``opencode serve`` 1.18.33 and must show up in its ``GET /config/providers`` at the
configured prices, with the key read from the environment and written nowhere. The
``anthropic`` kind then runs for real: the daemon's ``@ai-sdk/anthropic`` talks the
Messages API (streaming, tool use, usage) to kodo's scripted LLM, which insists on
the key, and the tokens and cost the daemon reports are the scripted usage times the
configured prices.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devstack.oc_daemon import daemon
from devstack.oc_daemon.config import ProviderKind, ProviderSpec
from devstack.oc_daemon.daemon import DaemonState
from devstack.sample_repo import create_sample_repo
from devstack.supervisor import free_port
from shared.clock import SystemClock
from shared.db.models import OpenCodeCall
from shared.domain.contracts import PLAN_OUTPUT_SCHEMA, validate_answer
from shared.model_in_use import offered
from shared.opencode.cache import LruCache
from shared.opencode.call_ledger import PostgresCallLedger
from shared.opencode.calls import StructuredCall
from shared.opencode.client import ModelRef, OpenCodeClient, PromptReply
from shared.opencode.exactly_once import ExactlyOnceCalls
from shared.opencode.tools import permission_rules, tools_map
from tests.conformance.conftest import (
    ANTHROPIC,
    KEY,
    KEY_VAR,
    MODEL,
    PASSWORD,
    PRICES,
    SandboxDirs,
    key_env,
)
from tests.factories import RunFactory
from tests.integration.cli.conftest import with_db

pytestmark = pytest.mark.conformance

KODO = str(Path(sys.executable).parent / "kodo")
UP_REDIS_DB = 15  # the session's own Redis; no other suite uses this db


def _env() -> dict[str, str]:
    return key_env()


def _files_with_key(root: Path) -> list[str]:
    """Every file under ``root`` (config, state, logs, the daemon's database) holding KEY."""
    return [str(p) for p in root.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]


@pytest.mark.parametrize("kind", list(ProviderKind))
def test_every_provider_kind_is_offered_by_the_real_daemon_at_the_configured_prices(
    opencode_binary: Path, tmp_path: Path, kind: ProviderKind
) -> None:
    spec = ProviderSpec(
        kind=kind,
        model_id="kodo-model-1",
        prices=PRICES,
        base_url="http://127.0.0.1:9/v1" if kind is ProviderKind.OPENAI_COMPATIBLE else None,
        api_key_env=KEY_VAR,
    )
    state = daemon.start(
        opencode_binary, state_dir=tmp_path, port=free_port(), provider=spec, env=_env()
    )
    try:
        providers = daemon.read_providers(state.url, password=state.password)
    finally:
        daemon.stop(tmp_path)
    found = offered(providers, kind.value, "kodo-model-1")
    assert found is not None
    assert (found.npm, found.cost, found.stand_in) == (spec.npm, PRICES.as_config(), False)
    assert (state.provider_kind, state.model, state.stand_in) == (
        kind.value,
        f"{kind.value}/kodo-model-1",
        False,
    )
    assert state.api_key_env == KEY_VAR
    assert _files_with_key(tmp_path) == []


def test_kodo_oc_up_takes_a_provider_by_its_key_variable_and_never_prints_the_key(
    opencode_binary: Path, tmp_path: Path
) -> None:
    env = {**_env(), "KODO_OC_STATE_DIR": str(tmp_path)}
    argv = [KODO, "oc", "up", "--port", str(free_port()), "--provider", "anthropic"]
    argv += ["--model", "claude-x", "--api-key-env", KEY_VAR]
    argv += [f"--price={k}={v}" for k, v in PRICES.as_config().items()]

    def kodo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), env=env, capture_output=True, text=True, timeout=120, check=False
        )

    up = kodo(*argv)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "export OC_PROVIDER_ID=anthropic OC_MODEL_ID=claude-x" in up.stdout
        assert f"key from ${KEY_VAR}" in up.stdout
        assert kodo(KODO, "oc", "health").returncode == 0
    finally:
        down = kodo(KODO, "oc", "down")
    assert down.returncode == 0, down.stderr
    assert KEY not in up.stdout + up.stderr
    assert _files_with_key(tmp_path) == []
    missing = kodo(*argv[:-4])
    assert missing.returncode != 0
    assert "give --price input=USD output=USD cache_read=USD cache_write=USD" in missing.stderr


def _llm(url: str, what: str) -> dict[str, Any]:
    root = url.removesuffix("/v1")
    if what == "reset":
        httpx.post(f"{root}/__kodo/reset", timeout=5.0).raise_for_status()
        return {}
    answer: dict[str, Any] = httpx.get(f"{root}/__kodo/stats", timeout=5.0).json()
    return answer


def _plan(
    state: DaemonState, repo: Path, text: str, model: ModelRef = ANTHROPIC
) -> tuple[PromptReply, dict[str, Any]]:
    """One structured plan prompt to ``state``'s daemon: the reply and the session's totals."""
    with OpenCodeClient(state.url, timeout_s=60.0, password=state.password) as client:
        session = client.create_session(
            directory=str(repo), title="kodo plan", permission=permission_rules("plan")
        )
        reply = client.prompt(
            str(session["id"]),
            directory=str(repo),
            agent="plan",
            model=model,
            text=text,
            tools=tools_map("plan"),
            format={"type": "json_schema", "schema": PLAN_OUTPUT_SCHEMA, "retryCount": 1},
        )
        totals = client.get_session(str(session["id"]), directory=str(repo))
    return reply, totals


def _expected_cost(usage: dict[str, int]) -> float:
    # The Messages API has no reasoning count: the daemon sees it inside the output.
    return PRICES.cost(
        input=usage["input"],
        output=usage["output"] + usage["reasoning"],
        reasoning=0,
        cache_read=usage["cache_read"],
        cache_write=0,
    )


def test_a_plan_prompt_over_the_messages_api_answers_structured_at_the_configured_prices(
    anthropic_daemon: DaemonState, messages_llm: str, anthropic_repo: Path
) -> None:
    _llm(messages_llm, "reset")
    reply, _ = _plan(anthropic_daemon, anthropic_repo, "Add a docstring to calc.py")
    stats = _llm(messages_llm, "stats")
    assert stats["wires"] == {"messages": 1}
    assert stats["refused_keys"] == 0
    assert validate_answer(PLAN_OUTPUT_SCHEMA, reply.info["structured"])
    assert reply.info["structured"]["files"][0]["path"] == "calc.py"
    assert (reply.info["providerID"], reply.info["finish"]) == ("anthropic", "tool-calls")
    usage = stats["usage"]
    assert reply.info["tokens"] == {
        "total": usage["input"] + usage["output"] + usage["reasoning"] + usage["cache_read"],
        "input": usage["input"],
        "output": usage["output"] + usage["reasoning"],
        "reasoning": 0,
        "cache": {"read": usage["cache_read"], "write": 0},
    }
    assert reply.info["cost"] == pytest.approx(_expected_cost(usage), abs=1e-12)


def test_a_tool_call_turn_over_the_messages_api_runs_the_tool_and_bills_both_steps(
    anthropic_daemon: DaemonState, messages_llm: str, anthropic_repo: Path
) -> None:
    _llm(messages_llm, "reset")
    reply, session = _plan(anthropic_daemon, anthropic_repo, "Explain calc.py [oc:tool=read]")
    stats = _llm(messages_llm, "stats")
    assert stats["replies"] == {"tool:read": 1, "tool:StructuredOutput": 1}
    assert stats["wires"] == {"messages": 2}
    assert reply.info["structured"]["files"][0]["path"] == "calc.py"
    usage = stats["usage"]
    assert session["tokens"]["input"] == usage["input"]
    assert session["tokens"]["output"] == usage["output"] + usage["reasoning"]
    assert session["tokens"]["cache"]["read"] == usage["cache_read"]
    assert session["cost"] == pytest.approx(_expected_cost(usage), abs=1e-12)


def test_the_ledger_records_the_messages_api_calls_cost_as_prices_times_tokens(
    anthropic_daemon: DaemonState,
    messages_llm: str,
    anthropic_repo: Path,
    sessions: sessionmaker[Session],
    db: Session,
) -> None:
    run = RunFactory()
    db.commit()
    call = StructuredCall(
        str(run.id), "CompileST", 1, "plan", "Teach calc.py to divide", PLAN_OUTPUT_SCHEMA,
        str(anthropic_repo),
    )  # fmt: skip
    _llm(messages_llm, "reset")
    with OpenCodeClient(anthropic_daemon.url, timeout_s=60.0, password=PASSWORD) as client:
        calls = ExactlyOnceCalls(
            client,
            PostgresCallLedger(sessions),
            SystemClock(),
            model=ANTHROPIC,
            timeout_s=60.0,
            l1=LruCache(),
        )
        result = calls.prompt_structured(call)
    usage = _llm(messages_llm, "stats")["usage"]
    with sessions() as s:
        row = s.execute(select(OpenCodeCall).where(OpenCodeCall.op_key == call.op_key)).scalar_one()
    assert row.status == "succeeded"
    assert row.usage is not None
    assert row.usage["cost_usd"] == pytest.approx(_expected_cost(usage), abs=1e-12)
    assert row.usage["input_tokens"] == usage["input"] == result.usage["input_tokens"]


def test_both_wires_give_the_same_answer_and_tokens_for_the_same_prompt(
    anthropic_daemon: DaemonState,
    messages_llm: str,
    anthropic_repo: Path,
    real_daemon: DaemonState,
    scripted_llm: str,
    sandbox_dirs: SandboxDirs,
    tmp_path: Path,
) -> None:
    """Chat completions (the suite's daemon) and the Messages API: one script, one answer."""
    prompt = "Teach calc.py to multiply"
    _llm(messages_llm, "reset")
    over_messages, _ = _plan(anthropic_daemon, anthropic_repo, prompt)
    repo = create_sample_repo(sandbox_dirs.workspaces / tmp_path.name / "calc")  # in its sight
    over_chat, _ = _plan(real_daemon, repo, prompt, MODEL)
    assert over_messages.info["structured"] == over_chat.info["structured"]
    chat, messages = over_chat.info["tokens"], over_messages.info["tokens"]
    assert messages["input"] == chat["input"]
    assert messages["cache"]["read"] == chat["cache"]["read"]
    assert messages["output"] == chat["output"] + chat["reasoning"]
    assert messages["total"] == chat["total"]


def test_kodo_up_runs_against_an_external_daemon_and_says_which_model(
    anthropic_daemon: DaemonState, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": with_db(redis_url, UP_REDIS_DB),
        "OC_PASSWORD": PASSWORD,
        "OC_PROVIDER_ID": ANTHROPIC.provider_id,
        "OC_MODEL_ID": ANTHROPIC.model_id,
    }
    env.pop("OC_BASE_URL", None)
    home = tmp_path / "home"
    argv = [KODO, "up", "--home", str(home), "--api-port", "0", "--flower-port", "0"]
    argv += ["--opencode", anthropic_daemon.url]

    def kodo(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), env={**env, **extra}, capture_output=True, text=True, timeout=180
        )

    refused = kodo(*argv, OC_MODEL_ID="no-such-model")
    assert refused.returncode != 0
    assert "anthropic/no-such-model: the daemon does not offer it" in refused.stderr
    started = kodo(*argv)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "ready oc-compat" not in started.stdout
        said = "model:    anthropic/claude-kodo-scripted via @ai-sdk/anthropic, USD per 1M"
        assert said in started.stdout
        assert "STAND-IN" not in started.stdout
        doctor = kodo(KODO, "doctor", "--home", str(home), "--timeout", "10")  # a loaded daemon
        line = next(x for x in doctor.stdout.splitlines() if " model " in f" {x} ")
        assert line.startswith("ok"), doctor.stdout
        assert "anthropic/claude-kodo-scripted via @ai-sdk/anthropic" in line
    finally:
        kodo(KODO, "down", "--home", str(home), "--grace", "5")
    assert KEY not in started.stdout + started.stderr + doctor.stdout


def test_no_process_on_the_host_has_the_key_on_its_command_line(
    anthropic_daemon: DaemonState,
) -> None:
    """The sandboxed daemon gets the key in its environment (bubblewrap's own), never as
    an argument a `ps` could show."""
    assert anthropic_daemon.sandboxed
    shown = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if KEY.encode() in (proc / "cmdline").read_bytes():
                    shown.append(proc.name)
            except OSError:
                continue  # gone meanwhile
    assert shown == []
