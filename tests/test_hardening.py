"""Bad input answered with a 400 in the route's shape, never a 500 and never a half-written row.

One test per item found by trying the gateway as an attacker would; each would
have answered 500 before the fix (most on both databases, the NUL ones on
PostgreSQL), and several stored a row that then broke every read.
"""

from __future__ import annotations

import secrets
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import orjson
import pytest

from tests.conftest import Gateway, fake_requests, gateway_env, start_gateway, stop_gateway
from tests.test_errors import ROUTES, assert_shape
from tollway.http.limits import MAX_JSON_DEPTH, MAX_METADATA_BYTES, MAX_TOKENS_LIMIT

MODELS = {"openai": "test-gpt", "anthropic": "test-claude"}


def nested(levels: int, leaf: Any = 1) -> Any:
    """An object nested ``levels`` deep: {"a": {"a": ... leaf}}."""
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


def reads_all_work(gw: Gateway, key: str | None = None) -> None:
    """Every list and read route answers 200 (a poisoned row would make one of them fail)."""
    key = key or gw.admin
    for path in ("/v1/threads", "/v1/tools"):
        r = gw.request("GET", path, key)
        assert r.status_code == 200, (path, r.text)
    if key == gw.admin:
        for path in ("/v1/keys", "/v1/usage"):
            r = gw.request("GET", path, key)
            assert r.status_code == 200, (path, r.text)
        for key_id in all_ids(gw, "/v1/keys", 500):
            assert gw.request("GET", f"/v1/keys/{key_id}", key).status_code == 200
    for item in gw.request("GET", "/v1/threads?limit=100", key).json()["data"]:  # the newest
        for suffix in ("", "/messages", "/export"):
            r = gw.request("GET", f"/v1/threads/{item['id']}{suffix}", key)
            assert r.status_code == 200, (suffix, r.text)


def all_ids(gw: Gateway, path: str, limit: int) -> set[str]:
    """Every id of a cursor-paged list."""
    ids: set[str] = set()
    after = ""
    while True:
        page = gw.request("GET", f"{path}?limit={limit}{after}", gw.admin).json()
        ids.update(item["id"] for item in page["data"])
        if not page["has_more"]:
            return ids
        after = f"&after={page['last_id']}"


# ---------------------------------------------------------------- 1. nesting depth
def test_deep_metadata_is_refused_and_nothing_is_stored(gateway: Gateway, user) -> None:
    deep = nested(300)
    threads_before = all_ids(gateway, "/v1/threads", 100)
    r = gateway.request("POST", "/v1/threads", user[1], json={"metadata": deep})
    assert "nests" in assert_shape("openai", r, 400)
    assert all_ids(gateway, "/v1/threads", 100) == threads_before

    keys_before = all_ids(gateway, "/v1/keys", 500)
    r = gateway.request("POST", "/v1/keys", gateway.admin, json={"name": "deep", "metadata": deep})
    assert_shape("openai", r, 400)
    assert all_ids(gateway, "/v1/keys", 500) == keys_before

    thread = gateway.request("POST", "/v1/threads", user[1], json={}).json()
    r = gateway.request("PATCH", f"/v1/threads/{thread['id']}", user[1], json={"metadata": deep})
    assert_shape("openai", r, 400)
    assert gateway.request("GET", f"/v1/threads/{thread['id']}", user[1]).json()["metadata"] == {}
    reads_all_work(gateway)
    reads_all_work(gateway, user[1])


def test_metadata_at_the_depth_limit_is_stored_and_read_back(gateway: Gateway, user) -> None:
    # The body itself is one level, so metadata may nest MAX_JSON_DEPTH - 1 more.
    deepest = nested(MAX_JSON_DEPTH - 2, leaf={})
    r = gateway.request("POST", "/v1/threads", user[1], json={"metadata": deepest})
    assert r.status_code == 201, r.text
    thread_id = r.json()["id"]
    assert gateway.request("GET", f"/v1/threads/{thread_id}", user[1]).json()["metadata"] == deepest
    key_id, _ = gateway.mint(metadata=deepest)
    assert gateway.key(key_id)["metadata"] == deepest
    r = gateway.request("POST", "/v1/threads", user[1], json={"metadata": nested(MAX_JSON_DEPTH - 1, leaf={})})
    assert_shape("openai", r, 400)
    reads_all_work(gateway)
    reads_all_work(gateway, user[1])


def test_metadata_size_is_bounded(gateway: Gateway, user) -> None:
    r = gateway.request("POST", "/v1/threads", user[1], json={"metadata": {"a": "x" * MAX_METADATA_BYTES}})
    assert "metadata" in assert_shape("openai", r, 400)
    r = gateway.request("POST", "/v1/threads", user[1], json={"metadata": {"a": "x" * (MAX_METADATA_BYTES - 100)}})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_deep_model_request_is_400_in_the_route_shape(gateway: Gateway, fake, user, route) -> None:
    path, body = ROUTES[route]
    sent_before = len(fake_requests(fake))
    r = gateway.request("POST", path, user[1], json=body(MODELS[route], "hi", metadata=nested(300)))
    assert "nests" in assert_shape(route, r, 400)
    r = gateway.request(
        "POST",
        f"/v1/threads/{_thread(gateway, user)}/messages",
        user[1],
        json={"model": "test-claude", "content": [{"type": "text", "text": "x", "extra": nested(300)}]},
    )
    assert_shape("openai", r, 400)
    assert len(fake_requests(fake)) == sent_before
    assert gateway.wait_settled(user[0])["reserved_micros"] == 0


def _thread(gw: Gateway, user) -> str:
    r = gw.request("POST", "/v1/threads", user[1], json={})
    assert r.status_code == 201, r.text
    return r.json()["id"]


# ---------------------------------------------------------------- 2. integer ranges
@pytest.mark.parametrize("route", ["openai", "anthropic"])
@pytest.mark.parametrize("value", [14757395258967642, MAX_TOKENS_LIMIT + 1, 2**64, 0, 1.5, "10"])
def test_max_tokens_out_of_range_is_400(gateway: Gateway, user, route, value) -> None:
    path, body = ROUTES[route]
    r = gateway.request("POST", path, user[1], json=body(MODELS[route], "hi", max_tokens=value))
    assert "max_tokens" in assert_shape(route, r, 400)
    r = gateway.request(
        "POST",
        f"/v1/threads/{_thread(gateway, user)}/messages",
        user[1],
        json={"model": MODELS[route], "content": "hi", "max_tokens": value},
    )
    assert "max_tokens" in assert_shape("openai", r, 400)
    assert gateway.key(user[0])["reserved_micros"] == 0


def test_max_tokens_at_the_limit_is_clamped_not_refused(gateway: Gateway, user) -> None:
    path, body = ROUTES["openai"]
    r = gateway.request("POST", path, user[1], json=body("test-gpt", "hi", max_tokens=MAX_TOKENS_LIMIT))
    assert r.status_code == 200, r.text
    assert int(r.headers["x-tollway-max-tokens-clamped"]) < MAX_TOKENS_LIMIT


@pytest.mark.parametrize(
    "query",
    [
        "from_ms=0&to_ms=9223372036854775808",
        "from_ms=-1",
        "to_ms=99999999999999999999",
        "from_ms=abc",
        f"to_ms={2**53 + 1}",
        "from_ms=",
        "to_ms=",
    ],
)
def test_usage_window_out_of_range_is_400(gateway: Gateway, query) -> None:
    r = gateway.request("GET", f"/v1/usage?{query}", gateway.admin)
    assert_shape("openai", r, 400)


# ---------------------------------------------------------------- 3. wrong types next to tool_ids
@pytest.mark.parametrize("route", ["openai", "anthropic"])
@pytest.mark.parametrize("tools", [1, "x", {"a": 1}, [1], [None]])
def test_tools_of_the_wrong_type_with_tool_ids_is_400(gateway: Gateway, user, route, tools) -> None:
    path, body = ROUTES[route]
    r = gateway.request("POST", path, user[1], json=body(MODELS[route], "hi", tools=tools, tool_ids=["tool_x"]))
    assert "tools" in assert_shape(route, r, 400)
    r = gateway.request(
        "POST",
        f"/v1/threads/{_thread(gateway, user)}/messages",
        user[1],
        json={"model": MODELS[route], "content": "hi", "tools": tools, "tool_ids": ["tool_x"]},
    )
    assert "tools" in assert_shape("openai", r, 400)


# ---------------------------------------------------------------- 5. tool schemas
def _tool(name: str, schema: dict) -> dict:
    return {
        "name": f"{name}_{secrets.token_hex(4)}",
        "description": "d",
        "input_schema": schema,
        "webhook_url": "http://127.0.0.1:9/hook",
    }


def test_deep_tool_schema_is_400_and_one_at_the_limit_is_kept(gateway: Gateway) -> None:
    def schema(levels: int) -> dict:
        inner: dict = {"type": "object"}
        for _ in range(levels):
            inner = {"type": "object", "properties": {"a": inner}}
        return inner

    r = gateway.request("POST", "/v1/tools", gateway.admin, json=_tool("deep100", schema(100)))
    assert_shape("openai", r, 400)
    # {"input_schema": S}: S may nest MAX_JSON_DEPTH - 1 levels; each schema level is two JSON levels.
    r = gateway.request("POST", "/v1/tools", gateway.admin, json=_tool("deep_ok", schema((MAX_JSON_DEPTH - 2) // 2)))
    assert r.status_code == 201, r.text
    assert gateway.request("GET", f"/v1/tools/{r.json()['id']}", gateway.admin).status_code == 200
    reads_all_work(gateway)


# ---------------------------------------------------------------- 6. malformed HTTP framing
def send_bad_chunk(gw: Gateway) -> bytes:
    parts = urlsplit(gw.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + gw.admin.encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
        )
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def test_malformed_chunked_body_is_400_json(gateway: Gateway) -> None:
    if gateway.server == "robyn":
        pytest.skip("Robyn 0.88 panics on a malformed chunk (test_robyn_survives_its_own_panic)")
    data = send_bad_chunk(gateway)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), data
    assert b"application/json" in head.lower() and b"connection: close" in head.lower()
    assert b'"invalid_request_error"' in body
    assert "could not read a request body" in gateway.log()


def test_robyn_survives_its_own_panic(fake, fresh_database, tmp_data_dir) -> None:
    """Robyn 0.88 aborts on a malformed chunk; its supervisor starts it again, with the usage kept."""
    gw = start_gateway(gateway_env(fake, tmp_data_dir, fresh_database), server="robyn")
    try:
        key_id, secret = gw.mint(max_spend_usd=1)
        path, body = ROUTES["openai"]
        assert gw.request("POST", path, secret, json=body("test-gpt", "hi", max_tokens=5)).status_code == 200
        spent = gw.key_usage(key_id)["total_cost_micros"]
        assert spent > 0
        assert send_bad_chunk(gw) == b""  # the process is gone: no answer
        deadline = time.monotonic() + 20
        while True:
            try:
                if gw.request("GET", "/v1/models", secret).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, gw.log()
            time.sleep(0.1)
        assert gw.proc.poll() is None  # the same supervisor
        assert "was killed by SIGABRT; starting it again" in gw.log()
        assert gw.key(key_id)["spent_micros"] == spent
        assert gw.request("POST", path, secret, json=body("test-gpt", "hi", max_tokens=5)).status_code == 200
    finally:
        assert stop_gateway(gw) == 0


# ---------------------------------------------------------------- 7. NUL characters
def test_nul_in_urls_and_stored_strings_is_400(gateway: Gateway, user) -> None:
    for path in ("/v1/keys/%00", "/v1/keys/key%00x/usage", "/v1/threads/%00", "/v1/tools/%00x"):
        r = gateway.request("GET", path, gateway.admin)
        assert r.status_code in (400, 404), (path, r.text)
        assert_shape("openai", r, r.status_code)
    for path in ("/v1/keys?after=%00", "/v1/threads?after=%00", "/v1/threads?end_user_id=a%00b", "/v1/tools?after=%00"):
        r = gateway.request("GET", path, gateway.admin)
        assert "NUL" in assert_shape("openai", r, 400)
    r = gateway.request("POST", "/v1/keys", gateway.admin, json={"name": "a\u0000b"})
    assert "NUL" in assert_shape("openai", r, 400)
    r = gateway.request("POST", "/v1/threads", user[1], json={"metadata": {"k": "v\u0000"}})
    assert_shape("openai", r, 400)
    r = gateway.request(
        "POST",
        f"/v1/threads/{_thread(gateway, user)}/messages",
        user[1],
        json={"model": "test-claude", "content": "hi\u0000there"},
    )
    assert_shape("openai", r, 400)
    r = gateway.request(
        "POST", "/v1/tools", gateway.admin, json=_tool("nul", {"type": "object", "description": "\u0000"})
    )
    assert_shape("openai", r, 400)
    reads_all_work(gateway)
    reads_all_work(gateway, user[1])


def test_nul_in_a_forwarded_body_reaches_the_provider(gateway: Gateway, fake, user) -> None:
    """Model requests are forwarded, never stored: a NUL in the text is the provider's business."""
    path, body = ROUTES["openai"]
    r = gateway.request("POST", path, user[1], json=body("test-gpt", "a\u0000b"))
    assert r.status_code == 200, r.text
    r = gateway.request("POST", path, user[1], json=body("test-gpt", "a", tool_ids=["tool_\u0000"]))
    assert "tool_ids" in assert_shape("openai", r, 400)


def test_overlong_strings_are_400_not_a_database_error(gateway: Gateway, user) -> None:
    r = gateway.request("POST", "/v1/keys", gateway.admin, json={"name": "x" * 201})
    assert_shape("openai", r, 400)
    r = gateway.request("POST", "/v1/keys", gateway.admin, json={"name": "ok", "end_user_id": "u" * 201})
    assert_shape("openai", r, 400)
    r = gateway.request("POST", "/v1/threads", gateway.admin, json={"end_user_id": "u" * 201})
    assert_shape("openai", r, 400)
    r = gateway.request("GET", "/v1/keys/" + "k" * 5000, gateway.admin)
    assert_shape("openai", r, 404)


# ---------------------------------------------------------------- 8. fields we act on are checked before forwarding
@pytest.mark.parametrize("route", ["openai", "anthropic"])
@pytest.mark.parametrize("field,value", [("stream", [1]), ("stream", "true"), ("stream", 1), ("stream_options", 5)])
def test_fields_the_gateway_acts_on_are_checked_before_forwarding(
    gateway: Gateway, fake, user, route, field, value
) -> None:
    path, body = ROUTES[route]
    sent_before = len(fake_requests(fake))
    r = gateway.request("POST", path, user[1], json=body(MODELS[route], "hi", **{field: value}))
    assert field in assert_shape(route, r, 400)
    assert len(fake_requests(fake)) == sent_before
    assert gateway.key(user[0])["reserved_micros"] == 0


# ---------------------------------------------------------------- 14. billing headers stay ours
def test_client_organization_and_project_headers_are_not_forwarded(gateway: Gateway, fake, user) -> None:
    client = openai.OpenAI(api_key=user[1], base_url=gateway.url + "/v1", organization="org-evil", project="proj-evil")
    client.chat.completions.create(model="test-gpt", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    sent = fake_requests(fake)[-1]["headers"]
    assert "openai-organization" not in sent and "openai-project" not in sent
    assert sent["authorization"] == "Bearer sk-fake-openai"


# ---------------------------------------------------------------- 15. 401 before 404
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_routes_need_a_key_first(gateway: Gateway, user, method) -> None:
    for path in ("/v1/nope", "/admin", "/v1/keys/x/y/z"):
        r = gateway.request(method, path)
        assert_shape("openai", r, 401)
        r = gateway.request(method, path, "tw_live_wrong")
        assert_shape("openai", r, 401)
        r = gateway.request(method, path, user[1])
        assert_shape("openai", r, 404)
    # A method a route lacks is also answered only to a known key.
    assert gateway.request("PUT", "/v1/keys").status_code == 401
    assert gateway.request("PUT", "/v1/keys", None, headers={"x-api-key": user[1]}).status_code == 405


def test_unknown_anthropic_paths_answer_in_the_anthropic_shape(gateway: Gateway, user) -> None:
    headers = {"anthropic-version": "2023-06-01", "x-api-key": user[1]}
    # (/v1/messages/batches and /v1/files are routes now: tollway.batches)
    for path in ("/v1/messages/batches/msgbatch_x/unknown", "/v1/complete", "/v1/skills"):
        r = httpx.get(gateway.url + path, headers=headers)
        assert_shape("anthropic", r, 404)
        assert r.json()["error"]["type"] == "not_found_error"
        r = httpx.get(gateway.url + path, headers={"anthropic-version": "2023-06-01"})
        assert_shape("anthropic", r, 401)
        assert r.json()["error"]["type"] == "authentication_error"


def test_both_servers_decode_paths_and_queries_alike(gateway: Gateway) -> None:
    """Robyn hands the path and query over percent-encoded; the adapter decodes them as ASGI does."""
    end_user = f"user {secrets.token_hex(3)} \u20ac&="
    r = gateway.request("POST", "/v1/threads", gateway.admin, json={"end_user_id": end_user})
    assert r.status_code == 201, r.text
    listed = gateway.request("GET", "/v1/threads", gateway.admin, params={"end_user_id": end_user}).json()["data"]
    assert [t["id"] for t in listed] == [r.json()["id"]]
    thread_path = "/v1/threads/" + "".join(f"%{b:02X}" for b in r.json()["id"].encode())
    assert gateway.request("GET", thread_path, gateway.admin).json()["end_user_id"] == end_user


def test_the_providers_own_organization_and_project_come_from_its_config(tmp_path) -> None:
    from tollway.config import load_settings
    from tollway.providers import ADAPTERS

    config = tmp_path / "t.toml"
    config.write_text(
        '[[providers]]\nname = "org-openai"\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'api_key = "sk-x"\norganization = "org-ours"\nproject = "proj-ours"\n'
    )
    settings = load_settings({"TOLLWAY_CONFIG": str(config), "OPENAI_ORG_ID": "org-env"})
    client = {"openai-organization": "org-evil", "openai-project": "proj-evil", "openai-beta": "assistants=v2"}
    sent = dict(ADAPTERS["openai"].headers(settings.providers["org-openai"], client))
    assert sent["openai-organization"] == "org-ours" and sent["openai-project"] == "proj-ours"
    assert sent["openai-beta"] == "assistants=v2"  # other openai- headers still pass
    env_provider = dict(ADAPTERS["openai"].headers(settings.providers["openai"], client))
    assert env_provider["openai-organization"] == "org-env" and "openai-project" not in env_provider
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[providers]]\nname = "a"\nkind = "anthropic"\nbase_url = "http://127.0.0.1:9"\norganization = "org"\n'
    )
    with pytest.raises(Exception, match="organization"):
        load_settings({"TOLLWAY_CONFIG": str(bad)})


async def test_the_last_guard_turns_bad_input_exceptions_into_400s() -> None:
    """A check a handler forgot still never answers 500 for what only bad input causes."""
    from sqlalchemy.exc import DataError

    from tollway.gateway import bad_input_error
    from tollway.http.core import App, Request

    app = App(1024)
    app.error_mappers.append(bad_input_error)
    raised: list[Exception] = [
        DataError("INSERT ...", {}, Exception("value too long for type character varying(200)")),
        OverflowError("int too big to convert"),
        RecursionError("maximum recursion depth exceeded"),
        RuntimeError("a real bug"),
    ]

    async def handler(request: Request):
        raise raised.pop(0)

    app.route("POST", "/v1/messages")(handler)
    app.route("POST", "/v1/keys")(handler)
    statuses = []
    for path in ("/v1/messages", "/v1/keys", "/v1/keys", "/v1/keys"):
        response = await app.handle(Request("POST", path))
        statuses.append(response.status)
        body = orjson.loads(response.body)
        assert (
            ("type" in body and body["type"] == "error")
            if path == "/v1/messages"
            else set(body["error"]) == {"message", "type", "param", "code"}
        )
    assert statuses == [400, 400, 400, 500]


@pytest.mark.parametrize("raw", [b'"\\', b'{"a":"\\', b'["\\u00', b"{" * 65, b'{"a":"\\u0000'])
def test_truncated_or_odd_bodies_are_400(gateway: Gateway, raw: bytes) -> None:
    """The depth/NUL scan runs before the parser on bytes that need not be JSON at all."""
    for path, shape in (("/v1/keys", "openai"), ("/v1/messages", "anthropic"), ("/v1/chat/completions", "openai")):
        r = gateway.request("POST", path, gateway.admin, content=raw, headers={"content-type": "application/json"})
        assert_shape(shape, r, 400)
