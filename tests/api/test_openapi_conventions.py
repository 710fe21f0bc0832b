"""Every service's OpenAPI document keeps the conventions a client generator relies on: stable, named
operation ids; a declared security on every operation (none for a public one), consistent with the
401/403 the operation documents; an example for every request and response body."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest

from cdap_shared.services import SERVICES
from cdap_testing import protected_operations

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


@pytest.fixture(scope="module", params=[s.name for s in SERVICES])
def document(request: pytest.FixtureRequest) -> dict[str, Any]:
    service = next(s for s in SERVICES if s.name == request.param)
    return importlib.import_module(f"{service.package}.app").build().openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def schema_examples(document: dict[str, Any], schema: dict[str, Any]) -> list[Any]:
    """The examples of a body's schema, through `$ref` and an optional body's `anyOf` [model, null]."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        return schema_examples(document, document["components"]["schemas"][name])
    found = list(schema.get("examples", []))
    for branch in schema.get("anyOf", []):
        found += schema_examples(document, branch)
    if schema.get("type") == "array" and "items" in schema:  # a list of models: [their example]
        found += [[example] for example in schema_examples(document, schema["items"])]
    return found


def body_examples(document: dict[str, Any], content: dict[str, Any]) -> list[Any]:
    """The examples of one media type of a body: its own, or its schema's."""
    own = content.get("examples") or ([content["example"]] if "example" in content else [])
    return list(own) or schema_examples(document, content.get("schema", {}))


def test_operation_ids_are_unique_and_named_not_generated(document: dict[str, Any]) -> None:
    ids = [operation.get("operationId", "") for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for method, path, operation in operations(document):
        op_id = operation.get("operationId", "")
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", op_id), (method, path, op_id)
        # FastAPI's default spells the path and the method out: `suspend_v1_users__user_id__suspend_post`.
        assert not op_id.endswith(f"_{method}") and "v1_" not in op_id, (method, path, op_id)


def test_every_operation_declares_its_security(document: dict[str, Any]) -> None:
    schemes = document.get("components", {}).get("securitySchemes", {})
    protected = set(protected_operations(document))
    for method, path, operation in operations(document):
        assert "security" in operation, (method, path)
        for requirement in operation["security"]:
            assert set(requirement) <= set(schemes), (method, path, requirement)
        if path.startswith("/v1/"):
            # A bearer token is declared exactly where a 401 and a 403 are documented.
            assert bool(operation["security"]) == ((method.upper(), path) in protected), (method, path)
    if protected:
        flows = schemes["oauth2"]["flows"]
        assert {"password", "clientCredentials"} <= set(flows)
        assert all(flow["tokenUrl"].endswith("/v1/token") for flow in flows.values())


def test_the_public_operations_declare_no_security(document: dict[str, Any]) -> None:
    public = {(m, p) for m, p, o in operations(document) if o["security"] == []}
    assert ("get", "/health") in public and ("get", "/ready") in public
    if document["info"]["title"] == "CDAP identity":
        assert {("post", "/v1/token"), ("get", "/.well-known/jwks.json")} <= public


def test_every_request_body_has_an_example(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for media_type, content in operation.get("requestBody", {}).get("content", {}).items():
            assert body_examples(document, content), f"{method.upper()} {path} ({media_type}) has no example"


def test_every_response_body_has_an_example(document: dict[str, Any]) -> None:
    """Every documented response with a JSON body (problem+json included) shows what it looks like."""
    missing = [
        f"{method.upper()} {path} {status} ({media_type})"
        for method, path, operation in operations(document)
        for status, response in operation.get("responses", {}).items()
        for media_type, content in response.get("content", {}).items()
        if "json" in media_type and content.get("schema") and not body_examples(document, content)
    ]
    assert not missing, "no example:\n" + "\n".join(missing)


def test_the_example_check_sees_a_body_without_one() -> None:
    """The check above can fail: a response model without examples, alone or in a list, has none."""
    bare = {"components": {"schemas": {"Thing": {"type": "object"}}}}
    assert body_examples(bare, {"schema": {"$ref": "#/components/schemas/Thing"}}) == []
    listed = {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Thing"}}}
    assert body_examples(bare, listed) == []
    bare["components"]["schemas"]["Thing"]["examples"] = [{"id": 1}]
    assert body_examples(bare, listed) == [[{"id": 1}]]
