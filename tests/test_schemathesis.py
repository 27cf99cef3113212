"""schemathesis against a running gateway (granian, on each database), from its own /openapi.json.

Per operation: positive and negative cases (seeded, a fixed number each), sent with the admin
key or a standard key, to random ids or to real ones (a thread, a tool, the standard key), and to
real models. Checks: no 5xx but the provider's own, every error in the route's shape, and the
response conforms to the document (status, content type, headers, body; invalid data refused).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jsonschema
import orjson
import pytest
import requests
import schemathesis
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Gateway, free_port
from tests.fuzzing import FAST_MODELS, FUZZ_SETTINGS, Findings, register_lookup_tool, response_problems
from tollway.http.openapi import OPERATIONS

EXAMPLES_PER_OPERATION = 30  # per database; about 25 s of requests on each
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@dataclass
class Api:
    gw: Gateway
    schema: Any
    keys: dict[str, str]  # "admin" / "standard" -> secret
    real_ids: dict[str, str]  # path parameter -> an id that exists
    session: requests.Session


@pytest.fixture(scope="module")
def api(fuzz_gateway: Gateway):
    gw = fuzz_gateway
    key_id, secret = gw.mint(max_spend_usd=1000)
    thread = gw.request("POST", "/v1/threads", secret, json={"metadata": {"k": "v"}})
    assert thread.status_code == 201, thread.text
    tool_id = register_lookup_tool(gw)
    response = gw.request("POST", "/v1/responses", secret, json={"model": "test-claude", "input": "hello"})
    assert response.status_code == 200, response.text
    # An event endpoint on a port nothing listens on (its deliveries fail at once), and a delivery of it.
    made = gw.request(
        "POST", "/v1/webhook-endpoints", gw.admin, json={"url": f"http://127.0.0.1:{free_port()}/x", "events": ["*"]}
    )
    assert made.status_code == 201, made.text
    sent = gw.request("POST", f"/v1/webhook-endpoints/{made.json()['id']}/test", gw.admin)
    assert sent.status_code == 202, sent.text
    job = gw.request("POST", "/v1/jobs", secret, json={"endpoint": "/v1/messages", "body": {
        "model": "test-claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}})  # fmt: skip
    assert job.status_code == 202, job.text
    message_batch = gw.request("POST", "/v1/messages/batches", secret, json={"requests": [{"custom_id": "a", "params": {
        "model": "test-claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}}]})  # fmt: skip
    assert message_batch.status_code == 200, message_batch.text
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {
        "model": "test-gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}}  # fmt: skip
    file = gw.request(
        "POST", "/v1/files", secret, files={"file": ("in.jsonl", orjson.dumps(line))}, data={"purpose": "batch"}
    )
    assert file.status_code == 200, file.text
    batch = gw.request("POST", "/v1/batches", secret, json={
        "input_file_id": file.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"})  # fmt: skip
    assert batch.status_code == 200, batch.text
    schema = schemathesis.openapi.from_url(gw.url + "/openapi.json", timeout=10)
    with requests.Session() as session:
        yield Api(
            gw, schema, {"admin": gw.admin, "standard": secret},
            {"key_id": key_id, "thread_id": thread.json()["id"], "tool_id": tool_id, "model_id": "org/test:gpt",
             "response_id": response.json()["id"], "endpoint_id": made.json()["id"],
             "delivery_id": sent.json()["delivery_id"], "job_id": job.json()["id"],
             "message_batch_id": message_batch.json()["id"], "batch_id": batch.json()["id"], "file_id": file.json()["id"]},
            session,
        )  # fmt: skip


def _strategy(api: Api, method: str, path: str):
    operation = api.schema[path][method]
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    return st.tuples(
        cases,
        st.sampled_from(["admin", "standard"]),
        st.booleans(),
        st.sampled_from([None, *FAST_MODELS, "test-embed"]),
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method,path", sorted(OPERATIONS), ids=[f"{m} {p}" for m, p in sorted(OPERATIONS)])
def test_operation(api: Api, method: str, path: str) -> None:
    findings = Findings()  # every distinct failure of the run, not only the first

    @settings(max_examples=EXAMPLES_PER_OPERATION, **FUZZ_SETTINGS)
    @given(_strategy(api, method, path))
    def run(drawn: tuple[Any, str, bool, Any]) -> None:
        case, who, real, model = drawn
        if real and method != "DELETE":  # deleting the shared thread, tool or key would end the run's coverage
            for name in case.path_parameters or {}:
                case.path_parameters[name] = api.real_ids[name]
        if model is not None and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = model
        # A case that negates the credentials goes without ours (it must get a 401); any other
        # gets our key, which takes precedence over whatever credentials were generated.
        negated_auth = api.schema.is_security_param_negated(case)
        headers = {} if negated_auth else {"authorization": f"Bearer {api.keys[who]}"}
        response = case.call(base_url=api.gw.url, session=api.session, headers=headers, timeout=30)
        findings.extend(response_problems(api.gw, method, case.formatted_path, response, case.body, path))
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                title = getattr(failure, "title", type(failure).__name__)
                findings.add(f"{title}: {method} {path} [{response.status_code}]", str(group)[:1500])

    run()
    findings.assert_none()


PATH_EDGES = ["\x00", "a\x00b", "x" * 5000, "\u00e9\U0001f600", "%", " "]  # (".." is resolved by the client)
INT_EDGES = [-1, 0, 2**53 + 1, 2**63, -(2**63) - 1, 10**30, "1e3", "\x00", ""]
STR_EDGES = ["\x00", "x" * 5000, "\u202e"]


def _edge_cases(operation: Any, real_ids: dict[str, str]) -> list[Any]:
    """Edge values for each path and query parameter in turn (the others left out, or real ids)."""
    raw = operation.definition.raw
    params = raw.get("parameters", [])
    path_names = [p["name"] for p in params if p["in"] == "path"]
    cases = []
    for p in params:
        edges = PATH_EDGES if p["in"] == "path" else INT_EDGES if p["schema"].get("type") == "integer" else STR_EDGES
        for value in edges:
            path_params = {name: real_ids[name] for name in path_names}
            query = {}
            if p["in"] == "path":
                path_params[p["name"]] = value
            else:
                query[p["name"]] = value
            body = {} if operation.method.upper() in ("POST", "PATCH") else NOT_SET
            case = operation.Case(
                path_parameters=path_params,
                query=query,
                body=body,
                media_type="application/json" if body == {} else None,
            )
            cases.append((case, p["name"], value, _valid(value, p["schema"])))
    return cases


def _valid(value: Any, schema: dict[str, Any]) -> bool:
    """Is the parameter's value, as it goes on the wire, valid for its schema?"""
    wire = str(value)
    if schema.get("type") == "integer":
        return re.fullmatch(r"-?[0-9]+", wire) is not None and jsonschema.Draft202012Validator(schema).is_valid(
            int(wire)
        )
    return wire == "" or jsonschema.Draft202012Validator(schema).is_valid(wire)


@pytest.mark.parametrize("method,path", sorted(OPERATIONS), ids=[f"{m} {p}" for m, p in sorted(OPERATIONS)])
def test_edge_parameters(api: Api, method: str, path: str) -> None:
    """NULs, overlong and odd strings in path parameters; out-of-range and non-integers in integer
    query parameters: never a 5xx of ours, errors in the route's shape, and a value outside the
    documented schema (a NUL, a limit out of range...) is a 4xx."""
    findings = Findings()
    operation = api.schema[path][method]
    headers = {"authorization": f"Bearer {api.gw.admin}"}
    for case, name, value, valid in _edge_cases(operation, api.real_ids):
        response = case.call(base_url=api.gw.url, session=api.session, headers=headers, timeout=30)
        findings.extend(
            response_problems(api.gw, method, case.formatted_path, response, (case.path_parameters, case.query), path)
        )
        if not valid and response.status_code < 400:  # (a 5xx is reported above)
            findings.add(
                f"out-of-schema {name} accepted: {method} {path} [{response.status_code}]",
                f"{name}={value!r:.60} is outside the documented schema, answered {response.status_code}: {response.content[:200]!r}",
            )
        try:
            case.validate_response(response, checks=CHECKS[:4], headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                title = getattr(failure, "title", type(failure).__name__)
                findings.add(f"{title}: {method} {path} [{response.status_code}]", str(group)[:1500])
    findings.assert_none()
