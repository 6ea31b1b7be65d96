"""The OpenAPI spec: valid OpenAPI 3, and complete (every route with its methods).

Validation uses ``openapi-spec-validator`` (the OpenAPI 3 meta-schema) and checks that
every ``$ref`` resolves inside the document. The browser sign-in form and the docs
themselves are pages, not API operations, so they are the only routes left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

pytestmark = pytest.mark.integration

NOT_IN_SPEC = {
    "api-docs.openapi_json",
    "docs.docs_page",
    "docs.docs_asset",
    "ui_forms.login_page",  # the UI's HTML forms: a browser's, not an API client's
    "ui_forms.login",
    "ui_forms.logout",
    "ui_forms.approve",
    "ui_forms.reject",
    "ui_forms.request_changes_form",
    "ui_forms.answer_form",
    "ui_forms.budget_form",
}
IGNORED_METHODS = {"HEAD", "OPTIONS"}
METHODS = {"get", "post", "put", "patch", "delete"}

OPERATION = {
    "type": "object",
    "required": ["responses"],
    "properties": {
        "responses": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": r"^([1-5][0-9X]{2}|default)$"},
            "additionalProperties": {
                "type": "object",
                "anyOf": [{"required": ["$ref"]}, {"required": ["description"]}],
            },
        },
        "parameters": {
            "type": "array",
            "items": {
                "type": "object",
                "anyOf": [
                    {"required": ["$ref"]},
                    {
                        "required": ["name", "in"],
                        "properties": {"in": {"enum": ["path", "query", "header", "cookie"]}},
                    },
                ],
            },
        },
    },
}


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(spec: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"external $ref {ref}"
    node: Any = spec
    for part in ref[2:].split("/"):
        assert isinstance(node, dict), f"$ref {ref} goes through a non-object"
        assert part in node, f"dangling $ref {ref}"
        node = node[part]
    return node


@pytest.fixture
def spec(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    return body


def test_the_spec_is_valid_openapi_3(spec: dict[str, Any]) -> None:
    validate(spec)  # openapi-spec-validator: the full OpenAPI 3 meta-schema
    for ref in refs(spec):
        resolve(spec, ref)


def test_every_route_of_the_app_is_in_the_spec_with_its_methods(
    app: Flask, spec: dict[str, Any]
) -> None:
    documented = {
        path: {m.upper() for m in item if m in {"get", "post", "put", "patch", "delete"}}
        for path, item in spec["paths"].items()
    }
    for rule in app.url_map.iter_rules():
        if rule.endpoint in NOT_IN_SPEC:
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        path = "/".join(
            "{" + part.split(":")[-1] if part.startswith("{") else part for part in path.split("/")
        )
        methods = set(rule.methods or ()) - IGNORED_METHODS
        assert path in documented, f"{rule.rule} is not documented"
        assert methods <= documented[path], f"{rule.rule}: {methods} vs {documented[path]}"


def test_path_parameters_are_declared_for_every_operation(spec: dict[str, Any]) -> None:
    for path, item in spec["paths"].items():
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        shared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        for method, op in item.items():
            if method == "parameters":
                continue
            own = {p["name"] for p in op.get("parameters", []) if p.get("in") == "path"}
            assert names == shared | own, f"{method.upper()} {path}"


def test_errors_are_documented_in_kodos_error_shape(spec: dict[str, Any]) -> None:
    error = spec["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"error"}
    body = resolve(spec, error["properties"]["error"]["$ref"])
    assert set(body["properties"]) == {"code", "message", "details"}
    create = spec["paths"]["/intents"]["post"]
    assert create["responses"]["415"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert create["requestBody"]["required"] is True
    approve = spec["paths"]["/runs/{run_id}/approve-plan"]["post"]
    assert approve["requestBody"]["required"] is True, "an approval names the plan's digest"
    reject = spec["paths"]["/runs/{run_id}/reject-plan"]["post"]
    assert reject["requestBody"]["required"] is False


def test_flask_smorest_does_not_replace_kodos_error_handler(client: FlaskClient) -> None:
    response = client.get("/nowhere")

    assert response.status_code == 404
    assert set(response.get_json()) == {"error"}
    assert response.get_json()["error"]["code"] == "not_found"


def test_the_docs_page_is_swagger_ui_from_kodos_own_assets(anonymous: FlaskClient) -> None:
    response = anonymous.get("/docs")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources, page
    assert all(src.startswith("/docs/assets/") or src == "/openapi.json" for src in sources)
    assert "http://" not in page  # nothing from elsewhere
    assert "https://" not in page
    for src in sources:
        if src.startswith("/docs/assets/"):
            with anonymous.get(src) as asset:
                assert asset.status_code == 200, src
                assert asset.mimetype in {"text/css", "text/javascript"}
                assert len(asset.get_data()) > 100


def test_the_docs_assets_serve_only_their_own_files(anonymous: FlaskClient) -> None:
    for name in ("index.html", "..%2fopenapi.py", "swagger-ui.js.map", "docs.html"):
        with anonymous.get(f"/docs/assets/{name}") as response:
            assert response.status_code == 404, name


def test_the_spec_and_its_viewer_are_public(anonymous: FlaskClient) -> None:
    assert anonymous.get("/openapi.json").status_code == 200
    assert anonymous.get("/docs").status_code == 200
    assert anonymous.get("/runs").status_code == 401  # the data is not


def test_every_operation_has_a_unique_operation_id(spec: dict[str, Any]) -> None:
    ids = [
        op.get("operationId")
        for item in spec["paths"].values()
        for method, op in item.items()
        if method in METHODS
    ]
    assert all(isinstance(i, str) and re.fullmatch(r"[a-z][A-Za-z0-9]*", i) for i in ids), ids
    assert len(ids) == len(set(ids))
    assert {"createIntent", "listRuns", "readRun", "approvePlan", "streamRunEvents"} <= set(ids)


def test_public_operations_say_so_and_only_they(
    app: Flask, spec: dict[str, Any], anonymous: FlaskClient
) -> None:
    public = {
        (path, method)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS and op.get("security") == []
    }
    assert public == {("/healthz", "get")}
    # and what the spec calls public answers without a token; what it doesn't, refuses
    assert anonymous.get("/healthz").status_code in {200, 503}
    assert anonymous.get("/metrics").status_code == 401


def test_the_spec_declares_bearer_authentication_for_every_operation(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert spec["security"] == [{"bearer": []}]


def test_the_submit_documents_its_idempotency_key(spec: dict[str, Any]) -> None:
    submit = spec["paths"]["/intents"]["post"]
    [header] = [p for p in submit.get("parameters", []) if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key"
    assert not header["required"]
    assert "409" in submit["responses"]
