"""GET /openapi.json: a valid OpenAPI 3.1 document listing exactly the routes the gateway registers."""

from __future__ import annotations

from pathlib import Path

import httpx
import schemathesis
from openapi_spec_validator import OpenAPIV31SpecValidator

from tests.conftest import gateway_env
from tollway.config import load_settings
from tollway.gateway import Gateway
from tollway.http import limits
from tollway.http.openapi import OPERATIONS, document


def _registered(fake, tmp_path: Path) -> set[tuple[str, str]]:
    env = gateway_env(fake, tmp_path, f"sqlite:///{tmp_path / 'tollway.db'}")
    return set(Gateway(load_settings(env)).app.router.templates)


def test_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    errors = [e.message for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    assert errors == []
    schema = schemathesis.openapi.from_dict(doc)  # schemathesis loads every operation too
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert labels == {f"{m} {p}" for m, p in OPERATIONS}


def test_every_registered_route_is_described_and_nothing_else(fake, tmp_path: Path) -> None:
    routes = _registered(fake, tmp_path)
    described = {(method.upper(), path) for path, item in document()["paths"].items() for method in item}
    assert sorted(routes - described) == [], "routes without an OpenAPI entry (add them to http/openapi.py)"
    assert sorted(described - routes) == [], "OpenAPI entries without a route"


def test_limits_are_published() -> None:
    schemas = document()["components"]["schemas"]
    name = schemas["KeyCreate"]["properties"]["name"]
    assert name["maxLength"] == limits.MAX_NAME_CHARS
    assert schemas["ChatCompletionRequest"]["properties"]["max_tokens"]["maximum"] == limits.MAX_TOKENS_LIMIT
    assert schemas["MessagesRequest"]["properties"]["max_tokens"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 2**31 - 1,
    }
    spend = schemas["KeyCreate"]["properties"]["max_spend_usd"]["anyOf"][0]
    assert spend["maximum"] == limits.MAX_SPEND_USD
    metadata = schemas["ThreadCreate"]["properties"]["metadata"]["anyOf"][0]
    assert metadata["x-tollway-max-bytes"] == limits.MAX_METADATA_BYTES
    assert metadata["x-tollway-max-depth"] == limits.MAX_JSON_DEPTH
    usage = document()["paths"]["/v1/usage"]["get"]["parameters"]
    assert {p["name"]: p["schema"].get("maximum") for p in usage} == {
        "from_ms": 2**53,
        "to_ms": 2**53,
        "group_by": None,
    }
    rates = schemas["KeyCreate"]["properties"]["rate_limits"]["anyOf"][0]["properties"]
    assert rates["rpm"]["anyOf"][0]["maximum"] == 1_000_000 and rates["tpm"]["anyOf"][0]["maximum"] == 10**12


def test_model_bodies_pass_through_and_errors_have_the_route_shape() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    assert schemas["ChatCompletionRequest"]["additionalProperties"] is True
    assert schemas["MessagesRequest"]["additionalProperties"] is True
    assert schemas["KeyCreate"]["additionalProperties"] is False  # unknown fields are a 400
    messages = doc["paths"]["/v1/messages"]["post"]["responses"]
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert messages["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/AnthropicError"}
    assert chat["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OpenAIError"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if status[0] in "45":
                    want = "AnthropicError" if path.startswith("/v1/messages") else "OpenAIError"
                    assert response["content"]["application/json"]["schema"]["$ref"].endswith(want), (method, path)


def test_served_without_a_key(fuzz_gateway) -> None:
    r = httpx.get(fuzz_gateway.url + "/openapi.json", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == document()
    assert fuzz_gateway.request("GET", "/v1/keys").status_code == 401  # the rest still needs one
