"""docker-compose.yml is a file `docker compose` accepts (the Compose Specification's own
schema, vendored under tests/fixtures/compose-spec) and keeps kodo's rules: every
long-running service proves its health, nothing is published beyond loopback, the API
is served in the one streaming shape, no secret is written in it, and the token
bootstrap runs after the migration and before the API."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from devstack.kodo_procs import API_CONF, WORKER_CONCURRENCY, api_argv
from shared.config import DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "fixtures" / "compose-spec" / "compose-spec.json"
ONE_SHOTS = {"migrate", "bootstrap"}
KODO_IMAGES = {"kodo:local", "kodo-opencode:local"}
CREDENTIAL = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|BASIC_AUTH", re.IGNORECASE)
INTERPOLATED = re.compile(r"^\$\{[A-Z0-9_]+(?::?[-?][^}]*)?\}$")


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"].startswith("https://json-schema.org/draft-07/")
    return jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


def test_the_file_is_valid_against_the_compose_specification() -> None:
    errors = [f"{e.json_path}: {e.message}" for e in _validator().iter_errors(_compose())]
    assert errors == []


def test_the_schema_refuses_what_docker_compose_refuses() -> None:
    """The validation has teeth: an unknown healthcheck key and an unknown dependency
    condition (both typos compose would reject) fail it."""
    doc = _compose()
    doc["services"]["api"]["healthcheck"]["tset"] = ["CMD", "true"]
    doc["services"]["worker"]["depends_on"]["migrate"]["condition"] = "service_done"
    paths = {e.json_path for e in _validator().iter_errors(doc)}
    assert "$.services.api.healthcheck" in paths
    assert "$.services.worker.depends_on" in paths


@pytest.mark.parametrize("name", sorted(set(_services()) - ONE_SHOTS))
def test_every_long_running_service_has_a_healthcheck(name: str) -> None:
    check = _services()[name].get("healthcheck")
    assert check is not None, f"{name} has no healthcheck"
    assert not check.get("disable", False)
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert len(check["test"]) > 1


@pytest.mark.parametrize("name", sorted(set(_services()) - ONE_SHOTS))
def test_every_long_running_service_is_started_again_when_it_dies(name: str) -> None:
    """As ``kodo up``'s keep-alive does: a worker felled by kombu's crash on a Redis
    restart comes back, and the reconciler re-sends what it was doing."""
    assert _services()[name].get("restart") in ("unless-stopped", "always"), name


@pytest.mark.parametrize("name", sorted(_services()))
def test_every_services_log_is_bounded(name: str) -> None:
    """Docker's json-file driver keeps a container's output without end unless told."""
    logging = _services()[name].get("logging")
    assert logging is not None, f"{name} logs without a bound"
    assert logging["driver"] == "json-file"
    assert logging["options"]["max-size"] == "50m"
    assert int(logging["options"]["max-file"]) >= 2


@pytest.mark.parametrize("name", sorted(ONE_SHOTS))
def test_one_shots_are_waited_for_not_health_checked(name: str) -> None:
    service = _services()[name]
    assert service["restart"] == "no"
    assert service["healthcheck"] == {"disable": True}
    waiters = [
        other
        for other, spec in _services().items()
        if spec.get("depends_on", {}).get(name, {}).get("condition")
        == "service_completed_successfully"
    ]
    assert waiters, f"nothing waits for {name} to complete"


def test_healthchecks_run_kodos_checks_that_exist() -> None:
    """Each ``/app/docker/X`` a healthcheck runs is a file of docker/ (the image copies
    the tree to /app), named with one of its checks."""
    checks = {"http", "worker", "beat", "stream"}
    for name, spec in _services().items():
        test = spec.get("healthcheck", {}).get("test", [])
        if "/app/docker/healthcheck.py" in test:
            assert (ROOT / "docker" / "healthcheck.py").is_file()
            assert test[test.index("/app/docker/healthcheck.py") + 1] in checks, name


def test_kodo_services_depend_on_health_and_the_migration() -> None:
    for name in ("api", "worker", "beat", "collector"):
        needs = _services()[name]["depends_on"]
        assert needs["migrate"] == {"condition": "service_completed_successfully"}, name
        for dependency in ("postgres", "redis", "oc"):
            assert needs[dependency] == {"condition": "service_healthy"}, (name, dependency)
    assert _services()["flower"]["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_the_token_bootstrap_runs_after_migrate_and_before_the_api() -> None:
    bootstrap = _services()["bootstrap"]
    assert bootstrap["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert bootstrap["command"][:2] == ["python", "/app/docker/bootstrap_token.py"]
    out = bootstrap["command"][bootstrap["command"].index("--out") + 1]
    # the token goes to a named volume (not the image, not a bind mount of the host tree)
    mounts = dict(v.split(":", 1)[::-1] for v in bootstrap["volumes"])
    assert mounts == {"/data/secrets": "secrets"}
    assert out.startswith("/data/secrets/")
    assert "secrets" in _compose()["volumes"]
    assert _services()["api"]["depends_on"]["bootstrap"] == {
        "condition": "service_completed_successfully"
    }


def test_host_ports_bind_loopback_only() -> None:
    for name, spec in _services().items():
        for port in spec.get("ports", []):
            assert isinstance(port, str), (name, port)
            assert port.startswith("127.0.0.1:"), (name, port)
    for name in ("postgres", "redis"):
        assert "ports" not in _services()[name], f"{name} is published"


def test_the_api_runs_the_one_streaming_shape_of_kodo_up() -> None:
    """The very argv ``kodo up`` starts (gevent workers from services.api.gunicorn_conf),
    bound on the container's interface; the image's default command is the same."""
    command = _services()["api"]["command"]
    expected = api_argv("0.0.0.0:8000")
    assert [Path(expected[0]).name, *expected[1:]] == command
    assert command[command.index("-c") + 1] == API_CONF
    cmd_line = next(
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")
    )
    assert json.loads(cmd_line.removeprefix("CMD ")) == command


def test_the_gunicorn_config_serves_streams_on_gevent() -> None:
    from gunicorn.util import load_class
    from gunicorn.workers.ggevent import GeventWorker

    from services.api import gunicorn_conf

    assert issubclass(load_class(gunicorn_conf.worker_class), GeventWorker)
    assert gunicorn_conf.worker_connections > 1


def _environments() -> list[tuple[str, str, object]]:
    found = []
    for name, spec in _services().items():
        env = spec.get("environment", {})
        assert isinstance(env, dict), f"{name}: environment as a map, so it can be checked"
        found += [(name, key, value) for key, value in env.items()]
    return found


def test_no_secret_is_written_in_the_file() -> None:
    """A credential comes from the shell (``${VAR...}``) or is passed through (no value);
    the one literal is Postgres's password, whose server is on the compose network only."""
    postgres = _services()["postgres"]
    pg_password = postgres["environment"]["POSTGRES_PASSWORD"]
    for name, key, value in _environments():
        if not CREDENTIAL.search(key) or value is None:
            continue
        if (name, key) == ("postgres", "POSTGRES_PASSWORD"):
            continue
        assert isinstance(value, str), (name, key)
        assert INTERPOLATED.match(value), (name, key, value)
    for name, key, value in _environments():
        if key == "DATABASE_URL":
            assert f"postgres:{pg_password}@postgres:5432/" in str(value), name
    text = COMPOSE.read_text()
    assert not re.search(r"kodo_[A-Za-z0-9_-]{20,}", text), "a kodo token is written in the file"
    assert not re.search(r"\bsk-[A-Za-z0-9]{10,}", text), "a provider key is written in the file"


def test_the_daemon_settings_pass_through_to_every_kodo_container() -> None:
    """The profile `opencode` works with the rest: OC_BASE_URL (default: the stand-in)
    and the model and password reach every kodo container, by kodo's own names."""
    for name, spec in _services().items():
        if spec.get("image") != "kodo:local" or name in ONE_SHOTS:
            continue
        env = spec["environment"]
        assert env["OC_BASE_URL"] == "${OC_BASE_URL:-http://oc:4096}", name
        for key in ("OC_PROVIDER_ID", "OC_MODEL_ID", "OC_PASSWORD"):
            assert key in DEFAULTS, key
            assert env[key] is None, (name, key)
    opencode = _services()["opencode"]
    assert opencode["profiles"] == ["opencode"]
    assert "--oc-auth" in opencode["healthcheck"]["test"]


def test_both_images_are_built_for_the_owner_of_the_repositories() -> None:
    """KODO_UID/KODO_GID reach both builds and become the user of every process, so the
    bind-mounted repositories' owner is the user git runs as."""
    for name, spec in _services().items():
        if spec.get("image") not in KODO_IMAGES:
            continue
        args = spec["build"]["args"]
        assert args["KODO_UID"] == "${KODO_UID:-1000}", name
        assert args["KODO_GID"] == "${KODO_GID:-1000}", name
    for dockerfile in (ROOT / "Dockerfile", ROOT / "docker" / "opencode.Dockerfile"):
        text = dockerfile.read_text()
        assert "ARG KODO_UID=" in text, dockerfile
        assert "ARG KODO_GID=" in text, dockerfile
        assert '--uid "${KODO_UID}" --gid "${KODO_GID}" kodo' in text, dockerfile
        assert "USER kodo" in text, dockerfile


def test_the_worker_healthcheck_names_no_node() -> None:
    """The worker's check finds its own node by hostname, whatever ``-n`` names it."""
    worker = _services()["worker"]
    test = worker["healthcheck"]["test"]
    assert test[test.index("/app/docker/healthcheck.py") + 1] == "worker"
    assert "-d" not in test
    assert not any("@" in part for part in test)
    assert shlex.join(worker["command"]).startswith(
        "celery -A services.worker.celery_app:app worker"
    )


def test_the_worker_runs_as_many_steps_at_once_as_kodo_ups() -> None:
    """One shape: compose's worker and ``kodo up``'s run the same number of threads."""
    command = _services()["worker"]["command"]
    assert command[command.index("-P") + 1] == "threads"
    assert command[command.index("-c") + 1] == str(WORKER_CONCURRENCY)


def _opencode_script() -> str:
    command = _services()["opencode"]["command"]
    assert command[:2] == ["sh", "-c"]
    return str(command[2]).replace("$$", "$")  # compose's escape for a literal $


@pytest.mark.parametrize(
    "missing", ["KODO_OC_PROVIDER", "KODO_OC_MODEL", "KODO_OC_PRICES", "OC_PASSWORD"]
)
def test_the_profiles_settings_are_required_by_its_container_not_by_compose(
    missing: str,
) -> None:
    """Compose interpolates every service, the profile off or on, so a ``:?`` in the file
    would make each ``docker compose up`` demand the daemon's settings; the container's
    own shell refuses to start without them instead, naming the one missing."""
    assert ":?" not in json.dumps(_services()["opencode"]["environment"])
    env = {
        "PATH": "/usr/bin:/bin",
        "KODO_OC_PROVIDER": "anthropic",
        "KODO_OC_MODEL": "m",
        "KODO_OC_PRICES": "input=1 output=2",
        "OC_PASSWORD": "pw",
    }
    del env[missing]
    done = subprocess.run(
        ["sh", "-c", _opencode_script()], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert f"set {missing}" in done.stderr


def test_beats_healthcheck_uses_kodo_doctors_limit() -> None:
    """Beat is unhealthy exactly when ``kodo doctor`` says its last tick is too old."""
    from services.cli.doctor import BEAT_STALE_S

    test = _services()["beat"]["healthcheck"]["test"]
    assert test[test.index("/app/docker/healthcheck.py") + 1] == "beat"
    assert float(test[test.index("--max-age") + 1]) == BEAT_STALE_S


DAEMONS = ("oc", "opencode")


def _workspaces_mount(spec: dict[str, Any]) -> tuple[str, str | None]:
    """Where a service mounts the `workspaces` volume, and the subpath it mounts (if any)."""
    for entry in spec["volumes"]:
        if isinstance(entry, str) and entry.startswith("workspaces:"):
            return entry.split(":")[1], None
        if isinstance(entry, dict) and entry.get("source") == "workspaces":
            return entry["target"], entry.get("volume", {}).get("subpath")
    raise AssertionError("no workspaces volume")


def test_kodos_folders_beside_the_worktrees_share_their_volume_out_of_the_daemons_sight() -> None:
    """A worktree is checked out in ``<workspaces>.stage`` and renamed into place, which
    needs one filesystem, and the per-repository locks (``<workspaces>.locks``) must be
    one set for every worker container: so KODO_WORKSPACE_DIR is a folder of the volume,
    its siblings beside it. A daemon mounts that folder alone, at the same path (the
    worktree paths kodo gives it are the worker's), never the siblings, and only once
    the one-shot that makes the folder has run (docker refuses a missing subpath)."""
    services = _services()
    workspace = services["worker"]["environment"]["KODO_WORKSPACE_DIR"]
    for name, spec in services.items():
        if spec.get("image") != "kodo:local" or name in DAEMONS or "volumes" not in spec:
            continue
        if not any(str(v).startswith("workspaces:") for v in spec["volumes"]):
            continue
        target, subpath = _workspaces_mount(spec)
        assert subpath is None, name
        assert str(Path(workspace).parent) == target, (name, target, workspace)
    for name in DAEMONS:
        spec = services[name]
        target, subpath = _workspaces_mount(spec)
        assert target == workspace, name
        assert subpath == Path(workspace).name, name
        assert spec["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["opencode"]["environment"]["KODO_WORKSPACE_DIR"] == workspace
    migrate = " ".join(services["migrate"]["command"])
    assert 'mkdir -p "$$KODO_WORKSPACE_DIR"' in migrate
    for dockerfile in (ROOT / "Dockerfile", ROOT / "docker" / "opencode.Dockerfile"):
        assert f"mkdir -p {workspace} " in dockerfile.read_text(), dockerfile


def test_the_real_daemon_is_shown_no_repository() -> None:
    """One daemon serves every run, so a repository it can read, every run's agent can:
    its working files, its ``.git/config`` (a remote's token), every branch. The worker
    and the API need the repositories; the real daemon gets the runs' folder alone."""
    services = _services()
    repos = services["worker"]["environment"]["KODO_REPO_ROOTS"]
    assert any(str(v).endswith(f":{repos}") for v in services["worker"]["volumes"])
    opencode = services["opencode"]
    assert "KODO_REPO_ROOTS" not in opencode["environment"]
    assert all(repos not in json.dumps(v) for v in opencode["volumes"]), opencode["volumes"]
