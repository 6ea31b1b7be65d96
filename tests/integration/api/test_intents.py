"""Submitting and reading intents: good input is stored, bad input is a 4xx, never a 500."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.db.models import Intent

from .conftest import MAX_BODY, make_git_repo

pytestmark = pytest.mark.integration


def intent_count(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(Intent)) or 0


def test_a_valid_intent_is_created_and_stored(
    client: FlaskClient, git_repo: Path, db: Session
) -> None:
    response = client.post(
        "/intents", json={"repo": str(git_repo), "goal": "Add a docstring", "submitted_by": "ann"}
    )

    assert response.status_code == 201
    body = response.get_json()
    assert body["repo"] == str(git_repo)
    assert body["goal"] == "Add a docstring"
    assert body["baseRef"] == "HEAD"
    assert body["submittedBy"] == "ann"
    assert (
        body["baseCommit"]
        == subprocess.run(
            ["git", "-C", str(git_repo), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    )
    assert body["createdAt"]
    stored = db.get(Intent, body["intentId"])
    assert stored is not None
    assert (stored.repo_path, stored.submitted_by) == (str(git_repo), "ann")


def test_a_stored_intent_can_be_read_back(client: FlaskClient, git_repo: Path) -> None:
    created = client.post("/intents", json={"repo": str(git_repo), "goal": "g"}).get_json()

    response = client.get(f"/intents/{created['intentId']}")

    assert response.status_code == 200
    assert response.get_json() == created


def test_an_unknown_intent_is_a_json_404(client: FlaskClient) -> None:
    response = client.get("/intents/00000000-0000-0000-0000-000000000000")

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_malformed_json_is_a_400(client: FlaskClient) -> None:
    response = client.post("/intents", data=b'{"goal": ', content_type="application/json")

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "malformed_json"


@pytest.mark.parametrize("raw", [b"\xff\xfe{}", b"[" * 5000, b"{} {}"])
def test_undecodable_or_absurdly_nested_json_is_a_400(client: FlaskClient, raw: bytes) -> None:
    response = client.post("/intents", data=raw, content_type="application/json")

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "malformed_json"


def test_a_body_that_is_not_an_object_is_a_400(client: FlaskClient) -> None:
    response = client.post("/intents", json=["goal"])

    assert response.status_code == 400
    assert "_schema" in response.get_json()["error"]["details"]


def test_a_missing_goal_is_a_400_naming_the_field(client: FlaskClient, git_repo: Path) -> None:
    response = client.post("/intents", json={"repo": str(git_repo)})

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input"
    assert list(error["details"]) == ["goal"]


def test_an_unknown_field_is_a_400(client: FlaskClient, git_repo: Path) -> None:
    response = client.post("/intents", json={"repo": str(git_repo), "goal": "g", "extra": 1})

    assert response.status_code == 400
    assert "extra" in response.get_json()["error"]["details"]


def test_wrong_types_are_400s_listing_each_field(client: FlaskClient) -> None:
    response = client.post("/intents", json={"repo": 7, "goal": ["g"], "base_ref": None})

    assert response.status_code == 400
    assert set(response.get_json()["error"]["details"]) == {"repo", "goal", "baseRef"}


@pytest.mark.parametrize(
    "goal", ["", "   ", "x" * 4001, "nul \x00 inside", "lone \ud800 surrogate"]
)
def test_an_unusable_goal_is_a_400(
    client: FlaskClient, git_repo: Path, db: Session, goal: str
) -> None:
    response = client.post("/intents", json={"repo": str(git_repo), "goal": goal})

    assert response.status_code == 400
    assert "goal" in response.get_json()["error"]["details"]
    assert intent_count(db) == 0


@pytest.mark.parametrize("base_ref", ["--output=/tmp/x", "two words", "nope-no-such-ref"])
def test_a_bad_or_unknown_base_ref_is_a_400(
    client: FlaskClient, git_repo: Path, base_ref: str
) -> None:
    response = client.post(
        "/intents", json={"repo": str(git_repo), "goal": "g", "base_ref": base_ref}
    )

    assert response.status_code == 400
    assert "baseRef" in response.get_json()["error"]["details"]


def test_a_body_over_the_limit_is_a_413(client: FlaskClient, git_repo: Path) -> None:
    response = client.post("/intents", json={"repo": str(git_repo), "goal": "g" * MAX_BODY})

    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "request_entity_too_large"


def test_a_non_json_content_type_is_a_415(client: FlaskClient) -> None:
    response = client.post("/intents", data="goal=g", content_type="text/plain")

    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"


def test_a_missing_content_type_is_a_415(client: FlaskClient) -> None:
    response = client.post("/intents", data=b'{"goal": "g"}')

    assert response.status_code == 415


def test_a_repo_outside_the_roots_is_a_422_and_nothing_is_written(
    client: FlaskClient, tmp_path: Path, db: Session
) -> None:
    outside = make_git_repo(tmp_path / "elsewhere")

    response = client.post("/intents", json={"repo": str(outside), "goal": "g"})

    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "repo_not_allowed"
    assert intent_count(db) == 0


def test_a_directory_that_is_not_a_git_repo_is_a_400(client: FlaskClient, repo_root: Path) -> None:
    (repo_root / "plain").mkdir()

    response = client.post("/intents", json={"repo": str(repo_root / "plain"), "goal": "g"})

    assert response.status_code == 400
    assert "repo" in response.get_json()["error"]["details"]


@pytest.mark.parametrize("repo", ["relative/path", "/x/" + "a" * 300])
def test_a_relative_or_impossible_repo_path_is_a_4xx(
    client: FlaskClient, repo_root: Path, repo: str
) -> None:
    path = repo if repo.startswith("relative") else str(repo_root) + repo

    response = client.post("/intents", json={"repo": path, "goal": "g"})

    assert response.status_code == 400
    assert "repo" in response.get_json()["error"]["details"]


def test_get_on_a_post_only_route_is_a_json_405(client: FlaskClient) -> None:
    response = client.get("/intents/some-intent/run")

    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_an_unknown_route_is_a_json_404(client: FlaskClient) -> None:
    response = client.get("/nowhere")

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_a_malformed_policy_at_the_trusted_ref_refuses_the_intent_with_a_422(
    client: FlaskClient, git_repo: Path, db: Session
) -> None:
    (git_repo / ".kodo").mkdir()
    (git_repo / ".kodo" / "policy.toml").write_text("[policy]\nmax_files = 0\n")
    git = ["git", "-C", str(git_repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a broken policy"], check=True)
    branch = subprocess.run(
        [*git, "symbolic-ref", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()

    response = client.post("/intents", json={"repo": str(git_repo), "goal": "g"})

    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid_policy"
    assert f".kodo/policy.toml at {branch} (" in error["message"]
    assert "max_files" in error["message"]
    assert intent_count(db) == 0


def test_request_keys_are_camel_case_and_the_first_release_snake_case_is_still_read(
    client: FlaskClient, git_repo: Path
) -> None:
    camel = client.post(
        "/intents",
        json={"repo": str(git_repo), "goal": "camel", "baseRef": "HEAD", "budgetUsd": 2.5},
    )
    snake = client.post(
        "/intents",
        json={"repo": str(git_repo), "goal": "snake", "base_ref": "HEAD", "budget_tokens": 9},
    )

    assert (camel.status_code, snake.status_code) == (201, 201)
    assert camel.get_json()["baseRef"] == snake.get_json()["baseRef"] == "HEAD"


def test_a_body_naming_a_key_in_both_styles_is_refused_not_resolved(
    client: FlaskClient, git_repo: Path
) -> None:
    response = client.post(
        "/intents",
        json={"repo": str(git_repo), "goal": "g", "baseRef": "HEAD", "base_ref": "main"},
    )

    assert response.status_code == 400
    details = response.get_json()["error"]["details"]
    assert details == {"base_ref": ["give baseRef or base_ref (deprecated), not both"]}
