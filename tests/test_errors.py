"""Bad input and upstream failures: clear errors in each route's shape, retries, request ids."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.conftest import Gateway, fake_requests

ROUTES = {
    "openai": (
        "/v1/chat/completions",
        lambda model, text, **kw: {"model": model, "messages": [{"role": "user", "content": text}], **kw},
    ),
    "anthropic": (
        "/v1/messages",
        lambda model, text, **kw: {
            "model": model,
            "max_tokens": kw.pop("max_tokens", 50),
            "messages": [{"role": "user", "content": text}],
            **kw,
        },
    ),
}
MODELS = {"openai": "test-gpt", "anthropic": "test-claude"}


def assert_shape(route: str, r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["x-request-id"].startswith("req_")
    body = r.json()
    if route == "anthropic":
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
        return body["error"]["message"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]["message"]


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_malformed_json_is_400(gateway: Gateway, user, route) -> None:
    path, _ = ROUTES[route]
    r = gateway.request(
        "POST", path, user[1], content=b'{"model": "test-gpt", ', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in assert_shape(route, r, 400)
    r = gateway.request("POST", path, user[1], json=[1, 2])
    assert_shape(route, r, 400)
    r = gateway.request("POST", path, user[1], json={"messages": []})
    assert "'model' is required" in assert_shape(route, r, 400)
    r = gateway.request("POST", path, user[1], json=ROUTES[route][1](MODELS[route], "x", max_tokens=-3))
    assert "max_tokens" in assert_shape(route, r, 400)


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_unknown_model_404_and_unpriced_400(gateway: Gateway, user, route) -> None:
    path, body = ROUTES[route]
    assert "does not exist" in assert_shape(
        route, gateway.request("POST", path, user[1], json=body("gpt-imaginary", "x")), 404
    )
    if route == "openai":
        assert "no price" in assert_shape(
            route, gateway.request("POST", path, user[1], json=body("unpriced-gpt", "x")), 400
        )


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_body_over_the_limit_is_413(gateway: Gateway, user, route) -> None:
    path, body = ROUTES[route]
    big = body(MODELS[route], "x" * (3 * 1024 * 1024))  # the test gateway's limit is 2 MB
    r = gateway.request("POST", path, user[1], json=big)
    assert "larger than the limit" in assert_shape(route, r, 413)


def test_upstream_unreachable_is_502(gateway: Gateway, user) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    r = gateway.request("POST", "/v1/chat/completions", secret, json=ROUTES["openai"][1]("dead-gpt", "x"))
    assert "unreachable" in assert_shape("openai", r, 502)
    assert gateway.wait_settled(key_id)["reserved_micros"] == 0


@pytest.mark.parametrize("route", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_timeout_is_504(gateway: Gateway, route, stream) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    path, body = ROUTES[route]
    r = gateway.request(
        "POST", path, secret, json=body(MODELS[route], "x #hang", stream=stream)
    )  # first-byte timeout: 3 s
    assert "timed out" in assert_shape(route, r, 504)
    info = gateway.wait_settled(key_id)
    assert info["reserved_micros"] == 0 and info["spent_micros"] == 0


@pytest.mark.parametrize("route", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_pass_through_with_status_and_body(gateway: Gateway, fake, route, stream) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    path, body = ROUTES[route]
    direct_headers = (
        {"authorization": "Bearer sk-fake-openai"}
        if route == "openai"
        else {"x-api-key": "sk-ant-fake", "anthropic-version": "2023-06-01"}
    )
    direct = httpx.post(fake.url + path, json=body("m", "x #status=400"), headers=direct_headers)
    r = gateway.request("POST", path, secret, json=body(MODELS[route], "x #status=400", stream=stream))
    assert r.status_code == 400
    assert r.json() == direct.json()
    info = gateway.wait_settled(key_id)
    assert info["reserved_micros"] == 0 and info["spent_micros"] == 0
    assert gateway.key_usage(key_id)["events"][0]["status"] == 400


@pytest.mark.parametrize("route", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
def test_5xx_and_429_are_retried_before_any_byte(gateway: Gateway, fake, user, route, stream) -> None:
    path, body = ROUTES[route]
    tag = uuid.uuid4().hex[:8]
    r = gateway.request(
        "POST", path, user[1], json=body(MODELS[route], f"x #fail=2 #id={tag} #status=503 #words=2", stream=stream)
    )
    assert r.status_code == 200, r.text
    tries = [q for q in fake_requests(fake) if q["path"] == path and f"#id={tag}" in str(q["body"])]
    assert len(tries) == 3
    tag = uuid.uuid4().hex[:8]
    r = gateway.request(
        "POST",
        path,
        user[1],
        json=body(MODELS[route], f"x #fail=3 #id={tag} #status=429 #retry_after=0", stream=stream),
    )
    assert r.status_code == 429  # two retries, then the provider's answer
    assert len([q for q in fake_requests(fake) if f"#id={tag}" in str(q["body"])]) == 3


def test_retry_after_is_honoured(gateway: Gateway, fake, user) -> None:
    tag = uuid.uuid4().hex[:8]
    started = time.monotonic()
    r = gateway.request(
        "POST",
        "/v1/chat/completions",
        user[1],
        json=ROUTES["openai"][1]("test-gpt", f"x #fail=1 #id={tag} #status=429 #retry_after=1"),
    )
    assert r.status_code == 200
    tries = [q for q in fake_requests(fake) if f"#id={tag}" in str(q["body"])]
    assert len(tries) == 2 and tries[1]["t"] - tries[0]["t"] >= 0.95
    assert time.monotonic() - started >= 1.0


def test_every_response_has_a_request_id(gateway: Gateway, user) -> None:
    for method, path in [("GET", "/v1/models"), ("GET", "/v1/nope"), ("POST", "/v1/keys")]:
        r = gateway.request(method, path, user[1])
        assert r.headers["x-request-id"].startswith("req_"), (method, path)
    r = gateway.request("PUT", "/v1/models", user[1])
    assert r.status_code == 405
