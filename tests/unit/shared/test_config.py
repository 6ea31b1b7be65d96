"""Settings come from the environment in one place and refuse unusable values."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import DEFAULTS, ConfigError, Settings


def test_defaults_apply_when_nothing_is_set() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.oc_timeout_ms == 120000
    assert settings.repo_roots == ()
    assert "python3" in settings.exec_allowlist


def test_values_are_parsed_and_paths_resolved(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "OC_TIMEOUT_MS": "500",
            "RANDOM_SEED": "42",
            "KODO_REPO_ROOTS": f"{tmp_path}/a:{tmp_path}/b",
            "KODO_EXEC_ALLOWLIST": "make, pytest",
            "APPROVAL_POLL_S": "0.25",
            "OC_BASE_URL": "http://127.0.0.1:4096/",
        }
    )
    assert settings.oc_timeout_ms == 500
    assert settings.random_seed == 42
    assert settings.repo_roots == (tmp_path / "a", tmp_path / "b")
    assert settings.exec_allowlist == ("make", "pytest")
    assert settings.approval_poll_s == 0.25
    assert settings.oc_base_url == "http://127.0.0.1:4096"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("OC_TIMEOUT_MS", "soon"),
        ("OC_TIMEOUT_MS", "0"),
        ("KODO_SCHEMA_RETRIES", "0"),
        ("APPROVAL_POLL_S", "-1"),
        ("DATABASE_URL", "sqlite:///kodo.db"),
        ("KODO_SANDBOX_CGROUP", "maybe"),
        ("KODO_API_DB_POOL", "0"),
        ("KODO_API_DB_OVERFLOW", "-1"),
        ("KODO_API_DB_WAIT_S", "0"),
        ("KODO_API_ACTIVE", "0"),
        ("KODO_API_QUEUE_S", "-1"),
        ("KODO_INSTANCE_RELEASE_S", "-1"),
        ("KODO_INSTANCE_RETRY_S", "-1"),
    ],
)
def test_an_unusable_value_fails_at_start(key: str, value: str) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({key: value})


def test_the_api_database_pool_and_its_admission_are_sized_by_settings() -> None:
    plain = Settings.from_env({})
    assert (plain.api_db_pool, plain.api_db_overflow, plain.api_db_wait_s) == (16, 4, 10.0)
    assert plain.api_db_pool >= plain.api_active, "every active request keeps its connection"
    assert (plain.api_active, plain.api_queue_s) == (16, 30.0)
    tuned = Settings.from_env(
        {
            "KODO_API_DB_POOL": "20",
            "KODO_API_DB_OVERFLOW": "0",
            "KODO_API_DB_WAIT_S": "2.5",
            "KODO_API_ACTIVE": "4",
            "KODO_API_QUEUE_S": "1",
        }
    )
    assert (tuned.api_db_pool, tuned.api_db_overflow, tuned.api_db_wait_s) == (20, 0, 2.5)
    assert (tuned.api_active, tuned.api_queue_s) == (4, 1.0)


def test_self_approval_is_refused_unless_the_operator_allows_it() -> None:
    assert Settings.from_env({}).allow_self_approval is False
    assert Settings.from_env({"KODO_ALLOW_SELF_APPROVAL": "1"}).allow_self_approval is True
    assert Settings.from_env({"KODO_ALLOW_SELF_APPROVAL": "off"}).allow_self_approval is False
    with pytest.raises(ConfigError, match="KODO_ALLOW_SELF_APPROVAL"):
        Settings.from_env({"KODO_ALLOW_SELF_APPROVAL": "maybe"})


def test_web_sessions_expire_after_a_positive_time() -> None:
    assert Settings.from_env({}).ui_session_ttl_s == 8 * 3600
    assert Settings.from_env({"KODO_UI_SESSION_TTL_S": "60"}).ui_session_ttl_s == 60
    with pytest.raises(ConfigError, match="KODO_UI_SESSION_TTL_S"):
        Settings.from_env({"KODO_UI_SESSION_TTL_S": "0"})


def test_the_sandbox_cgroup_mode_is_auto_unless_set() -> None:
    assert Settings.from_env({}).sandbox_cgroup == "auto"
    assert Settings.from_env({"KODO_SANDBOX_CGROUP": "Required"}).sandbox_cgroup == "required"
    assert Settings.from_env({"KODO_SANDBOX_CGROUP": "off"}).sandbox_cgroup == "off"


def test_the_product_holds_no_fault_injection_switch() -> None:
    """Chaos tests break workers from their own side (tests/chaos/faulty_worker.py)."""
    assert not [key for key in DEFAULTS if "FAULT" in key]
    assert not [name for name in vars(Settings.from_env({})) if "fault" in name]
    held = {"KODO_FAULT_PAUSE_BEFORE_APPLY_S": "4"}
    assert Settings.from_env(held) == Settings.from_env({}), "the old variable means nothing"
