"""Search with a provider embedder (an embedding model through the gateway's own /v1/embeddings path),
and a change of embedder rebuilt in the background (issue 14).

The fake upstream's embeddings are a hash of the text, not its meaning: a message is
found by its exact text (same vector), which is what these tests need. Relevance with
the default embedder is tested in tests/test_search.py.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import DATABASES, Gateway, gateway_env, start_gateway, stop_gateway, throwaway_database

TEXTS = [
    "My parcel for order ORD-77120 never arrived, can you check the courier?",
    "Please change the billing address on my invoice to Rue de Rivoli 12, Paris.",
    "The app logs me out every five minutes since the last update.",
]


def _store(gw: Gateway, key: str, end_user: str) -> list[str]:
    ids = []
    for text in TEXTS:
        thread = gw.request("POST", "/v1/threads", key, json={"end_user_id": end_user}).json()
        r = gw.request("POST", f"/v1/threads/{thread['id']}/messages", key, json={"model": "test-gpt", "content": text})
        assert r.status_code == 200, r.text
        ids.append(thread["id"])
    return ids


def _status(gw: Gateway) -> dict[str, Any]:
    r = gw.request("GET", "/v1/search/status", gw.admin)
    assert r.status_code == 200, r.text
    return r.json()


def _wait(gw: Gateway, done, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = _status(gw)
        if done(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"search did not get there in {timeout} s: {status}\n{gw.log()[-3000:]}")
        time.sleep(0.3)


def _search(gw: Gateway, key: str, q: str, **params: Any) -> list[dict[str, Any]]:
    r = httpx.get(gw.url + "/v1/search", headers={"authorization": f"Bearer {key}"}, params={"q": q, **params})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _usage_by_model(gw: Gateway) -> dict[tuple[str, str], int]:
    r = gw.request("GET", "/v1/usage", gw.admin, params={"from_ms": 0, "to_ms": 2**53})
    assert r.status_code == 200, r.text
    return {(k["key_id"], m["model"]): m["request_count"] for k in r.json()["by_key"] for m in k["by_model"]}


@pytest.fixture(params=DATABASES)
def data(request) -> Iterator[tuple[str, Path]]:
    data_dir = Path(tempfile.mkdtemp(prefix="tollway-search-provider-"))
    with throwaway_database(request.param) as url:
        yield url, data_dir
    shutil.rmtree(data_dir, ignore_errors=True)


def test_a_provider_embedder_is_called_through_the_gateway_and_metered(fake, data):
    url, data_dir = data
    gw = start_gateway(gateway_env(fake, data_dir, url, TOLLWAY_SEARCH_EMBEDDER="test-embed"))
    try:
        key_id, key = gw.mint(max_spend_usd=5, end_user_id="u1")
        _store(gw, key, "u1")
        status = _wait(gw, lambda s: s["backlog"] == 0 and s["indexed_messages"] >= 6)
        assert status["active"]["embedder"] == "provider:test-embed"
        assert status["active"]["dimensions"] == 1536  # learnt from the first answer
        hits = _search(gw, key, TEXTS[1])
        assert hits and hits[0]["snippet"].startswith("Please change the billing address")
        usage = _usage_by_model(gw)
        admin_id = gw.request("GET", "/v1/keys", gw.admin).json()["data"]
        admin_ids = {k["id"] for k in admin_id if k["scope"] == "admin"}
        assert any(k in admin_ids and m == "test-embed" for k, m in usage), usage  # indexing: the account's admin key
        assert usage.get((key_id, "test-embed"), 0) >= 1, usage  # the query: the searching key
    finally:
        stop_gateway(gw)


def test_changing_the_embedder_rebuilds_in_the_background_and_serves_meanwhile(fake, data):
    url, data_dir = data
    gw = start_gateway(gateway_env(fake, data_dir, url))
    try:
        _, key = gw.mint(max_spend_usd=5, end_user_id="u1")
        _store(gw, key, "u1")
        before = _wait(gw, lambda s: s["backlog"] == 0 and s["indexed_messages"] >= 6)
        assert before["active"]["embedder"].startswith("fastembed:")
        first = _search(gw, key, "my parcel did not come")[0]
    finally:
        stop_gateway(gw)
    gw = start_gateway(gateway_env(fake, data_dir, url, TOLLWAY_SEARCH_EMBEDDER="test-embed"))
    try:
        status = _wait(gw, lambda s: s["rebuild"] is None and s["active"]["embedder"] == "provider:test-embed")
        assert status["active"]["generation"] != before["active"]["generation"]
        assert status["indexed_chunks"] == before["indexed_chunks"]
        hits = _search(gw, key, TEXTS[0])
        assert hits[0]["message_id"] == first["message_id"]
    finally:
        stop_gateway(gw)
