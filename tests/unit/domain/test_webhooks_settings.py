"""Webhook settings: read from the environment only, refused at start when unusable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import ConfigError, Settings

SECRET = "0123456789abcdef"  # noqa: S105 - a test key


def test_no_webhook_is_the_default() -> None:
    settings = Settings.from_env({})
    assert settings.webhook is None
    assert settings.repository_webhooks == ()


def test_the_global_webhook_and_per_repository_ones_are_read(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    settings = Settings.from_env(
        {
            "KODO_WEBHOOK_URL": "https://hooks.example/kodo",
            "KODO_WEBHOOK_SECRET": SECRET,
            "KODO_WEBHOOKS": json.dumps(
                {f"{tmp_path}/./repo": {"url": "http://127.0.0.1:8080/r", "secret": SECRET}}
            ),
            "KODO_WEBHOOK_MAX_ATTEMPTS": "3",
        }
    )
    assert settings.webhook is not None
    assert (settings.webhook.url, settings.webhook.label) == (
        "https://hooks.example/kodo",
        "global",
    )
    [(path, hook)] = settings.repository_webhooks
    assert path == str(repo.resolve()), "keyed by the real path intents record"
    assert hook.label == "repository"
    assert settings.webhook_max_attempts == 3
    assert SECRET not in repr(settings)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"KODO_WEBHOOK_URL": "https://hooks.example/kodo"}, "secret of at least 16"),
        ({"KODO_WEBHOOK_URL": "file:///etc/passwd", "KODO_WEBHOOK_SECRET": SECRET}, "http"),
        ({"KODO_WEBHOOKS": "not json"}, "KODO_WEBHOOKS is not JSON"),
        ({"KODO_WEBHOOK_MAX_ATTEMPTS": "0"}, "KODO_WEBHOOK_MAX_ATTEMPTS must be positive"),
        ({"KODO_WEBHOOK_TIMEOUT_S": "0"}, "KODO_WEBHOOK_TIMEOUT_S must be positive"),
    ],
)
def test_an_unusable_webhook_setting_stops_the_start(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Settings.from_env(env)
